"""What a system daemon tells one user about another (issue 19, item 9), with two real users.

- A dry run resolves grant paths as the caller: whether a file exists in another user's
  ``0700`` directory is no longer told (root used to look for the caller).
- ``status`` counts only the caller's own sessions (root: everyone's).
"""

from __future__ import annotations

import grp
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod import protocol as p

from .conftest import NOBODY, DaemonThread, as_user, hello, raw_client, session_env

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root"),
]

OTHER = 1  # Debian's `daemon` user, given the socket group below


@pytest.fixture
def system_daemon(short_tmp: Path) -> Iterator[DaemonThread]:
    group = grp.getgrgid(NOBODY).gr_name
    handle = DaemonThread(short_tmp, system=True,
                          config=f'[daemon]\nsocket_group = "{group}"\n').start()
    yield handle
    handle.stop()


def _ask(handle: DaemonThread, uid: int, *requests: dict[str, object]) -> list[dict[str, object]]:
    lines = raw_client(handle.socket, [hello(), *requests], prefix=as_user(uid, NOBODY))
    replies = [json.loads(line) for line in lines if line.startswith("{")]
    assert replies[0]["type"] == "welcome", lines
    return replies[1:]


def _workdir(base: Path) -> Path:
    work = base / "work"
    work.mkdir(mode=0o700)
    os.chown(work, NOBODY, NOBODY)
    return work


def _dry_run(work: Path, read_file: str) -> dict[str, object]:
    return {"type": "launch", "argv": ["true"], "cwd": str(work), "env": session_env(work),
            "options": {"allow_cwd": True, "read_file": [read_file]}, "stdio": "null",
            "dry_run": True}


def test_a_dry_run_does_not_tell_what_is_in_another_users_private_directory(
    system_daemon: DaemonThread, short_tmp: Path
) -> None:
    private = short_tmp / "private"
    private.mkdir(mode=0o700)
    (private / "secret.txt").write_text("theirs")
    os.chown(private, OTHER, OTHER)
    work = _workdir(short_tmp)
    there, absent = _ask(system_daemon, NOBODY, _dry_run(work, str(private / "secret.txt")),
                         _dry_run(work, str(private / "absent.txt")))
    outcomes = []
    for reply, name in ((there, "secret.txt"), (absent, "absent.txt")):
        assert reply["type"] == "dry_run", reply
        policy = reply["policy"]
        assert isinstance(policy, dict)
        assert not [g for g in policy["grants"] if str(private) in g["path"]]
        notes = [n["message"].replace(name, "NAME") for n in policy["notes"]
                 if str(private) in str(n.get("path"))]
        outcomes.append(notes)
    assert outcomes[0] and outcomes[0] == outcomes[1]  # there or not: the same answer
    with system_daemon.connect() as conn:  # root still resolves as root
        reply = conn.request(p.Launch(
            argv=("true",), cwd=str(work), env=session_env(work), dry_run=True,
            options=p.LaunchOptions(allow_cwd=True, read_file=(str(private / "secret.txt"),))))
        assert isinstance(reply, p.DryRun)
        assert str(private / "secret.txt") in bytes(reply.policy).decode()


def test_status_counts_only_the_callers_own_sessions(
    system_daemon: DaemonThread, short_tmp: Path
) -> None:
    work = _workdir(short_tmp)
    (launched,) = _ask(system_daemon, NOBODY, {
        "type": "launch", "argv": ["sleep", "600"], "cwd": str(work), "env": session_env(work),
        "options": {"allow_cwd": True}, "detach": True, "stdio": "null"})
    assert launched["type"] == "launched", launched
    session = launched["session"]
    assert isinstance(session, dict)
    try:
        (theirs,) = _ask(system_daemon, OTHER, {"type": "status"})
        assert (theirs["sessions_live"], theirs["sessions_total"]) == (0, 0)
        (mine,) = _ask(system_daemon, NOBODY, {"type": "status"})
        assert (mine["sessions_live"], mine["sessions_total"]) == (1, 1)
        with system_daemon.connect() as conn:
            status = conn.request(p.Status())
            assert isinstance(status, p.DaemonStatus) and status.sessions_live == 1
    finally:
        with system_daemon.connect() as conn:
            conn.request(p.Stop(session=str(session["id"]), force=True))
