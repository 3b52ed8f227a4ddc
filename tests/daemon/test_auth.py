"""Who may talk to nonod: SO_PEERCRED, namespaces, and the system daemon's per-user isolation.

The peers here are real processes: another uid (setpriv), a process in another user, mount or
network namespace (unshare). They run ``rawclient.py`` with the system python, which needs
nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nonoctl.client import RemoteError
from nonod import protocol as p

from .conftest import NOBODY, DaemonThread, as_user, hello, raw_client, session_env, wait_pid_gone

pytestmark = pytest.mark.root

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")


def _replies(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


@needs_root
def test_another_user_cannot_even_connect(daemon_thread: DaemonThread) -> None:
    lines = raw_client(daemon_thread.socket, [hello()], prefix=as_user(NOBODY))
    assert lines == ["CONNECT-ERROR EACCES"]


@needs_root
def test_another_user_is_refused_by_peer_credentials(short_tmp: Path) -> None:
    handle = DaemonThread(short_tmp).start()
    try:
        os.chmod(handle.socket.parent, 0o755)  # noqa: S103 - reachable by everyone
        os.chmod(handle.socket, 0o666)  # noqa: S103 - on purpose: only SO_PEERCRED is left
        lines = raw_client(handle.socket, [hello(), {"type": "list"}], prefix=as_user(NOBODY))
        replies = _replies(lines)
        assert replies[0]["type"] == "error"
        assert replies[0]["code"] == "auth.refused"
        assert "serves uid 0 only, not uid 65534" in str(replies[0]["message"])
        assert lines[-1] == "CLOSED 1008"
        with handle.connect() as conn:  # the daemon's own user is unaffected
            assert isinstance(conn.request(p.ListSessions()), p.SessionList)
    finally:
        handle.stop()


@needs_root
@pytest.mark.parametrize(
    ("unshare", "namespace"),
    [
        (["--mount"], "mnt"),
        (["--user", "--map-root-user"], "user"),
        (["--net"], "net"),
    ],
)
def test_a_peer_in_other_namespaces_is_refused_with_the_right_uid(
    daemon_thread: DaemonThread, unshare: list[str], namespace: str
) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare(1) is missing (util-linux)")
    lines = raw_client(daemon_thread.socket, [hello(), {"type": "list"}],
                       prefix=["unshare", *unshare, "--"])
    replies = _replies(lines)
    assert replies and replies[0]["code"] == "auth.namespace", lines
    assert f"another {namespace} namespace" in str(replies[0]["message"])
    assert not any(r.get("type") == "sessions" for r in replies)


def _group_id(name: str) -> int | None:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@needs_root
def test_system_daemon_runs_sessions_as_their_callers_and_keeps_them_apart(
    short_tmp: Path,
) -> None:
    group = "nogroup" if _group_id("nogroup") is not None else "nobody"
    gid = _group_id(group)
    assert gid is not None
    other_uid = 1  # Debian's `daemon` user, given the group below
    handle = DaemonThread(short_tmp, config=f'[daemon]\nsocket_group = "{group}"\n',
                          system=True).start()
    try:
        run = handle.socket.parent
        assert oct(os.stat(run).st_mode & 0o777) == "0o750"
        assert os.stat(handle.socket).st_gid == gid
        work = short_tmp / "work"
        work.mkdir(mode=0o777)
        launch = {
            "type": "launch", "argv": ["sleep", "600"], "cwd": str(work),
            "env": session_env(work), "options": {"allow_cwd": True}, "detach": True,
            "stdio": "null", "name": "mine",
        }
        first = _replies(raw_client(handle.socket, [hello(), launch],
                                    prefix=as_user(NOBODY, gid)))
        assert first[1]["type"] == "launched", first
        session = first[1]["session"]
        assert isinstance(session, dict)
        assert (session["uid"], session["gid"]) == (NOBODY, gid)
        program = subprocess.run(["ps", "-o", "uid=", "--ppid", str(session["pid"])],
                                 capture_output=True, text=True, check=False).stdout.split()
        assert program == [str(NOBODY)]

        theirs = _replies(raw_client(handle.socket, [
            hello(), {"type": "list", "all": True},
            {"type": "stop", "session": session["id"], "force": True},
            {"type": "inspect", "session": "mine"},
            {"type": "signal", "session": session["id"], "signal": 9},
            {"type": "audit_follow", "session": session["id"], "from_start": True,
             "follow": False},
        ], prefix=as_user(other_uid, gid)))
        assert theirs[1] == {"type": "sessions", "sessions": []}
        assert [r["code"] for r in theirs[2:]] == ["session.not_found"] * 4

        with handle.connect() as conn:  # root sees and controls everyone's sessions
            every = conn.request(p.ListSessions())
            assert isinstance(every, p.SessionList)
            assert [s.id for s in every.sessions] == [session["id"]]
            with pytest.raises(RemoteError) as info:
                conn.request(p.Launch(argv=("true",), cwd=str(work), env=session_env(work),
                                      options=p.LaunchOptions(allow_cwd=True), detach=True))
            assert info.value.remote_code == "policy.root_refused"
            stopped = conn.request(p.Stop(session=str(session["id"]), force=True))
            assert isinstance(stopped, p.Exited)
        assert wait_pid_gone(int(str(session["pid"])))

        outsider = raw_client(handle.socket, [hello()], prefix=as_user(2))  # bin, gid 2
        assert outsider == ["CONNECT-ERROR EACCES"]  # not in the group: the directory is 0750
    finally:
        handle.stop()
