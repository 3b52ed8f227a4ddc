"""Symbolic links a session could re-point: those on the way to a path, lying in a directory
one of its writable grants holds.

The sandbox keeps a *file* read-only with a mount over it; a link cannot be covered that way,
so a session that may write the link's directory can rename a link of its own over it. A
name the daemon relies on across that boundary (the profile a launch was loaded from, a
verified instruction file) must therefore not go through such a link. Blocking (``lstat`` and
``realpath``); run it as the caller (``nonod._callerfs``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .policy import Grant

#: Granted as such, these are the session's own tmpfs, never the host's directory
#: (``nonod.sandbox._mounts.PRIVATE_TMP``).
PRIVATE_TMPS: frozenset[str] = frozenset({"/tmp", "/var/tmp", "/dev/shm"})


def writable_links(path: str, grants: Sequence[Grant]) -> list[str]:
    """The symbolic links among ``path``'s components (itself included) whose directory
    lies in a writable directory grant of ``grants``."""
    parts = os.path.normpath(path).strip("/").split("/")
    found = []
    for end in range(1, len(parts) + 1):
        part = "/" + "/".join(parts[:end])
        if not os.path.islink(part):
            continue
        home = os.path.realpath(os.path.dirname(part))
        if any(g.access.writes and not g.is_file and g.path not in PRIVATE_TMPS
               and inside(home, g.path) for g in grants):
            found.append(part)
    return found


def inside(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


__all__ = ["PRIVATE_TMPS", "inside", "writable_links"]
