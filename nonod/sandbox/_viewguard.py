"""Keeps the session's view as the launcher built it while the host changes the files under it.

A mount sits on a dentry. When something outside the session renames a file over a path on
which the session has a mount, or deletes that path, the kernel does not refuse (the mount
belongs to another namespace) but detaches the mount. Without a guard, a verified file's pin,
a deny mask or a read-only persistence bind would silently go, and the session would see the
host's new file. This happens in normal use: ``git`` rewrites ``.git/config`` by renaming
``config.lock`` over it, editors save by renaming, ``rm -rf ~/.aws`` and a later
``aws configure`` make a new, unmasked directory.

The launcher's outer process runs the guard. It stays outside the session's pid namespace (the
program cannot see or signal it) but inside its user and mount namespaces, with the
capabilities of the namespace's owner. It watches, with inotify, every directory on the way to
each guarded path; on any change there it checks each guarded path's mount id (``statx``) and,
where the mount is gone, applies the operation again to whatever the path names now. A pin or
read-only bind it cannot re-apply (the path became a symlink, a fifo...) ends the session: it
must not go on reading unverified bytes or writing where it must not.

What remains: between the host's rename and the guard's re-mount (an inotify wake-up and one
mount, tens of microseconds on an idle machine) the session can open the new file. The host
must already be able to write the directory to do this; docs/security-model.md says so.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Sequence

from . import _libc
from ._mounts import EMPTY_FILE, MASK_DIR, MASK_FILE, PIN, PIN_DIR, READONLY, MountOp

GUARDED = frozenset({PIN, MASK_DIR, MASK_FILE, READONLY})
_ATTEMPTS = 100
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_ALWAYS = (_IN_Q_OVERFLOW | _IN_IGNORED | _libc.IN_DELETE_SELF | _libc.IN_MOVE_SELF)
_DIR_EVENTS = (_libc.IN_CREATE | _libc.IN_MOVED_TO | _libc.IN_MOVED_FROM | _libc.IN_DELETE
               | _libc.IN_DELETE_SELF | _libc.IN_MOVE_SELF | _libc.IN_ONLYDIR)


class GuardLost(Exception):
    """A guarded path changed into something the guard cannot cover again."""

    def __init__(self, target: str, why: str) -> None:
        super().__init__(target, why)
        self.target, self.why = target, why


def guarded(ops: Sequence[MountOp]) -> tuple[MountOp, ...]:
    return tuple(op for op in ops if op.kind in GUARDED)


def _ancestors(path: str) -> list[str]:
    out = []
    parent = os.path.dirname(path)
    while True:
        out.append(parent)
        if parent == "/":
            return out
        parent = os.path.dirname(parent)


class ViewGuard:
    """Watches and re-applies ``ops`` (the launcher's PIN, MASK_* and READONLY operations,
    already applied). Call :meth:`start` once, then :meth:`check` whenever :attr:`fd` is
    readable."""

    def __init__(self, ops: Sequence[MountOp]) -> None:
        self.ops = tuple(ops)
        self.fd = _libc.inotify_init1(_libc.IN_CLOEXEC | _libc.IN_NONBLOCK)
        self.repairs = 0
        self._repaired: list[MountOp] = []
        self._mounts: dict[str, int] = {}  # target -> the id of the mount we put there
        self._watches: dict[int, list[str]] = {}  # watch descriptor -> its directories
        self._dirs = sorted({d for op in self.ops for d in _ancestors(op.target)})
        # A change matters only if it touches a guarded path or a directory on the way to one:
        # a program writing files next to them (a busy project directory) costs one read.
        self._on_the_way = frozenset({*self._dirs, *(op.target for op in self.ops)})

    def start(self) -> None:
        """Watch first, then take each mount's id, so that no change falls in between."""
        self._rewatch()
        for op in self.ops:
            self._mounts[op.target] = self._current(op.target)[0]
        self.check(everything=True)

    def close(self) -> None:
        os.close(self.fd)

    def check(self, *, everything: bool = False) -> list[MountOp]:
        """Drain the events; if one touches a guarded path or a directory on the way to one,
        re-apply every operation whose mount is gone, and return those. Raises
        :class:`GuardLost` for one it cannot re-apply."""
        relevant = everything
        try:
            while data := os.read(self.fd, 65536):
                relevant = self._relevant(data) or relevant
        except BlockingIOError:
            pass
        if not relevant:
            return []
        for op in self.ops:
            self._keep(op)
        self._rewatch()
        repaired, self._repaired = self._repaired, []
        return repaired

    def _keep(self, op: MountOp) -> None:
        """Re-apply ``op`` until its path is covered again (or names nothing). The host may
        rename again at any moment: a mount that went before we could see it is retried."""
        for _ in range(_ATTEMPTS):
            before, mode = self._current(op.target)
            if before == self._mounts[op.target] or mode < 0:
                return  # still ours, or nothing there (nothing to read or write)
            try:
                self._reapply(op, mode)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE):
                    continue  # replaced again under us: look again
                raise
            after, _ = self._current(op.target)
            if after < 0:
                return
            if after != before:  # ours: nobody else can mount in the session
                self._mounts[op.target] = after
                self.repairs += 1
                self._repaired.append(op)
                return
        raise GuardLost(op.target, "keeps changing faster than it can be covered")

    @staticmethod
    def _current(target: str) -> tuple[int, int]:
        try:
            return _libc.mount_id(target)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return -1, -1
            raise

    def _reapply(self, op: MountOp, mode: int) -> None:
        kind, target = op.kind, op.target
        if stat.S_ISLNK(mode):
            if kind in (MASK_DIR, MASK_FILE):
                return  # resolves inside the session's view, where its target is judged
            raise GuardLost(target, "became a symbolic link")
        if kind == PIN:
            if not stat.S_ISREG(mode):
                raise GuardLost(target, "is no longer a regular file")
            _libc.mount(f"{PIN_DIR}/{op.source}", target, None, _libc.MS_BIND)
            _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOSUID
                                | _libc.MOUNT_ATTR_NODEV, recursive=False)
        elif kind == READONLY:
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise GuardLost(target, "is no longer a file or directory")
            _libc.mount(target, target, None, _libc.MS_BIND | _libc.MS_REC)
            _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOSUID
                                | _libc.MOUNT_ATTR_NODEV, recursive=True)
        elif stat.S_ISDIR(mode):
            _libc.mount("tmpfs", target, "tmpfs",
                        _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC, "mode=000,size=4k")
            _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY, recursive=False)
        else:  # a file, fifo, socket or device node where a denied path was: hide it
            _libc.mount(EMPTY_FILE, target, None, _libc.MS_BIND)
            _libc.mount_setattr(target, _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOEXEC
                                | _libc.MOUNT_ATTR_NODEV, recursive=False)

    def _relevant(self, data: bytes) -> bool:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _ALWAYS:
                return True
            directories = self._watches.get(wd)
            if directories is None:
                return True  # a watch we no longer know of: look at everything
            if any(os.path.join(d, os.fsdecode(name)) in self._on_the_way for d in directories):
                return True
        return False

    def _rewatch(self) -> None:
        """Watch the directories that the guarded paths go through now (a replaced directory
        is a new inode), and drop watches on directories no longer on any path."""
        current: dict[int, list[str]] = {}
        for directory in self._dirs:
            try:
                wd = _libc.inotify_add_watch(self.fd, directory, _DIR_EVENTS)
                current.setdefault(wd, []).append(directory)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    raise  # ENOSPC: out of watches; the launch must not go on unguarded
        for wd in self._watches.keys() - current.keys():
            _libc.inotify_rm_watch(self.fd, wd)
        self._watches = current
