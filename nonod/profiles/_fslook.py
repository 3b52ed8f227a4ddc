"""What profile resolution sees of the filesystem, looked at once and recorded.

Resolution canonicalises about a hundred paths that share most of their directories
(``~/.config/...``, ``~/.local/...``); ``os.path.realpath`` looks at every component of every
path again (some 460 ``lstat`` calls for the default profile). :class:`FsLook` looks at each
path once per resolution and keeps what it saw, so that:

- one resolution makes one ``lstat``/``stat``/``readlink`` per distinct path;
- :meth:`FsLook.unchanged` can tell, with one system call per recorded path, whether the
  filesystem still answers every question the resolution asked. A cached resolution is reused
  only then (``nonod._profile_source``): a path created or removed, one whose type changed (a
  directory turned symlink, ...) or a symlink pointing elsewhere makes it resolve again.

Resolution's output is a function of exactly these answers (is there something at this path,
of which type, and where does this link point): the same answers give the same policy, so
reuse is exact, not a heuristic on timestamps.
"""

from __future__ import annotations

import ctypes
import functools
import os
import posixpath
import stat
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Final, NamedTuple, TypeVar, final

H = TypeVar("H", bound=Hashable)

#: What one look at a path returns: the file type (``stat.S_IFMT``), or None when missing.
Signature = int | None
#: Who may make names there and whose it is, from the same look: (for a directory, which of
#: ``S_IWOTH`` and ``S_IWGRP`` it has: others than its owner may make names in it, every user
#: like in ``/tmp``, or its group's members; 0 for anything else; its owner's uid; its
#: group's gid when its group may write it, else -1).
Who = tuple[int, int, int]
#: The mode bits that let others than a directory's owner make names in it.
_OPEN: Final = stat.S_IWOTH | stat.S_IWGRP


class Placed(NamedTuple):
    """A name met on the way of a path, in a directory others than its owner may make names
    in (``FsLook.realpath(placed=...)``): whoever made it first chose what it is."""

    name: str
    #: The name's owner.
    uid: int
    #: The directory's owner (who may rename or remove any name in it, whatever its mode).
    directory_owner: int
    #: Who else may make names there: ``None`` every user (``S_IWOTH``), else the gid of the
    #: group whose members may (``S_IWGRP``).
    group: int | None

_ABSENT: Final = -1  # no answer of this pass for a path (no file type is negative)
_MAX_LINKS: Final = 40  # as the kernel's own limit on symlinks followed in one lookup


#: ``looks.c`` built (``make``): the check's system calls in one call, without the GIL.
_NATIVE_LIBRARY: Final = "libnonolooks.so"
_MISSING: Final = -1  # looks.c's answer for a failed call


@functools.cache
def _native() -> ctypes.CDLL | None:
    """``libnonolooks.so`` beside this module, or None (not built: the check stays Python's,
    with the same answers)."""
    path = Path(__file__).with_name(_NATIVE_LIBRARY)
    if not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    strings, ints, longs = (ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int),
                            ctypes.POINTER(ctypes.c_long))
    lib.nono_lstat_differs.argtypes = (strings, ints, longs, ctypes.c_long, ints)
    lib.nono_lstat_differs.restype = ctypes.c_long
    lib.nono_stat_differs.argtypes = (strings, ints, longs, ctypes.c_long, ints, ctypes.c_long)
    lib.nono_stat_differs.restype = ctypes.c_long
    return lib


