"""Files of the writable grants whose inode has a name the session may not write.

A mount acts on a name, Landlock on the path used: neither refuses a write because the inode
has another link. uv (its default link mode on Linux) and pnpm hard-link their caches into
projects, so a session that may write its working directory rewrites
``.venv/.../site-packages/pkg/__init__.py`` in place and the same inode in ``~/.cache/uv``
changes: every later ``uv sync`` on the host links the session's bytes.

``scan`` runs in the parent at each launch, after ``compile_mounts``: it walks the writable
directory grants of the view (and looks at the writable file grants) and counts, for each
regular file with more than one link, the names of it found there. An inode with more links
than names found has a name elsewhere (a cache, another project, a backup made with
``cp -al``): each of its names in the view becomes a ``READONLY`` operation, a read-only bind
of the name onto itself. A write open, ``truncate``, ``chmod`` then fail with ``EROFS``;
``unlink`` and ``rename`` over it with ``EBUSY`` (a mount point); a link of it elsewhere with
``EXDEV``. An inode whose every name lies in the writable grants is left alone: the session
may already write each of them.

What the walk does not enter: the targets of the view's other operations below a writable
grant (overlays, read-only binds, masks, pins: the session cannot write there, or writes
only its own copy) and the other writable directory grants (walked on their own). Symbolic
links are not followed (what one leads to is judged where it lies).

The walk is bounded (``Budget``: entries looked at, seconds, names made read-only): past a
bound, or at a directory it cannot list that the session could open, the scan is
``incomplete`` and says why; the plan then refuses the launch unless the profile accepts the
layer ``linked_files`` degraded. Nothing is cached between launches: a link the host adds
to an existing file changes neither the file's directory nor its times as seen from there,
so no (directory, mtime) key would notice it.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple, final

from ._mounts import ANCHOR, BIND_DIR, BIND_FILE, READONLY, SYMLINK, MountOp

#: The layer's name in the enforcement report (and in ``allow_degraded``).
LAYER: Final = "linked_files"


class Budget(NamedTuple):
    entries: int = 500_000  # directory entries looked at
    seconds: float = 5.0
    names: int = 8192  # names made read-only: each is a mount in the session


DEFAULT: Final = Budget()


@final
class LinkScan(NamedTuple):
    names: tuple[str, ...]  # names to bind read-only, sorted
    inodes: int  # inodes they are names of
    entries: int  # directory entries looked at
    seconds: float
    incomplete: str  # why the walk stopped before the end ("" when it did not)

    def ops(self) -> tuple[MountOp, ...]:
        return tuple(MountOp(READONLY, name) for name in self.names)


class _Stop(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def scan(ops: Sequence[MountOp], budget: Budget | None = None) -> LinkScan:
    """The names in the writable grants of ``ops`` (a mount plan's operations) that share
    their inode with a name outside them (module docstring); ``budget``: :data:`DEFAULT`."""
    start = time.monotonic()
    budget = budget or DEFAULT
    roots = sorted(op.target for op in ops if op.kind == BIND_DIR and op.writable)
    files = [op.target for op in ops if op.kind == BIND_FILE and op.writable]
    # Below a writable grant, what another operation mounts is not this grant's to walk: a
    # nested writable grant is walked as a root of its own, the rest is not writable there
    # (anchors stay writable: bound onto themselves, walked through).
    stops = {op.target for op in ops if op.kind not in (ANCHOR, SYMLINK)}
    seen: dict[tuple[int, int], list[str]] = {}
    links: dict[tuple[int, int], int] = {}
    entries = 0
    incomplete = ""
    deadline = start + budget.seconds
    try:
        for root in roots:
            for path, st in _files(root, stops):
                entries += 1
                if entries > budget.entries:
                    raise _Stop(f"more than {budget.entries} entries in the writable grants")
                if not entries & 0x3FF and time.monotonic() > deadline:
                    raise _Stop(f"the walk took more than {budget.seconds:g} s")
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    seen.setdefault(key, []).append(path)
                    links[key] = st.st_nlink
        for path in files:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                names = seen.setdefault(key, [])
                if path not in names:
                    names.append(path)
                links[key] = st.st_nlink
    except _Stop as stop:
        incomplete = stop.why
    already = {op.target for op in ops if op.kind == READONLY}
    found = [key for key, names in seen.items() if links[key] > len(names)]
    names = sorted(n for key in found for n in seen[key] if n not in already)
    if len(names) > budget.names:
        incomplete = incomplete or (f"{len(names)} names to make read-only, more than "
                                    f"{budget.names}")
        names = names[:budget.names]
    return LinkScan(names=tuple(names), inodes=len(found), entries=entries,
                    seconds=time.monotonic() - start, incomplete=incomplete)


def _files(root: str, stops: set[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Each regular file below ``root`` (not entering ``stops`` other than ``root``), with
    its ``lstat``. A directory it cannot list that the session could open ends the walk."""
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            it = os.scandir(top)
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            if _closed_to_us(top):
                continue
            why = os.strerror(exc.errno or errno.EACCES)
            raise _Stop(f"{top} cannot be listed ({why})") from None
        with it:
            for entry in it:
                path = entry.path
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if path not in stops:
                            stack.append(path)
                    elif entry.is_file(follow_symlinks=False):
                        yield path, entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we walked: no name left to write


def _closed_to_us(path: str) -> bool:
    """A directory neither listed nor entered by this uid, and not its own to ``chmod``:
    the session (the same uid, or the caller's under a system daemon that reads with more
    rights) cannot open a name in it either."""
    try:
        st = os.lstat(path)
    except OSError:
        return True
    return st.st_uid != os.geteuid() and not os.access(path, os.X_OK)
