"""Reading and writing cgroup control files: small, one value or a few ``key value`` lines."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from collections.abc import Callable, Iterable
from typing import final


def write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


Read = Callable[[str], str]


def _fd_budget() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft // 2 if soft != resource.RLIM_INFINITY else 1 << 20


@final
class ControlFiles:
    """A group's control files, kept open: reading one again is a single ``pread`` (opening a
    cgroup file costs about ten times more, and ``ps`` reads every live session's). Only
    descriptors below half the descriptor limit are kept, so that the daemon never runs out
    for its clients; the others are opened at each read."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._budget = _fd_budget()

    def read(self, path: str) -> str:
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            if fd >= self._budget:
                try:
                    return os.read(fd, 65536).decode("ascii")
                finally:
                    os.close(fd)
            self._fds[path] = fd
        return os.pread(fd, 65536, 0).decode("ascii")

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def read_or_empty(path: str, read: Read = read) -> str:
    """The file's text, or "" if it cannot be read (absent on this kernel, group gone)."""
    try:
        return read(path)
    except OSError:
        return ""


def read_int(path: str, read: Read = read) -> int:
    """An integer file, 0 if absent or not a number ("max")."""
    try:
        return int(read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def read_keyed(path: str, read: Read = read) -> dict[str, int]:
    """``key value`` lines (memory.oom_control, pids.events, cpu.stat)."""
    out: dict[str, int] = {}
    for line in read_or_empty(path, read).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value.split()[0])
    return out


def pids_in(directory: str) -> list[int]:
    try:
        return [int(x) for x in read(os.path.join(directory, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return []


def kill_all(directories: Iterable[str]) -> None:
    """SIGKILL every process in these groups (and their children groups), a few rounds: a
    process forking while we read is caught by the next round (the pid cap bounds them).
    A round that finds no process it has not signalled yet ends it: one killed but not yet
    gone (the kernel lets it go from the group when it has exited) is not a reason to list
    the groups again at once; the caller's next try (``remove_when_empty``, the registry's
    ``remove_group``) sees whether it left."""
    dirs = [d for d in directories if os.path.isdir(d)]
    killed: set[int] = set()
    for _ in range(20):
        found = False
        for directory in dirs:
            for root, _, _ in os.walk(directory, topdown=False):
                for pid in pids_in(root):
                    if pid in killed:
                        continue
                    found = True
                    killed.add(pid)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        if not found:
            return


def remove_when_empty(directory: str, timeout: float = 2.0) -> bool:
    """Kill what is in a group, then remove it once the kernel has let its processes go
    (blocking, bounded: a killed process leaves its group only when it has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        kill_all([directory])
        if remove_tree(directory):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def remove_if_empty(directory: str) -> bool:
    """rmdir a group (True if it is gone); False if it is busy (processes or children)."""
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def remove_tree(directory: str) -> bool:
    """rmdir a group and its children (bottom up); False if one is still busy."""
    if remove_if_empty(directory):  # a session's group has no children: no listing
        return True
    ok = True
    for root, _, _ in os.walk(directory, topdown=False):
        try:
            os.rmdir(root)
        except FileNotFoundError:
            pass
        except OSError:
            ok = False
    return ok
