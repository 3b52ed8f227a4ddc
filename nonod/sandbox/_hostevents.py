"""Whether two of the host's answers a kept plan depends on may have changed since they were
last asked: the mount table (:class:`MountEvents`) and the modes of the files at the top of
``/proc`` (:class:`ProcTopEvents`). Each is one system call that returns at once, where
reading the answer again costs a read and a parse of ``mountinfo``, or an ``lstat`` of each
of ~40 files (the kept plan's host check did both at every launch of a root session:
``_mounts``).

- The kernel counts every change to a mount namespace's table (a mount, an unmount, a move,
  a remount, ``mount_setattr``: ``touch_mnt_namespace``) and an open
  ``/proc/self/mountinfo`` remembers the count it last reported: ``poll`` on it says
  ``POLLPRI | POLLERR`` when the count moved since (``mounts_poll``), and takes the new count.
- A change of a file's mode, owner or times goes through ``notify_change``, which tells the
  watchers of its directory (``fsnotify_change``): an inotify watch on ``/proc`` for
  ``IN_ATTRIB`` queues an event for each ``chmod`` of a file at its top. Files that appear or
  go (a module loaded or unloaded) send no event: the caller compares ``/proc``'s listing
  itself.

Sound where they are used: the ask comes first, then the caller reads the answer; a change
after the ask is reported by the next one. Each descriptor is this process's own and its
mount namespace's: after a ``fork`` (the count and the queue are kept in the open file,
which a child shares: its asks would take the parent's changes) or in another mount
namespace, the first ask opens a new one and reports a change.
"""

from __future__ import annotations

import os
import select
from typing import Final, final

from . import _libc

MOUNTINFO: Final = "/proc/self/mountinfo"
IN_ATTRIB: Final = 0x4
_READ: Final = 4096

_Owner = tuple[int, tuple[int, int]]


def _owner() -> _Owner:
    """This process and its mount namespace."""
    st = os.stat("/proc/self/ns/mnt")
    return os.getpid(), (st.st_dev, st.st_ino)


class _Events:
    """The owner check and the descriptor's life; subclasses open and ask."""

    def __init__(self) -> None:
        self._fd = -1
        self._owner: _Owner | None = None

    def changed(self) -> bool:
        """True at the first ask, then whenever the answer may have changed since the
        previous one. Not thread-safe: the caller holds a lock over the ask and the read
        that follows."""
        try:
            owner = _owner()
        except OSError:
            return True  # no /proc to ask: read the answer each time
        if owner != self._owner:
            if self._fd >= 0:
                os.close(self._fd)  # (in a forked child: its copy; the parent's stays open)
            self._fd, self._owner = -1, None
            try:
                self._fd = self._open()
            except OSError:
                return True
            self._owner = owner
            return True
        try:
            return self._ask()
        except OSError:
            return True

    def _open(self) -> int:
        raise NotImplementedError

    def _ask(self) -> bool:
        raise NotImplementedError


@final
class MountEvents(_Events):
    """:meth:`changed`: whether the mount table may have changed."""

    def __init__(self) -> None:
        super().__init__()
        self._poll = select.poll()

    def _open(self) -> int:
        fd = os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLPRI)
        return fd

    def _ask(self) -> bool:
        return bool(self._poll.poll(0))


@final
class ProcTopEvents(_Events):
    """:meth:`changed`: whether a file at the top of ``/proc`` may have changed its mode
    (not whether one appeared or went: compare the listing)."""

    def _open(self) -> int:
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            _libc.inotify_add_watch(fd, "/proc", IN_ATTRIB)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _ask(self) -> bool:
        seen = False
        while True:  # every event queued (an overflow is an event too)
            try:
                data = os.read(self._fd, _READ)
            except BlockingIOError:
                return seen
            if not data:
                return seen
            seen = True
