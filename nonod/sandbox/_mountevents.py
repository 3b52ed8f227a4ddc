"""Whether this process's mount table may have changed since it was last asked.

The kernel counts every change to a mount namespace's table (a mount, an unmount, a move, a
remount, ``mount_setattr``: ``touch_mnt_namespace``) and an open ``/proc/self/mountinfo``
remembers the count it last reported: ``poll`` on it says ``POLLPRI | POLLERR`` when the
count moved since (``mounts_poll``), and takes the new count. So one ``poll`` with no
timeout answers "has anything been mounted or unmounted since I last asked?" without reading
and parsing the table (what the kept plan's host check did at every launch: ``_mounts``).

Sound where it is used: the poll comes first, then the caller reads the table; a change
after the poll moves the count past the one the poll took, so the next poll reports it. The
descriptor is this process's own and its mount namespace's: after a ``fork`` (the count is
kept in the open file, which a child shares: its polls would take the parent's changes) or
in another mount namespace, the first ask opens a new one and reports a change.
"""

from __future__ import annotations

import os
import select
from typing import Final, final

MOUNTINFO: Final = "/proc/self/mountinfo"


def _namespace() -> tuple[int, int]:
    st = os.stat("/proc/self/ns/mnt")
    return st.st_dev, st.st_ino


@final
class MountEvents:
    """:meth:`changed`: True at the first ask, then whenever the mount table may have
    changed since the previous one. Not thread-safe: its caller holds a lock over the ask
    and the read that follows."""

    def __init__(self) -> None:
        self._fd = -1
        self._owner: tuple[int, tuple[int, int]] | None = None
        self._poll = select.poll()

    def changed(self) -> bool:
        try:
            owner = (os.getpid(), _namespace())
        except OSError:
            return True  # no /proc to ask: read the table each time
        if owner != self._owner:
            self._reopen(owner)
            return True
        try:
            return bool(self._poll.poll(0))
        except OSError:
            return True

    def _reopen(self, owner: tuple[int, tuple[int, int]]) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # (in a forked child: its copy; the parent's stays open)
        self._fd, self._owner = -1, None
        self._poll = select.poll()
        try:
            fd = os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        self._poll.register(fd, select.POLLPRI)
        self._fd, self._owner = fd, owner