@final
class _Batch:
    """A complete look's ``lstat`` and ``stat`` questions as ``looks.c`` takes them: made
    once, asked by any number of threads (each call has its own answers' buffer)."""

    def __init__(self, order: tuple[tuple[str, Signature], ...],
                 stats: tuple[tuple[str, Signature], ...], open_dirs: dict[str, int]) -> None:
        index = {path: i for i, (path, _) in enumerate(order)}
        self._keep = ([os.fsencode(p) for p, _ in order], [os.fsencode(p) for p, _ in stats])
        n, m = len(order), len(stats)
        self.n, self.m = n, m
        self.paths = (ctypes.c_char_p * n)(*self._keep[0])
        # lstat's answer for a directory holds S_IWOTH and S_IWGRP as looks.c gives them
        # (``placed``).
        self.recorded = (ctypes.c_int * n)(*(
            _MISSING if r is None else r | open_dirs.get(p, 0) for p, r in order))
        self.parent = (ctypes.c_long * n)(
            *(index.get(posixpath.dirname(p), -1) for p, _ in order))
        self.stat_paths = (ctypes.c_char_p * m)(*self._keep[1])
        self.stat_recorded = (ctypes.c_int * m)(*(_MISSING if r is None else r
                                                  for _, r in stats))
        self.same = (ctypes.c_long * m)(*(index.get(p, -1) for p, _ in stats))

    @staticmethod
    def of(order: tuple[tuple[str, Signature], ...],
           stats: tuple[tuple[str, Signature], ...], open_dirs: dict[str, int]) -> _Batch | None:
        """None for a path ``looks.c`` cannot be given (a NUL byte: Python's look refused
        it, ``ValueError``, and the Python check asks it the same way). ``open_dirs``: the
        directories others than their owner could write in when looked at, with the bits
        that let them (``_OPEN``)."""
        if any("\0" in p for p, _ in order) or any("\0" in p for p, _ in stats):
            return None
        return _Batch(order, stats, open_dirs)

    def differs(self, lib: ctypes.CDLL) -> bool:
        now = (ctypes.c_int * max(self.n, 1))()
        if lib.nono_lstat_differs(self.paths, self.recorded, self.parent, self.n, now) >= 0:
            return True
        return bool(lib.nono_stat_differs(self.stat_paths, self.stat_recorded, self.same,
                                          self.m, now, self.n) >= 0)


def _signature(path: str, *, follow: bool) -> Signature:
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (OSError, ValueError):
        return None
    return stat.S_IFMT(st.st_mode)


def _who(st: os.stat_result) -> Who:
    bits = st.st_mode & _OPEN if stat.S_ISDIR(st.st_mode) else 0
    return bits, st.st_uid, st.st_gid if bits & stat.S_IWGRP else -1


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except (OSError, ValueError):
        return None


