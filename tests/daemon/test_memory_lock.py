"""Secrets out of swap: the daemon (real credentials) and its fork server (launch plans, the
sessions' environments) lock their pages in memory where the kernel lets them do so without
running into ``RLIMIT_MEMLOCK`` (``CAP_IPC_LOCK``: root), so no secret is written to a swap
device, where it would outlive the daemon. Before, neither locked anything (``VmLck: 0 kB``).
Sessions inherit neither the lock nor a raised limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import HERE, NOBODY, UserDaemon, wait_pid_gone

pytestmark = pytest.mark.root


def _locked_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    raise AssertionError("no VmLck")


def _memlock_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max locked memory"):
            return line.split()[3]
    raise AssertionError("no locked-memory limit")


def _fork_server(daemon: int) -> int:
    found = [int(child) for task in Path(f"/proc/{daemon}/task").iterdir()
             for child in (task / "children").read_text().split()
             if b"_forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def root_daemon(short_tmp: Path) -> Iterator[tuple[int, Path, dict[str, str]]]:
    """A detached ``nonod`` run by root (its own user daemon): pid, socket, environment."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    home = short_tmp / "root"
    home.mkdir(mode=0o700)
    socket = home / "run" / "nonod.sock"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(HERE.parents[1]),
           "NONO_NO_AUTOSTART": "1", "XDG_STATE_HOME": str(home / "state"),
           "XDG_CONFIG_HOME": str(home / "config")}

    def nonoctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nonoctl", "--socket", str(socket), *args],
                              env=env, cwd=home, capture_output=True, text=True, timeout=60,
                              check=False)

    started = subprocess.run([sys.executable, "-m", "nonod", "--daemonize", "--socket",
                              str(socket)], env=env, capture_output=True, text=True,
                             timeout=60, check=False, cwd="/")
    assert started.returncode == 0, started.stderr
    pid = int(json.loads(nonoctl("daemon", "status", "--json").stdout)["pid"])
    try:
        yield pid, socket, env
    finally:
        nonoctl("daemon", "stop")
        if not wait_pid_gone(pid, timeout=30):
            os.kill(pid, 9)


def test_the_daemon_and_its_fork_server_keep_their_memory_out_of_swap(
        root_daemon: tuple[int, Path, dict[str, str]], short_tmp: Path) -> None:
    pid, socket, env = root_daemon
    work = short_tmp / "work"
    work.mkdir()
    # A session that reports its own locked memory and limit: the fork server runs by then.
    launched = subprocess.run(
        [sys.executable, "-m", "nonoctl", "--socket", str(socket), "launch", "--block-net",
         "--allow", str(work), "--", "/bin/sh", "-c",
         "grep VmLck /proc/self/status; grep 'Max locked memory' /proc/self/limits"],
        env=env, cwd=work, capture_output=True, text=True, timeout=60, check=False)
    assert launched.returncode == 0, launched.stderr
    for process in (pid, _fork_server(pid)):
        # Before: 0 kB. Locked as touched (MCL_ONFAULT): at least what it has touched so far.
        assert _locked_kib(process) > 10_000, process
    # The session: nothing locked, and the limit it got is the one the daemon was given.
    lines = launched.stdout.splitlines()
    assert lines[0].split()[1] == "0", lines
    assert lines[1].split()[3] == _memlock_limit(pid), lines


def test_a_daemon_that_may_not_lock_runs_unlocked(user_daemon: UserDaemon) -> None:
    """Under a finite ``RLIMIT_MEMLOCK`` and without ``CAP_IPC_LOCK`` (uid 65534) nothing is
    locked: a lock there would make the daemon's later allocations past the limit fail."""
    if _memlock_limit(os.getpid()) == "unlimited":
        pytest.skip("this host gives every process an unlimited RLIMIT_MEMLOCK")
    launched = user_daemon.nonoctl("launch", "--allow", str(user_daemon.home), "--", "true")
    assert launched.returncode == 0, launched.stderr
    assert user_daemon.uid == NOBODY
    assert _locked_kib(user_daemon.pid) == 0
    assert _locked_kib(_fork_server(user_daemon.pid)) == 0


def test_a_locked_daemon_still_gives_back_what_a_burst_freed() -> None:
    """The kernel discards no locked page, so ``malloc_trim`` returned nothing of a locked
    heap: the idle trim (``nonod._idle_trim``) is made with the memory unlocked for its
    length, and locked again after."""
    if os.geteuid() != 0:
        pytest.skip("locking memory without a limit needs CAP_IPC_LOCK")
    script = """
from nonod import _malloc
from nonod.sandbox._libc import keep_out_of_swap

def figure(name, path="/proc/self/status"):
    for line in open(path):
        if line.startswith(name):
            return int(line.split()[1])

assert keep_out_of_swap()
junk = [bytes(2000) for _ in range(20000)]  # 40 MiB of glibc's heap, its top held up:
kept = junk[::50]
before = figure("Anonymous:", "/proc/self/smaps_rollup")
del junk
_malloc.trim()
print(before, figure("Anonymous:", "/proc/self/smaps_rollup"), figure("VmLck:"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ,
                                                       "PYTHONPATH": str(HERE.parents[1])})
    before, after, locked = map(int, done.stdout.split())
    assert after < before - 20_000, (before, after)  # before this: nothing given back
    assert locked > 0  # and locked again
