"""The subtrees of daemons that are gone: each daemon holds its own, and clears the others'.

Every daemon's sessions and warm launchers have their groups in ``nono-<tag>`` (the tag names
its state directory: ``subtree_tag``), beside the subtrees of the other daemons that share its
own group. A daemon that exits removes its subtree; one that is killed (SIGKILL, a crash, a
test's timeout) leaves it, with a group per session and per warm launcher, all empty once
their processes died with it. A daemon started again on the same state directory clears it
(``remove_stale``); nothing else ever did, and a host that runs many short-lived daemons
(tests, each with its own state directory) gathered hundreds of them.

A running daemon holds an exclusive ``flock`` on each of its subtree directories (``hold``);
the kernel drops it when the daemon dies, however it dies. ``sweep`` asks for the lock of each
other ``nono-<tag>`` subtree beside ours without waiting: one it gets belongs to no running
daemon, and its groups go, bottom up, then the subtree. Only empty groups: the kernel refuses
to remove a group that has processes or children (EBUSY). And only groups made at least
``MIN_AGE`` seconds ago: a daemon of an earlier version holds no lock, and may have made a
group it has not moved a process into yet (milliseconds), or not taken its lock yet.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable

from ._files import remove_if_empty

MIN_AGE = 60.0
LOCK_WAIT = 2.0  # seconds a starting daemon waits for a sweep holding its subtree
_SUBTREE = re.compile(r"nono-[0-9a-f]{12}")


def hold(prepare: Callable[[], list[str]]) -> list[int]:
    """Lock each of our subtrees, which ``prepare`` makes (or finds) and returns, for as long
    as the returned descriptors stay open: the daemon's lifetime. Another daemon's sweep may
    hold one for a moment (it is waited for), and may have removed it meanwhile (a subtree
    our predecessor left, old enough: it is made again, and held). One that cannot be made,
    opened or locked is left out: sweeps would only ever remove its empty groups."""
    held: list[tuple[int, str]] = []
    for _ in range(2):
        release([fd for fd, _ in held])
        subtrees = prepare()
        held = [(fd, subtree) for subtree in subtrees
                if (fd := _lock(subtree, wait=LOCK_WAIT)) >= 0]
        if len(held) == len(subtrees) and all(_still_there(fd, sub) for fd, sub in held):
            break
    return [fd for fd, _ in held]


def _lock(directory: str, *, wait: float = 0.0) -> int:
    """``directory`` opened and locked (-1: it cannot be, or another holds it for longer
    than ``wait`` seconds)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        except OSError:
            break
    os.close(fd)
    return -1


def _still_there(fd: int, path: str) -> bool:
    try:
        held, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def release(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def sweep(subtrees: list[str], *, min_age: float = MIN_AGE) -> list[str]:
    """Clear the subtrees beside ``subtrees`` (ours) that no running daemon holds; returns
    those removed (blocking: a v1 group takes milliseconds to remove)."""
    ours = set(subtrees)
    cutoff = time.time() - min_age
    removed: list[str] = []
    for parent in sorted({os.path.dirname(s) for s in subtrees}):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in sorted(names):
            path = os.path.join(parent, name)
            if _SUBTREE.fullmatch(name) and path not in ours and _clear(path, cutoff):
                removed.append(path)
    return removed


def _clear(subtree: str, cutoff: float) -> bool:
    """Remove ``subtree`` if no daemon holds it and all in it is empty and old enough."""
    fd = _lock(subtree)
    if fd < 0:
        return False  # a running daemon's
    try:
        return _remove_old(subtree, cutoff)
    finally:
        os.close(fd)


def _remove_old(directory: str, cutoff: float) -> bool:
    """rmdir the groups below ``directory``, bottom up, then ``directory``: each only if it
    is empty and was made before ``cutoff``. Whether ``directory`` is gone."""
    try:
        # Its age first: removing a group below may count as a change of this one.
        old = os.stat(directory).st_mtime <= cutoff
        below = [e.path for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    gone = all([_remove_old(path, cutoff) for path in below])  # (each one tried)
    return gone and old and remove_if_empty(directory)
