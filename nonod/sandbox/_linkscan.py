"""Files of the writable grants whose inode has a name the session may not write.

A mount acts on a name, Landlock on the path used: neither refuses a write because the inode
has another link. uv (its default link mode on Linux) and pnpm hard-link their caches into
projects, so a session that may write its working directory rewrites
``.venv/.../site-packages/pkg/__init__.py`` in place and the same inode in ``~/.cache/uv``
changes: every later ``uv sync`` on the host links the session's bytes.

``scan`` runs in the parent at each launch, after ``compile_mounts``: it walks the writable
directory grants of the view (and looks at the writable file grants) and counts, for each
regular file with more than one link, the names of it found there (by directory identity and
name: one directory reached by two granted paths holds one name). An inode with more links
than names found has a name elsewhere (a cache, another project, a backup made with
``cp -al``): each of its names in the view becomes a ``LINKED`` operation, a read-only bind
of the name onto itself. A write open, ``truncate``, ``chmod`` then fail with ``EROFS``;
``unlink`` and ``rename`` over it with ``EBUSY`` (a mount point); a link of it elsewhere with
``EXDEV``. An inode whose every name lies in the writable grants is left alone: the session
may already write each of them; so is one the session's uid may not write (another user's,
no write bit for the group class or others): no name of it is written, and a bind would show
its name in the session's mount table. A directory below a grant that holds only such names (and
directories like it) is bound read-only whole, one mount instead of one per file: pnpm's
package directories, a uv wheel's subpackages. Nothing can be created in it either; the grant
itself is never bound whole.

What the walk does not enter: the targets of the view's other operations below a writable
grant (overlays, read-only binds, masks, pins: the session cannot write there, or writes
only its own copy) and the other writable directory grants (walked on their own). Symbolic
links are not followed (what one leads to is judged where it lies).

The walk is bounded (``Budget``: entries looked at, seconds, binds): past a bound, or at a
directory it cannot list that the session could open, the scan is ``incomplete`` and says
why; the plan then refuses the launch unless the profile accepts the layer ``linked_files``
degraded (what was found is bound all the same). Nothing is cached between launches: a link
the host adds to an existing file (``git clone --local``, ``cp -al``) changes that file's
inode only, no directory of the grant, so no (directory, mtime) key would notice it.

The tree may change while it is walked (another session on the same project renames in it,
timed by an inotify watch on the walk's ``opendir``): ``_Walk.settle`` lists again what
changed until nothing did, and each target carries the walk's ``device:inode`` of it, which
the mount checks at a lookup that follows no link (``_mounts._linked``): a name moved after
the walk fails the launch instead of leaving its new place writable.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Sequence
from typing import Final, NamedTuple, final

from ._mounts import ANCHOR, BIND_DIR, BIND_FILE, LINKED, READONLY, SYMLINK, MountOp

#: The layer's name in the enforcement report (and in ``allow_degraded``).
LAYER: Final = "linked_files"


class Budget(NamedTuple):
    entries: int = 200_000  # directory entries looked at (about a second, docs/benchmarks.md)
    seconds: float = 10.0  # a slow file system's bound (network homes)
    mounts: int = 8192  # read-only binds the session gets


DEFAULT: Final = Budget()


@final
class LinkScan(NamedTuple):
    targets: tuple[str, ...]  # files and directories to bind read-only, sorted
    ids: tuple[tuple[int, int], ...]  # each target's (device, inode) when it was walked
    names: int  # the names of linked files they cover
    inodes: int  # the files (inodes) those are names of
    dirs: int  # how many of ``targets`` are directories
    entries: int  # directory entries looked at
    seconds: float
    incomplete: str  # why the walk stopped before the end ("" when it did not)

    def ops(self) -> tuple[MountOp, ...]:
        """One LINKED operation per target, its source the walk's ``device:inode`` of it:
        what the mount binds must still be that (``_mounts._linked``)."""
        return tuple(MountOp(LINKED, target, f"{dev}:{ino}")
                     for target, (dev, ino) in zip(self.targets, self.ids, strict=True))

    def describe(self) -> str:
        return (f"{self.names} names of {self.inodes} files hard-linked outside the writable "
                f"grants, in {len(self.targets)} read-only binds ({self.dirs} of directories "
                f"that hold only such files); {self.entries} entries walked in "
                f"{self.seconds * 1000:.0f} ms")


class _Stop(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


_Key = tuple[int, int]


@final
class _Walk:
    """What the walk saw: each directory's entry count and walked subdirectories, and the
    names of each inode with more than one link.

    The tree may change while it is walked: another session on the same project, or the
    host, renames in it. A name moved from a directory not listed yet into one already
    listed would never be seen, so each directory's identity and times are read before it
    is listed, and :meth:`settle` lists again every directory that changed since, until a
    pass over them all finds none changed: the listings then hold together, as of that
    pass. Names no longer where a listing put them are dropped (:meth:`live`)."""

    def __init__(self, stops: set[str], budget: Budget, uid: int) -> None:
        self._stops = stops
        self._uid = uid
        # Walking for another uid (the system daemon, as root, for its caller): what the
        # session could not enter is not listed either (its names would show in the
        # session's mount table).
        self._for_other = uid != os.geteuid()
        self._budget = budget
        self._deadline = time.monotonic() + budget.seconds
        self.entries = 0
        self.counts: dict[str, int] = {}
        self.subdirs: dict[str, list[str]] = {}
        self.seen: dict[_Key, list[str]] = {}
        self.links: dict[_Key, int] = {}
        #: The inodes in :attr:`seen` the session's uid may not write (nor ``chmod``).
        self.sealed: set[_Key] = set()
        #: The directory each walked directory, and each name in :attr:`seen`, lies in.
        self.parent: dict[str, str] = {}
        #: (device, inode) of each directory a name in :attr:`seen` lies in: the same
        #: directory reached by two paths (a host bind mount of it, both granted) holds one
        #: name, not two, however many paths lead to it.
        self.dir_ids: dict[str, _Key] = {}
        #: Each listed directory's (device, inode, mtime, ctime), read before its listing.
        self.stamps: dict[str, tuple[int, int, int, int]] = {}
        #: The names with more than one link each directory held at its last listing.
        self.files: dict[str, dict[str, _Key]] = {}
        #: Whether a directory was listed again (names may have gone from where they were).
        self.moved = False
        #: Why names were left out (paths past the kernel's limit); the walk went on.
        self.skipped = ""
        self._grants: set[str] = set()

    def file(self, path: str, st: os.stat_result) -> None:
        """A file grant (``path``, its ``lstat``)."""
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            names = self.seen.setdefault(key, [])
            if path not in names:
                names.append(path)
            self.links[key] = st.st_nlink
            if not _may_write(st, self._uid):
                self.sealed.add(key)
            parent = os.path.dirname(path)
            self.parent[path] = parent
            self._grants.add(path)
            if parent not in self.dir_ids:
                try:
                    dir_st = os.lstat(parent)
                except FileNotFoundError:
                    return
                self.dir_ids[parent] = (dir_st.st_dev, dir_st.st_ino)

    def live(self, path: str, key: _Key) -> bool:
        """Whether ``path`` still named ``key`` at its directory's last listing."""
        return path in self._grants or self.files.get(self.parent[path], {}).get(path) == key

    def names(self, key: _Key) -> int:
        """How many distinct names of inode ``key`` the walk found."""
        return len({(self.dir_ids.get(self.parent[n]), os.path.basename(n))
                    for n in self.seen[key]})

    def tree(self, root: str) -> None:
        """Walk ``root`` (not entering :attr:`_stops` below it). A directory it cannot list
        that the session could open ends the walk."""
        stack = [root]
        while stack:
            stack.extend(self._list(stack.pop()))

    def settle(self) -> None:
        """List again each directory that changed since its listing (and walk what came
        into it), until a pass finds none changed; the budget bounds it."""
        changing = _Stop(f"the writable grants kept changing for {self._budget.seconds:g} s "
                         "while they were walked")
        while True:
            changed = [top for top, stamp in self.stamps.items() if _stamp(top) != stamp]
            if not changed:
                return
            try:
                for top in changed:
                    if top in self.stamps:  # (not below one pruned just now)
                        self._again(top)
            except _Stop:
                if time.monotonic() > self._deadline:
                    raise changing from None
                raise
            if time.monotonic() > self._deadline:
                raise changing

    def _again(self, top: str) -> None:
        self.moved = True
        before = self.stamps[top]
        now = _stamp(top)
        if now is None or now[:2] != before[:2]:  # gone, or another directory by that name
            self._prune(top)
            if now is not None:
                self.tree(top)
            return
        old = self.subdirs[top]
        for sub in self._list(top):
            if sub not in self.stamps:  # new here: moved in, or made, since the listing
                self.tree(sub)
        for sub in set(old).difference(self.subdirs.get(top, ())):
            self._prune(sub)

    def _prune(self, top: str) -> None:
        """Forget the listings of ``top`` and below (gone from where they were)."""
        stack = [top]
        while stack:
            path = stack.pop()
            self.stamps.pop(path, None)
            self.counts.pop(path, None)
            self.files.pop(path, None)
            stack.extend(self.subdirs.pop(path, ()))

    def _list(self, top: str) -> list[str]:
        """List ``top``: its subdirectories to walk."""
        try:  # (its identity and times read on the descriptor listed: no race between)
            fd = os.open(top, _DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return []  # a link now: its directory changed, and is listed again
            if not isinstance(exc, PermissionError):
                raise
            try:
                closed = _closed(os.lstat(top), self._uid)
            except FileNotFoundError:
                return []
            except PermissionError:  # (its parent lists but cannot be searched)
                closed = self._closed_at(self.parent.get(top, ""))
            if closed:
                return []  # (nor is it, or what holds it, bound whole)
            why = os.strerror(exc.errno or errno.EACCES)
            raise _Stop(f"{top} cannot be listed ({why})") from None
        try:
            return self._entries(top, fd)
        finally:
            os.close(fd)

    def _entries(self, top: str, fd: int) -> list[str]:
        budget = self._budget
        stops, parent, seen, links = self._stops, self.parent, self.seen, self.links
        st = os.fstat(fd)
        self.stamps[top] = _times(st)
        self.dir_ids[top] = (st.st_dev, st.st_ino)
        count = 0
        subdirs: list[str] = []
        walk: list[str] = []
        files: dict[str, _Key] = {}
        self.counts[top] = 0  # until it is listed to the end
        self.subdirs[top] = subdirs
        self.files[top] = files
        prefix = top.rstrip("/") + "/"
        with os.scandir(fd) as it:
            for entry in it:
                count += 1
                if self.entries + count > budget.entries:
                    raise _Stop(f"more than {budget.entries} entries in the writable grants")
                if not count & 0x3FF and time.monotonic() > self._deadline:
                    raise _Stop(f"the walk took more than {budget.seconds:g} s")
                path = prefix + entry.name
                if path in stops:
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if self._too_long(path):
                            continue
                        subdirs.append(path)
                        parent[path] = top
                        if not (self._for_other and _closed(
                                entry.stat(follow_symlinks=False), self._uid)):
                            walk.append(path)
                    elif entry.is_file(follow_symlinks=False):  # (a regular file)
                        st = entry.stat(follow_symlinks=False)
                        if st.st_nlink > 1 and not self._too_long(path):
                            key = (st.st_dev, st.st_ino)
                            if key not in seen:
                                seen[key] = [path]
                                if not _may_write(st, self._uid):
                                    self.sealed.add(key)
                            elif path not in seen[key]:  # (listed again: known there)
                                seen[key].append(path)
                            links[key] = st.st_nlink
                            parent[path] = top
                            files[path] = key
                except FileNotFoundError:
                    continue  # removed while we walked: no name left to write
                except PermissionError as exc:  # ``top`` lists but cannot be searched
                    if self._closed_at(top):
                        walk.clear()  # (nor what it holds)
                        break
                    why = os.strerror(exc.errno or errno.EACCES)
                    raise _Stop(f"{path} cannot be looked at ({why})") from None
        self.counts[top] = count
        self.entries += count
        if time.monotonic() > self._deadline:
            raise _Stop(f"the walk took more than {budget.seconds:g} s")
        return walk


    def _too_long(self, path: str) -> bool:
        """Whether ``path`` is past the kernel's limit: a directory to list, or a linked name
        to bind, is looked up by its path, and such a one (a tree a session left, made one
        component at a time) cannot be. It is left out, the walk goes on, and the scan is
        incomplete (the launch refused unless the layer is accepted degraded), rather than
        ``ENAMETOOLONG`` raised out of the plan."""
        if len(os.fsencode(path)) < _PATH_MAX:
            return False
        self.skipped = self.skipped or (
            f"a path in the writable grants is longer than {_PATH_MAX - 1} bytes "
            f"({path[:80]}...)")
        return True

    def _closed_at(self, directory: str) -> bool:
        """:func:`_closed` of ``directory`` for the session (False when it cannot be told:
        the walk then stops rather than skip what the session might open)."""
        try:
            return bool(directory) and _closed(os.lstat(directory), self._uid)
        except OSError:
            return False


def scan(ops: Sequence[MountOp], budget: Budget | None = None, *, uid: int | None = None
         ) -> LinkScan:
    """The names in the writable grants of ``ops`` (a mount plan's operations) that share
    their inode with a name outside them, as read-only binds (module docstring);
    ``budget``: :data:`DEFAULT`; ``uid``: the session's (default: ours)."""
    start = time.monotonic()
    budget = budget or DEFAULT
    roots = sorted(op.target for op in ops if op.kind == BIND_DIR and op.writable)
    # Below a writable grant, what another operation mounts is not this grant's to walk: a
    # nested writable grant is walked as a root of its own, the rest is not writable there
    # (anchors stay writable: bound onto themselves, walked through).
    stops = {op.target for op in ops if op.kind not in (ANCHOR, SYMLINK)}
    walk = _Walk(stops, budget, os.geteuid() if uid is None else uid)
    incomplete = ""
    try:
        for root in roots:
            walk.tree(root)
        for op in ops:
            if op.kind == BIND_FILE and op.writable:
                try:
                    walk.file(op.target, os.lstat(op.target))
                except FileNotFoundError:
                    continue
        walk.settle()
    except _Stop as stop:
        incomplete = stop.why
    incomplete = incomplete or walk.skipped
    if walk.moved:  # the names only where the last listings put them
        for key, paths in walk.seen.items():
            paths[:] = [path for path in paths if walk.live(path, key)]
    already = {op.target for op in ops if op.kind == READONLY}
    # An inode the session may not write is written through no name of it: its names are
    # left unbound (walking as root for another uid, binding them showed in the session's
    # mount table the names of files in directories it cannot list: mode 0750, 0711).
    found = [key for key, paths in walk.seen.items()  # (fewer paths: fewer names)
             if paths and key not in walk.sealed
             and (walk.links[key] > len(paths) or walk.links[key] > walk.names(key))]
    linked = {name for key in found for name in walk.seen[key] if name not in already}
    whole = _whole(walk, linked, set(roots))
    parent = walk.parent
    targets = sorted({*(d for d in whole if parent[d] not in whole),
                      *(n for n in linked if parent[n] not in whole)})
    if len(targets) > budget.mounts:
        incomplete = incomplete or (f"{len(targets)} read-only binds needed, more than "
                                    f"{budget.mounts}")
        targets = targets[:budget.mounts]
    ids = {name: key for key in found for name in walk.seen[key]}
    return LinkScan(targets=tuple(targets),
                    ids=tuple(walk.dir_ids[t] if t in whole else ids[t] for t in targets),
                    names=len(linked), inodes=len(found),
                    dirs=sum(t in whole for t in targets), entries=walk.entries,
                    seconds=time.monotonic() - start, incomplete=incomplete)


def _whole(walk: _Walk, linked: set[str], roots: set[str]) -> set[str]:
    """The walked directories, below a root, whose every entry is a name in ``linked`` or a
    directory like them (deepest first, so a parent sees its children's answer)."""
    direct: dict[str, int] = {}
    for name in linked:
        parent = walk.parent[name]
        direct[parent] = direct.get(parent, 0) + 1
    whole: set[str] = set()
    for path in sorted(walk.subdirs, key=lambda p: p.count("/"), reverse=True):
        count = walk.counts[path]
        if path in roots or not count:
            continue
        if count == direct.get(path, 0) + sum(d in whole for d in walk.subdirs[path]):
            whole.add(path)
    return whole


def _may_write(st: os.stat_result, uid: int) -> bool:
    """Whether ``uid`` may write (or ``chmod``) the file: its own, or a write bit for the
    group class (which bounds every ACL entry but the owner's; the groups of ``uid`` are
    not known here) or others. (Not the session's capabilities in its user namespace: they
    cover only files whose owner and group are mapped there, its own.)"""
    return uid == 0 or st.st_uid == uid or bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


_DIRECTORY: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_MAX: Final = 4096  # the kernel's, with the NUL



def _times(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    """The directory at ``path`` now, as :attr:`_Walk.stamps` holds it (None: no
    directory there any more)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        raise _Stop(f"{path} cannot be looked at again ({os.strerror(exc.errno or errno.EACCES)})"
                    ) from None
    return _times(st) if stat.S_ISDIR(st.st_mode) else None


def _closed(st: os.stat_result, uid: int) -> bool:
    """A directory ``uid`` can neither enter nor ``chmod``: not its own, and no search bit
    for the group class (which bounds every ACL entry but the owner's) or others. (Its
    owner may ``chmod`` it in the session: never closed to it.)"""
    if uid == 0 or st.st_uid == uid:
        return False
    return not st.st_mode & (stat.S_IXGRP | stat.S_IXOTH)
