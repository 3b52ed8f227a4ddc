"""Where the cgroup hierarchies are, and where this process sits in each.

Read from ``/proc/self/mountinfo`` (each cgroup v1 mount names its controllers in its super
options; a cgroup2 mount has none) and ``/proc/self/cgroup`` (``id:controllers:path``; v2 is
``0::path``). Pure functions of those two texts, so they are tested on any machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "blkio")


@dataclass(frozen=True)
class Hierarchy:
    """One mounted hierarchy: its controllers (empty for cgroup2) and our group's directory."""

    version: int
    controllers: frozenset[str]
    directory: str


def _mounts(mountinfo: str) -> list[tuple[int, frozenset[str], str, str]]:
    """(version, controllers, mount root, mount point) of each cgroup mount."""
    out: list[tuple[int, frozenset[str], str, str]] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or len(fields) < 5:
            continue
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        root, point = fields[3], fields[4].replace("\\040", " ")
        if fstype == "cgroup":
            out.append((1, frozenset(o for o in options if o in V1_CONTROLLERS), root, point))
        elif fstype == "cgroup2":
            out.append((2, frozenset(), root, point))
    return out


def _join(point: str, root: str, path: str) -> str:
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return os.path.normpath(point + "/" + path.lstrip("/"))


def hierarchies(mountinfo: str, proc_cgroup: str) -> list[Hierarchy]:
    """Our group in every mounted hierarchy that has a controller we use (v1) and in the
    unified one (v2), first mount of each."""
    mine: dict[frozenset[str], str] = {}
    unified: str | None = None
    for line in proc_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if hid == "0" and not names:
            unified = path
        else:
            mine[frozenset(n for n in names.split(",") if n in V1_CONTROLLERS)] = path
    out: list[Hierarchy] = []
    seen: set[frozenset[str]] = set()
    for version, controllers, root, point in _mounts(mountinfo):
        if version == 2:
            if unified is not None and 2 not in {h.version for h in out}:
                out.append(Hierarchy(2, frozenset(), _join(point, root, unified)))
            continue
        if not controllers or controllers in seen or controllers not in mine:
            continue
        seen.add(controllers)
        out.append(Hierarchy(1, controllers, _join(point, root, mine[controllers])))
    return out


def current_hierarchies() -> list[Hierarchy]:
    try:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
        with open("/proc/self/cgroup") as f:
            proc_cgroup = f.read()
    except OSError:
        return []
    return hierarchies(mountinfo, proc_cgroup)
