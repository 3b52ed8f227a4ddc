"""An abandoned launch's late report names its init by pid: by the time the daemon reads it,
the program (and the init with it) may have ended and the pid named another process since
(``kernel.pid_max`` is 32768 by default). That process is not the one killed
(``_api._end_abandoned``), here with a live process given the reported pid."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import trio

from nonod.sandbox import _api
from nonod.sandbox._launcher import REC_CGROUP, REC_PID, LaunchPlan, record

from ..proctree import wait_until


def _plan() -> LaunchPlan:
    return LaunchPlan(executable="/bin/true", argv=("true",), env=(), cwd="/", uid=0, gid=0,
                      switch_user=False, ns_flags=0, mounts=(), landlock=None, seccomp=b"")


def _report_late(*records: bytes, server: int) -> None:
    """Run ``_end_abandoned`` on a launch pipe that carries ``records`` then ends."""
    launch_r, launch_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    os.write(launch_w, b"".join(records))
    os.close(launch_w)

    async def main() -> None:
        await _api._end_abandoned(
            _plan(), trio.lowlevel.FdStream(launch_r), trio.lowlevel.FdStream(exit_r),
            trio.socket.from_stdlib_socket(ours), server)

    try:
        trio.run(main)
    finally:
        os.close(exit_w)
        theirs.close()


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_a_late_reports_pid_now_outside_its_warm_group_is_not_killed() -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        _report_late(record(REC_CGROUP, 0, 0, f"warm-{os.urandom(6).hex()}".encode()),
                     record(REC_PID, victim.pid, 0), server=os.getpid())
        assert _alive(victim)
    finally:
        victim.kill()
        victim.wait()


def test_a_late_reports_pid_that_is_no_namespaces_init_is_not_killed() -> None:
    """Without a warm group: the process is the fork server's child (here: ours), but not a
    pid namespace's init."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        _report_late(record(REC_PID, victim.pid, 0), server=os.getpid())
        assert _alive(victim)
    finally:
        victim.kill()
        victim.wait()


def test_a_late_reports_init_is_killed() -> None:
    """The init the report names, still running, is killed (a pid namespace's init, the
    fork server's child)."""
    init = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"])
    try:
        inner = _child_of(init.pid)
        _report_late(record(REC_PID, inner, 0), server=init.pid)
        assert init.wait(10) != 0  # (its child, "sleep 60", was killed)
    finally:
        init.kill()
        init.wait()


def _child_of(pid: int) -> int:
    found: list[int] = []

    def appeared() -> bool:
        found[:] = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return bool(found)

    wait_until("the namespace's init", appeared, timeout=10)
    return found[0]
