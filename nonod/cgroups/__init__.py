"""Per-session cgroups: limits (memory, pids, CPU, I/O), accounting, OOM and pid-cap events.

Public face::

    backend, why = open_backend(state_dir)        # None (and why) where no subtree is ours
    backend.remove_stale()                        # groups a previous daemon left behind
    group = backend.create(session_id, CgroupLimits(memory=32 << 20, pids=64))
    group.procs                                   # cgroup.procs files to join before exec
    group.missing                                 # limits this host cannot apply, and why
    group.usage()                                 # Usage: cpu, memory, pids, io, oom kills
    group.remove()                                # kills what is left, removes the groups

Two backends behind one interface: ``_v2`` (unified hierarchy) and ``_v1`` (a hierarchy per
controller, as on this project's test host). ``_detect`` reads where they are. The names load
on first use (``nonod._lazy``): the fork server needs ``_v1`` alone, the daemon both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._backend import CgroupBackend as CgroupBackend
    from ._backend import SessionGroup as SessionGroup
    from ._backend import choose as choose
    from ._backend import open_backend as open_backend
    from ._backend import subtree_tag as subtree_tag
    from ._detect import Hierarchy as Hierarchy
    from ._detect import current_hierarchies as current_hierarchies
    from ._detect import hierarchies as hierarchies
    from ._errors import CgroupError as CgroupError
    from ._types import DEFAULT_WEIGHT as DEFAULT_WEIGHT
    from ._types import CgroupLimits as CgroupLimits
    from ._types import Missing as Missing
    from ._types import Usage as Usage
else:
    __getattr__, __dir__ = exports(__name__, {
        "_backend": ("CgroupBackend", "SessionGroup", "choose", "open_backend", "subtree_tag"),
        "_detect": ("Hierarchy", "current_hierarchies", "hierarchies"),
        "_errors": ("CgroupError",),
        "_types": ("DEFAULT_WEIGHT", "CgroupLimits", "Missing", "Usage"),
    })
