"""Which user a subordinate uid belongs to: ``/etc/subuid``.

A user with subordinate ids runs processes under those host uids through the set-id
``newuidmap``, in a user namespace of its own. Where the daemon tells users apart by a uid
alone (a TCP peer's socket owner, from ``sock_diag``: no process to ask about its namespace),
such a uid must count as its user, or one user would have a share per subordinate id.
"""

from __future__ import annotations

import bisect
import os
import pwd
from typing import Final

SUBUID: Final = "/etc/subuid"

#: The file's identity when last read, and its ranges: sorted starts, and (start, end, owner).
_cache: dict[str, tuple[tuple[int, int, int], list[int], list[tuple[int, int, int]]]] = {}


def owner_of(uid: int, path: str = SUBUID) -> int:
    """The uid of the user whose subordinate range holds ``uid``; ``uid`` itself when none
    does (or the file cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return uid
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    cached = _cache.get(path)
    if cached is None or cached[0] != key:
        cached = (key, *_ranges(path))
        _cache[path] = cached
    _, starts, ranges = cached
    at = bisect.bisect_right(starts, uid) - 1
    if at >= 0:
        start, end, owner = ranges[at]
        if start <= uid < end:
            return owner
    return uid


def _ranges(path: str) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The file's ranges as (start, end, owner uid), sorted; lines that do not parse, or
    name no user, are left out."""
    ranges = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
            continue
        owner = _uid_of(fields[0])
        if owner is not None:
            start = int(fields[1])
            ranges.append((start, start + int(fields[2]), owner))
    ranges.sort()
    return [r[0] for r in ranges], ranges


def _uid_of(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
