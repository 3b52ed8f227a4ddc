"""Descriptors held in flight, through real daemons (``tests/sandbox/test_fds_in_flight.py``
has the launcher's own): the kernel refuses a descriptor pass (SCM_RIGHTS, ETOOMANYREFS)
from a sender without CAP_SYS_RESOURCE in the host's user namespace once its user's
descriptors in flight, host-wide, exceed the sender's soft RLIMIT_NOFILE. A session that
raises its soft limit to its hard one and holds all it can in flight must not stop the next
launch of its user: an unprivileged user daemon's (daemon, fork server, client and session
all one uid), and the system daemon's, for a session of another user and of root."""

from __future__ import annotations

import errno
import grp
import json
import os
import time
from pathlib import Path

import pytest

from tests.sandbox.test_fds_in_flight import HOLD_IN_FLIGHT

from .conftest import NOBODY, DaemonThread, UserDaemon, as_user, hello, raw_client, session_env

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="sessions of other uids need root"),
]

#: Holds (``HOLD_IN_FLIGHT``), writes "held hard errno" to argv[1] and waits (a detached
#: session's stdin is /dev/null).
HOLDER = HOLD_IN_FLIGHT + r"""
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(f"{held} {hard} {err}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def _held(path: Path) -> tuple[int, int]:
    """Wait for the holder's line; it must have been stopped by ETOOMANYREFS, holding most of
    its limit's worth (the count is its user's, host-wide: other tests may hold some)."""
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, "the holder never reported"
        time.sleep(0.1)
    held, hard, err = (int(x) for x in path.read_text().split())
    assert err == errno.ETOOMANYREFS, (held, hard, err)
    assert held > hard // 2, (held, hard)
    return held, hard


def _holding(path: Path) -> bool:
    """Is the holder writing to ``path`` alive (its descriptors still in flight)?"""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def _work(base: Path, uid: int) -> Path:
    work = base / f"work-{uid}"
    work.mkdir(mode=0o700)
    os.chown(work, uid, -1)
    return work


def test_a_user_daemons_session_holding_descriptors_cannot_stop_its_next_launch(
        user_daemon: UserDaemon) -> None:
    work = user_daemon.directory("work")
    holder = user_daemon.nonoctl(
        "launch", "-d", "--name", "holder", "--allow", str(work), "--",
        "/usr/bin/python3", "-I", "-c", HOLDER, str(work / "held"))
    assert holder.returncode == 0, holder.stderr
    try:
        _held(work / "held")
        # attached stdio: the client passes its descriptors, the daemon the fork server's,
        # the launchers theirs (creation guard: the writable directory), then the program
        ran = user_daemon.nonoctl("launch", "--allow", str(work), "--",
                                  "/bin/sh", "-c", f"echo ran > {work}/ran")
        assert ran.returncode == 0, ran.stderr
        assert (work / "ran").read_text() == "ran\n"
        assert _holding(work / "held")
    finally:
        user_daemon.nonoctl("stop", "-f", "holder")


def _launch(handle: DaemonThread, uid: int, gid: int, work: Path, argv: list[str],
            name: str) -> dict[str, object]:
    launch: dict[str, object] = {
        "type": "launch", "argv": argv, "cwd": str(work), "env": session_env(work),
        "options": {"allow_cwd": True}, "detach": True, "stdio": "null", "name": name}
    if not uid:  # root's session: the operator and the profile must both allow it
        profile = work.parent / "root.json"
        profile.write_text(json.dumps({"meta": {"name": "root-job"},
                                       "nonod": {"allow_root": True}}))
        launch["profile"] = str(profile)
    prefix = as_user(uid, gid) if uid else []
    replies = [json.loads(line) for line in raw_client(handle.socket, [hello(), launch],
                                                       prefix=prefix) if line.startswith("{")]
    assert replies[1]["type"] == "launched", replies
    session = replies[1]["session"]
    assert isinstance(session, dict)
    return session


@pytest.mark.parametrize("who", ["other", "root"])
def test_a_system_daemons_session_holding_descriptors_cannot_stop_its_users_next_launch(
        short_tmp: Path, who: str) -> None:
    group = "nogroup" if "nogroup" in {g.gr_name for g in grp.getgrall()} else "nobody"
    gid = grp.getgrnam(group).gr_gid
    uid = NOBODY if who == "other" else 0
    handle = DaemonThread(short_tmp, system=True, config=f'[daemon]\nsocket_group = "{group}"\n'
                          "[sessions]\nallow_root = true\n").start()
    holder: dict[str, object] | None = None
    try:
        work = _work(short_tmp, uid)
        holder = _launch(handle, uid, gid, work,
                         ["/usr/bin/python3", "-I", "-c", HOLDER, str(work / "held")], "holder")
        _held(work / "held")
        _launch(handle, uid, gid, work, ["/bin/sh", "-c", f"echo ran > {work}/ran"], "next")
        deadline = time.monotonic() + 30
        while not (work / "ran").exists():
            assert time.monotonic() < deadline, "the next launch's program never ran"
            time.sleep(0.1)
        assert _holding(work / "held")
    finally:
        if holder is not None:
            raw_client(handle.socket, [hello(), {"type": "stop", "session": holder["id"],
                                                 "force": True}])
        handle.stop()
