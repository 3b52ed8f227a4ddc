"""Red team, eighth pass: the host's processes of the session's uid, changed by pid from a
landlock-only session. Without a pid namespace the program names every process of the host;
signals, ptrace and ``/proc/<pid>/mem`` are stopped by Landlock's scope and domain checks, but
``prlimit64``, ``setpriority``, ``ioprio_set`` and ``sched_setaffinity`` are checked by the
kernel for the same uid only. A session lowered a host process's descriptor limit (the user
daemon's, or for a root session any root process's: ``RLIMIT_NOFILE`` 16, or ``RLIMIT_CPU``,
which kills it), raised its niceness, its I/O class and pinned it to one CPU. Now seccomp
refuses those calls unless they name the caller (pid 0)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.sandbox import LaunchRequest
from tests.conftest import SandboxUser
from tests.redteam import _landlock_only as landlock_only
from tests.redteam._landlock_only import PYTHON
from tests.sandbox.test_nouserns import ATTEMPT

ATTACK = ATTEMPT + r"""
import ctypes, resource
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
def ioprio(who):
    if libc.syscall(251, 1, who, 3 << 13) < 0:  # ioprio_set(IOPRIO_WHO_PROCESS, who, IDLE)
        raise OSError(ctypes.get_errno(), "ioprio_set")
attempt("prlimit", lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (16, 16)))
attempt("prlimit_read", lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE))
attempt("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, pid, 19))
attempt("ioprio_set", lambda: ioprio(pid))
attempt("sched_setaffinity", lambda: os.sched_setaffinity(pid, {0}))
attempt("own_prlimit", lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
attempt("own_nice", lambda: os.nice(1))
attempt("own_ioprio", lambda: ioprio(0))
attempt("own_affinity", lambda: os.sched_setaffinity(0, {0}))
"""


def _open_files_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as limits:
        return next(line for line in limits if line.startswith("Max open files"))


@pytest.fixture
def victim(sandbox_user: SandboxUser) -> Iterator[int]:
    """A host process of the session's own uid, outside the session."""
    proc = subprocess.Popen(["setpriv", f"--reuid={sandbox_user.uid}",
                             f"--regid={sandbox_user.uid}", "--clear-groups", "sleep", "120"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_landlock_only_session_cannot_change_host_processes_by_pid(
        sandbox_user: SandboxUser, world_tmp: Path, victim: int) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)
    limits = _open_files_limit(victim)
    nice = os.getpriority(os.PRIO_PROCESS, victim)
    affinity = os.sched_getaffinity(victim)
    policy = landlock_only.policy(work)
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", ATTACK, str(victim)), cwd=str(work))

    result = sandbox_user.run_request(policy, request, nouserns=True)

    assert result.code == 0, result.stderr
    assert "their limits, priority and CPU affinity (by pid) by seccomp" in result.stderr
    assert result.stdout.splitlines() == [
        "prlimit EPERM", "prlimit_read OK", "setpriority EPERM", "ioprio_set EPERM",
        "sched_setaffinity EPERM",
        "own_prlimit OK", "own_nice OK", "own_ioprio OK", "own_affinity OK"], result.stdout
    # Before: the victim's limit was 16, its niceness 19, its affinity {0}.
    assert _open_files_limit(victim) == limits
    assert os.getpriority(os.PRIO_PROCESS, victim) == nice
    assert os.sched_getaffinity(victim) == affinity
    assert "idle" not in subprocess.run(["ionice", "-p", str(victim)], capture_output=True,
                                        text=True, check=False).stdout
