"""Where else the host's mount table shows a directory: its aliases.

A bind mount shows a directory (or an ancestor of it) at a second path, and the session's
view binds its grants recursively, so a host mount below a writable grant comes along. The
creation guard is by identity but its second Landlock layer is built by path
(``_createguard``): a guarded directory reached through a second path below a directory
that carries a layer-2 rule would take that rule's grant. The plan refuses the guarded
names at every alias too (``_mounts._View.keep_aliases``), which this module finds.

Two mounts show the same directory when they are of one file system (``major:minor``) and
the root of the second is the first's path in that file system or an ancestor of it. Only
what is visible counts: a mount hidden by another mounted over it, or over a directory on
its way, shows nothing at its path (:meth:`Table.at` resolves a path as the kernel walks the
mount tree). Pure functions of ``/proc/self/mountinfo``'s text.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Mount(NamedTuple):
    id: int
    parent: int
    dev: str  # major:minor of its file system
    root: str  # the directory of its file system mounted (``//deleted``: one removed since)
    point: str  # where it is mounted, in this process's root


def unescape(text: str) -> str:
    """A mountinfo field: space, tab, newline and backslash are written as ``\\ooo``."""
    if "\\" not in text:
        return text
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse(mountinfo: str) -> tuple[Mount, ...]:
    out: list[Mount] = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        try:
            out.append(Mount(int(fields[0]), int(fields[1]), fields[2], unescape(fields[3]),
                             unescape(fields[4])))
        except ValueError:
            continue
    return tuple(out)


def _under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent + "/")


def _rel(path: str, base: str) -> str:
    """``path`` below ``base`` (``_under(path, base)``), without a leading slash."""
    return path[len(base):].lstrip("/") if base != "/" else path.lstrip("/")


def _join(base: str, rel: str) -> str:
    return base if not rel else base.rstrip("/") + "/" + rel


class Table:
    """A mount table, for :meth:`at` and :meth:`aliases` (paths absolute and normalized)."""

    def __init__(self, mounts: tuple[Mount, ...]) -> None:
        self.mounts = mounts
        ids = {m.id for m in mounts}
        self._children: dict[tuple[int, str], Mount] = {}
        self._by_dev: dict[str, list[Mount]] = {}
        self._top: Mount | None = None
        for m in mounts:
            if m.point == "/" and (m.parent not in ids or m.parent == m.id) and self._top is None:
                self._top = m  # this process's root (its parent is outside the table)
            else:
                self._children[(m.parent, m.point)] = m  # a later one over it: the last
            self._by_dev.setdefault(m.dev, []).append(m)

    def at(self, path: str) -> Mount | None:
        """The mount the kernel walks into at ``path``: from the root, at each directory on
        the way, the mount on it, and the one on that... (stacked at one place)."""
        cur = self._top
        if cur is None:
            return None
        step = "/"
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts) + 1):
            if i:
                step = _join(step, parts[i - 1])
            for _ in range(len(self.mounts)):
                above = self._children.get((cur.id, step))
                if above is None:
                    break
                cur = above
        return cur

    def aliases(self, path: str) -> tuple[str, ...]:
        """The other paths at which the directory ``path`` (as this table shows it) is
        visible: for each other mount of its file system whose root is its path there or an
        ancestor of it, that mount's point and the rest of the way, where that mount is the
        one the way reaches."""
        home = self.at(path)
        if home is None:
            return ()
        inside = _join(home.root, _rel(path, home.point))
        out: list[str] = []
        for m in self._by_dev.get(home.dev, ()):
            if m is home or not _under(inside, m.root):
                continue
            alias = _join(m.point, _rel(inside, m.root))
            if alias != path and alias not in out and self.at(alias) is m:
                out.append(alias)
        return tuple(out)
