"""Keeps the session's view as the launcher built it while the host changes the files under it.

A mount sits on a dentry. When something outside the session renames a file over a path on
which the session has a mount, or deletes that path, the kernel does not refuse (the mount
belongs to another namespace) but detaches the mount. Without a guard, a verified file's pin,
a deny mask or a read-only persistence bind would silently go, and the session would see the
host's new file. This happens in normal use: ``git`` rewrites ``.git/config`` by renaming
``config.lock`` over it, editors save by renaming, ``rm -rf ~/.aws`` and a later
``aws configure`` make a new, unmasked directory.

The launcher's outer process sets the guard up and runs it while the session starts. It is
outside the session's pid namespace (the program cannot see or signal it) but inside its user
and mount namespaces, with the capabilities of the namespace's owner. Every directory on the
way to each guarded path is watched with inotify, by the fork server's one instance for all
sessions (``_guardhub``: an instance per session would cap a user at
``fs.inotify.max_user_instances`` sessions; a second one for sessions that make storms of
events there); the outer opens those directories in the session's view and hands the
descriptors over, so the watches are on the inodes the session sees. On a change there the hub
wakes the outer, which checks each guarded path's mount id (``statx``) and, where the mount is
gone, applies the operation again to whatever the path names now, then hands over the
directories as they are now (a replaced directory is a new inode). A pin or read-only bind it
cannot re-apply (the path became a symlink, a fifo...) ends the session: it must not go on
reading unverified bytes or writing where it must not.

Once the init runs ``nono-reaper`` (in a pid namespace), the outer hands this state to the
hub and exits (``_launcher.hands_over``); from then on each change makes the hub spawn
``nono-reaper --repair``, which enters the session's user and mount namespaces through the
init's pidfd and does the same (``reaper_outer.c``, with this class as the reference).

What remains: between the host's rename and the guard's re-mount (the hub's inotify wake-up,
its message to the outer or the repair's spawn, and one mount: about a millisecond) the
session can open the new file. The host must already be able to write the directory to do
this; docs/security-model.md says so.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from . import _libc
from ._mounts import (
    ANCHOR,
    BIND_DIR,
    MASK_DIR,
    MASK_FILE,
    OVERLAY,
    PIN,
    READONLY,
    CannotCover,
    MountOp,
    cover,
)

GUARDED = frozenset({ANCHOR, PIN, MASK_DIR, MASK_FILE, READONLY})
_ATTEMPTS = 100


class GuardLost(Exception):
    """A guarded path changed into something the guard cannot cover again."""

    def __init__(self, target: str, why: str) -> None:
        super().__init__(target, why)
        self.target, self.why = target, why


#: The session's own procfs, mounted fresh by its init (``_mounts.prepare_root``).
PROC = "/proc"


def guarded(ops: Sequence[MountOp]) -> tuple[MountOp, ...]:
    """The operations of ``ops`` the guard keeps: those of the ``GUARDED`` kinds, but for
    the masks of files at the top of the session's own procfs (the root-only files of a root
    session, ``/proc/keys``), unless an operation mounts something on ``/proc`` itself.
    Nothing outside the session can take those masks away: procfs has no rename or unlink
    (only the kernel removes an entry there, when root unloads a module), and ``/proc``, a
    mount point in the session's read-only root, cannot be renamed either. Guarding them
    cost every root session a guard set up through the fork server's hub (watches on ``/``
    and ``/proc``) for nothing."""
    own_proc = not any(op.target == PROC for op in ops)
    return (*(op for op in ops if op.kind in GUARDED and not (
        own_proc and op.kind == MASK_FILE and os.path.dirname(op.target) == PROC)),
        *_overlays_on_host(ops))


def _overlays_on_host(ops: Sequence[MountOp]) -> tuple[MountOp, ...]:
    """A mask for each copy-on-write cache (OVERLAY) mounted on a directory entry of a
    writable host bind (``~/.cache`` in a writable home), kept by the guard only: the launcher
    mounted the overlay there, and its id is what :meth:`ViewGuard.start` finds. The host
    removing that directory (a cache clean-up) drops the overlay with it, and the directory a
    host tool makes again in its place would be the host's, writable by the session: the
    mask goes over it instead (the session loses its cache, not the host)."""
    writable = [op.target for op in ops if op.kind == BIND_DIR and op.writable]
    return tuple(MountOp(MASK_DIR, op.target) for op in ops if op.kind == OVERLAY and any(
        op.target.startswith(bind.rstrip("/") + "/") for bind in writable))


def _ancestors(path: str) -> list[str]:
    out = []
    parent = os.path.dirname(path)
    while True:
        out.append(parent)
        if parent == "/":
            return out
        parent = os.path.dirname(parent)


class ViewGuard:
    """Re-applies ``ops`` (the launcher's PIN, MASK_*, READONLY and ANCHOR operations, applied
    or, ``absent`` ones, waiting for their path to appear) when their mounts go. Have
    :attr:`dirs` watched (:meth:`open_dirs`), then call :meth:`start` once and :meth:`check`
    whenever a watched directory changes."""

    def __init__(self, ops: Sequence[MountOp]) -> None:
        self.ops = tuple(ops)
        self.repairs = 0
        self._repaired: list[MountOp] = []
        self._mounts: dict[str, int] = {}  # target -> the id of the mount we put there
        #: :meth:`identities` of :attr:`dirs` when they were last opened for watching.
        self.watched: list[tuple[int, int]] = []
        #: The directories to watch: every one on the way to a guarded path.
        self.dirs = tuple(sorted({d for op in self.ops for d in _ancestors(op.target)}))
        #: A change matters only if it names one of these in a watched directory: a program
        #: writing files next to them (a busy project directory) wakes nobody.
        self.on_the_way = frozenset({*self.dirs, *(op.target for op in self.ops)})

    def open_dirs(self) -> tuple[list[str], list[int]]:
        """``O_PATH`` descriptors of :attr:`dirs` as this process sees them (those that
        exist), for a watcher in another mount namespace. The caller closes them."""
        names: list[str] = []
        fds: list[int] = []
        watched: list[tuple[int, int]] = []
        for directory in self.dirs:
            if not os.access(directory, os.X_OK):
                # Not searchable with the namespace owner's capabilities (``/lost+found``
                # under a writable "/"): the program cannot reach anything in it either.
                watched.append((0, 0))
                continue
            try:
                fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    watched.append((0, 0))
                    continue  # nothing there to watch (a change to it shows in its parent)
                for opened in fds:
                    os.close(opened)
                raise
            names.append(directory)
            fds.append(fd)
            st = os.fstat(fd)
            watched.append((st.st_dev, st.st_ino))
        self.watched = watched
        return names, fds

    def start(self) -> None:
        """Take each mount's id (after the watches are set: no change falls in between). A
        path that is no mount's root is not covered (absent at launch, or made since): the
        first :meth:`check` covers it."""
        for op in self.ops:
            mount = self._current(op.target)[0]
            covered = mount != self._current(os.path.dirname(op.target))[0]
            self._mounts[op.target] = mount if covered else -1
        self.check()

    def mounted(self, target: str) -> int:
        """The id of the mount this guard put (or found) on ``target``; -1: none."""
        return self._mounts[target]

    def identities(self) -> list[tuple[int, int]]:
        """(device, inode) of each of :attr:`dirs` as they are now ((0, 0) if missing or not
        a directory): when these differ from :attr:`watched`, the watches must be renewed."""
        out: list[tuple[int, int]] = []
        for directory in self.dirs:
            try:
                st = os.stat(directory)
            except OSError:
                out.append((0, 0))
                continue
            searchable = stat.S_ISDIR(st.st_mode) and os.access(directory, os.X_OK)
            out.append((st.st_dev, st.st_ino) if searchable else (0, 0))
        return out

    def check(self) -> list[MountOp]:
        """Re-apply every operation whose mount is gone, and return those. Raises
        :class:`GuardLost` for one it cannot re-apply."""
        for op in self.ops:
            self._keep(op)
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
                mounted = cover(op, mode)
            except CannotCover as exc:
                raise GuardLost(exc.target, exc.why) from None
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE):
                    continue  # replaced again under us: look again
                raise
            if not mounted:  # a symbolic link: nothing of ours there; look again next time
                self._mounts[op.target] = -1
                return
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
        """(mount id, mode) of ``target``; (-1, -1) if it names nothing we can reach (what the
        guard, with the namespace owner's capabilities, cannot reach, the program cannot)."""
        try:
            return _libc.mount_id(target)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return -1, -1
            raise