@final
class FsLook:
    """Memoised ``lstat``/``stat``/``readlink``, with ``realpath``/``exists``/``isdir``/
    ``lexists`` on top (the same answers as ``os.path``'s, non-strict ``realpath``)."""

    def __init__(self) -> None:
        self._lstat: dict[str, Signature] = {}
        self._who: dict[str, Who] = {}  # from the same ``lstat`` as ``_lstat``'s answer
        self._stat: dict[str, Signature] = {}
        self._links: dict[str, str | None] = {}
        self._loop = False
        self._order: tuple[tuple[str, Signature], ...] = ()
        self._batch: _Batch | None = None
        #: The paths whose owner and openness the check asks again (``_same_owners``), with
        #: what was seen, for the number of ``lstat`` looks it was made from.
        self._owners: tuple[int, tuple[tuple[str, Who], ...]] = (-1, ())
        #: Answers that are not the filesystem's, each with the question asked again by
        #: :meth:`unchanged` (:meth:`ask`).
        self._asked: list[tuple[Callable[[], Hashable], Hashable]] = []

    # -- primitive looks, each recorded
    def lstat(self, path: str) -> Signature:
        if path not in self._lstat:
            try:
                st = os.lstat(path)
            except (OSError, ValueError):
                self._lstat[path] = None
            else:
                self._lstat[path] = stat.S_IFMT(st.st_mode)
                self._who[path] = _who(st)
        return self._lstat[path]

    def stat(self, path: str) -> Signature:
        if path not in self._stat:
            self._stat[path] = _signature(path, follow=True)
        return self._stat[path]

    def readlink(self, path: str) -> str | None:
        if path not in self._links:
            self._links[path] = _readlink(path)
        return self._links[path]

    def ask(self, question: Callable[[], H]) -> H:
        """``question()``, recorded: an answer the resolution depends on besides the
        filesystem's (a root caller's: the password database's homes), which
        :meth:`unchanged` asks again (review25: an account made since was served a
        resolution without its home's denials)."""
        answer = question()
        self._asked.append((question, answer))
        return answer

    # -- os.path's questions
    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def lexists(self, path: str) -> bool:
        return self.lstat(path) is not None

    def isdir(self, path: str) -> bool:
        sig = self.stat(path)
        return sig is not None and stat.S_ISDIR(sig)

    def realpath(self, path: str, crossed: list[str] | None = None,
                 placed: list[Placed] | None = None) -> str:
        """``os.path.realpath(path)`` for an absolute path: symlinks followed, ``..`` and
        ``.`` removed, a missing component and what follows it kept. A symlink loop is rare
        and ``os.path.realpath``'s answer for it is peculiar: it answers then, and this look
        is never reused (:meth:`unchanged` is False); so is a relative path (it depends on the
        process's working directory). ``crossed``, when given, receives every symbolic link
        followed on the way, each at its real place (its directory resolved); ``placed``
        every name met on the way in a directory others than its owner may make names in
        (every user, as in ``/tmp``, or its group's members: :class:`Placed`): whoever made
        it first chose what it is."""
        resolved, done = (self._walk("/", path, {}, crossed, placed) if path.startswith("/")
                          else ("", False))
        if not done:
            self._loop = True
            try:
                return os.path.realpath(path)
            except RecursionError:
                # Python's resolver recurses once per nested link: a chain of about a
                # thousand (anyone who may write a directory makes one in a second) raised
                # out of the launch, which was answered by a closed connection. The kernel
                # follows at most 40 links in one lookup, so nothing opens the path either.
                from ..errors import PolicyError
                raise PolicyError(f"`{path}`: too many levels of symbolic links (a chain "
                                  "of links too long to follow)") from None
        return resolved

    def _walk(self, base: str, rest: str, seen: dict[str, str | None],
              crossed: list[str] | None = None,
              placed: list[Placed] | None = None) -> tuple[str, bool]:
        """``base`` (resolved) joined with ``rest`` (to resolve); False once a loop stopped."""
        if rest.startswith("/"):
            base = "/"
        parts = [name for name in rest.split("/") if name and name != "."]
        for name in parts:
            if name == "..":
                base = posixpath.dirname(base) or "/"
                continue
            candidate = posixpath.join(base, name)
            sig = self.lstat(candidate)
            if placed is not None and sig is not None and self._open_to_others(base):
                bits, owner, gid = self._who[base]
                placed.append(Placed(candidate, self._who[candidate][1], owner,
                                     None if bits & stat.S_IWOTH else gid))
            if sig is None or not stat.S_ISLNK(sig):
                base = candidate
                continue
            if candidate in seen:
                known = seen[candidate]
                if known is None:  # a loop
                    return candidate, False
                base = known
                continue
            if crossed is not None:
                crossed.append(candidate)
            target = self.readlink(candidate)
            if target is None or len(seen) >= _MAX_LINKS:
                return candidate, False
            seen[candidate] = None
            base, done = self._walk(base, target, seen, crossed, placed)
            if not done:
                return base, False
            seen[candidate] = base
        return base, True

    def _open_to_others(self, directory: str) -> bool:
        """Whether others than its owner (every user, or its group's members) may make
        names in ``directory`` (resolved)."""
        return directory != "/" and self.lstat(directory) is not None and \
            self._who[directory][0] != 0

    # -- validation
    def unchanged(self) -> bool:
        """True when every recorded look gives the same answer now.

        Some answers follow from others asked in the same pass, and are derived rather than
        asked again (about a third of the system calls of a default profile's check):

        - a path whose parent is missing now is missing too (its lookup fails at the
          parent, with the same error as the parent's own ``lstat``), so a recorded
          "missing" below a parent found missing holds without a look;
        - ``stat`` differs from ``lstat`` only by following a symlink at the path's last
          component: where ``lstat`` finds no symlink (or nothing) now, ``stat`` answers the
          same.

        Each derived answer is what the system call would have returned at the moment of the
        look it derives from, within the same pass: no weaker than asking each path in turn.

        With ``libnonolooks.so`` built (``looks.c``) the ``lstat`` and ``stat`` questions are
        asked by it, in one call that gives up the GIL once, by the same rules.
        """
        if self._loop or any(question() != answer for question, answer in self._asked):
            return False
        lib = _native()
        batch = self._native_batch() if lib is not None else None
        if lib is not None and batch is not None:
            if batch.differs(lib) or not self._same_owners():
                return False
            return all(_readlink(p) == t for p, t in self._links.items())
        now: dict[str, Signature] = {}
        lstat, dirname, ifmt = os.lstat, posixpath.dirname, stat.S_IFMT
        for path, recorded in self._by_depth():
            if recorded is None and now.get(dirname(path), _ABSENT) is None:
                now[path] = None  # below a parent missing now: missing too
                continue
            try:
                st = lstat(path)
            except (OSError, ValueError):
                current: Signature = None
            else:
                current = ifmt(st.st_mode)
                # Who owns a name in a directory open to others, and whether (and to whom)
                # a directory is open (``placed``): a name removed and made again by another
                # user keeps its type, and so does a directory its owner opened since
                # (review25: another user's name put there was then served as unchanged).
                who = _who(st)
                if self._who_matters(path) and who != self._who.get(path):
                    return False
                if recorded == current == stat.S_IFDIR and who[0] != self._who[path][0]:
                    return False
            if current != recorded:
                return False
            now[path] = current
        for path, recorded in self._stat.items():
            seen = now.get(path, _ABSENT)
            if seen == _ABSENT or (seen is not None and stat.S_ISLNK(seen)):
                seen = _signature(path, follow=True)
            if seen != recorded:
                return False
        return all(_readlink(p) == t for p, t in self._links.items())

    def _same_owners(self) -> bool:
        """The ``placed`` half of the check that ``looks.c`` does not ask: each name in a
        directory open to others (and each such directory) still has the owner (and group)
        and openness it had (asked after the native pass, a few ``lstat`` of ``/tmp``'s
        names, and of group-writable directories', at most)."""
        made, owners = self._owners
        if made != len(self._lstat):  # (a look grows during its resolution only)
            owners = tuple((path, self._who[path]) for path, recorded in self._lstat.items()
                           if recorded is not None and self._who_matters(path))
            self._owners = (len(self._lstat), owners)
        for path, seen in owners:
            try:
                st = os.lstat(path)
            except (OSError, ValueError):
                return False
            if _who(st) != seen:
                return False
        return True

    def _who_matters(self, path: str) -> bool:
        for place in (path, posixpath.dirname(path)):
            who = self._who.get(place)
            if who is not None and who[0]:
                return True
        return False

    def _by_depth(self) -> tuple[tuple[str, Signature], ...]:
        """The ``lstat`` looks, each parent before what is below it (kept once sorted: a look
        grows during its resolution only, and never changes an answer it holds)."""
        if len(self._order) != len(self._lstat):
            self._order = tuple(sorted(self._lstat.items(), key=lambda item: len(item[0])))
        return self._order

    def _native_batch(self) -> _Batch | None:
        """The look's questions for ``looks.c`` (made again when the look grew)."""
        order = self._by_depth()
        batch = self._batch
        if batch is None or batch.n != len(order) or batch.m != len(self._stat):
            open_dirs = {p: self._who[p][0] for p, r in order
                         if r is not None and stat.S_ISDIR(r) and self._who[p][0]}
            batch = self._batch = _Batch.of(order, tuple(self._stat.items()), open_dirs)
        return batch

    def looks(self) -> int:
        """How many distinct looks were recorded (what :meth:`unchanged` repeats)."""
        return len(self._lstat) + len(self._stat) + len(self._links)
