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

import os
import posixpath
import stat
from typing import Final, final

#: What one look at a path returns: the file type (``stat.S_IFMT``), or None when missing.
Signature = int | None
#: Who may make names there and whose it is, from the same look: (a directory every user may
#: write in, like ``/tmp``; its owner's uid).
Who = tuple[bool, int]

_ABSENT: Final = -1  # no answer of this pass for a path (no file type is negative)
_MAX_LINKS: Final = 40  # as the kernel's own limit on symlinks followed in one lookup


def _signature(path: str, *, follow: bool) -> Signature:
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (OSError, ValueError):
        return None
    return stat.S_IFMT(st.st_mode)


def _who(st: os.stat_result) -> Who:
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_IWOTH), st.st_uid


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

    # -- os.path's questions
    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def lexists(self, path: str) -> bool:
        return self.lstat(path) is not None

    def isdir(self, path: str) -> bool:
        sig = self.stat(path)
        return sig is not None and stat.S_ISDIR(sig)

    def realpath(self, path: str, crossed: list[str] | None = None,
                 placed: list[tuple[str, int]] | None = None) -> str:
        """``os.path.realpath(path)`` for an absolute path: symlinks followed, ``..`` and
        ``.`` removed, a missing component and what follows it kept. A symlink loop is rare
        and ``os.path.realpath``'s answer for it is peculiar: it answers then, and this look
        is never reused (:meth:`unchanged` is False); so is a relative path (it depends on the
        process's working directory). ``crossed``, when given, receives every symbolic link
        followed on the way, each at its real place (its directory resolved); ``placed``
        every name met on the way in a directory every user may write (``/tmp``), with its
        owner's uid: whoever made it first chose what it is."""
        resolved, done = (self._walk("/", path, {}, crossed, placed) if path.startswith("/")
                          else ("", False))
        if not done:
            self._loop = True
            return os.path.realpath(path)
        return resolved

    def _walk(self, base: str, rest: str, seen: dict[str, str | None],
              crossed: list[str] | None = None,
              placed: list[tuple[str, int]] | None = None) -> tuple[str, bool]:
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
            if placed is not None and sig is not None and self._open_to_all(base):
                placed.append((candidate, self._who[candidate][1]))
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

    def _open_to_all(self, directory: str) -> bool:
        """Whether every user may make names in ``directory`` (resolved)."""
        return directory != "/" and self.lstat(directory) is not None and \
            self._who[directory][0]

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
        """
        if self._loop:
            return False
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
                # Who owns a name in a directory open to all, and whether a directory is
                # open to all (``placed``): a name removed and made again by another user
                # keeps its type.
                if self._who_matters(path) and _who(st) != self._who.get(path):
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

    def looks(self) -> int:
        """How many distinct looks were recorded (what :meth:`unchanged` repeats)."""
        return len(self._lstat) + len(self._stat) + len(self._links)
