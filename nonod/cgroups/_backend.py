"""The small interface both cgroup versions implement, and the choice between them."""

from __future__ import annotations

import hashlib
from typing import Protocol

from ._detect import Hierarchy, current_hierarchies
from ._types import CgroupLimits, Missing, Usage
from ._v1 import V1Backend
from ._v2 import V2Backend


class SessionGroup(Protocol):
    """One session's cgroup (a group per hierarchy on v1)."""

    version: int
    path: str
    #: The ``cgroup.procs`` files the session's first process writes "0" to before exec.
    procs: tuple[str, ...]
    #: Limits asked for that this host cannot apply, and why.
    missing: tuple[Missing, ...]

    def usage(self) -> Usage: ...

    def oom_kills(self) -> int:
        """``usage().oom_kills`` alone (one control file)."""
        ...

    def oom_eventfd(self) -> int | None: ...

    def kill(self) -> None: ...

    def remove(self, *, kill: bool = True) -> bool:
        """Remove the group (True once it is gone), killing what is left in it first; with
        ``kill=False`` only if nothing is left in it."""
        ...


class CgroupBackend(Protocol):
    version: int

    def describe(self) -> str: ...

    def subtrees(self) -> list[str]: ...

    def prepare(self) -> list[str]:
        """Make the daemon's subtrees now, as its first session would; returns them. Raises
        OSError if one cannot be made."""
        ...

    def create(self, name: str, limits: CgroupLimits,
               parent: SessionGroup | None = None) -> SessionGroup: ...

    def remove_stale(self) -> list[str]: ...

    def pool(self) -> tuple[tuple[str, str], ...]: ...

    def adopt(self, name: str, made: SessionGroup, *, keep_made: bool = False
              ) -> SessionGroup: ...

    def spare(self, made: SessionGroup, name: str) -> SessionGroup: ...


def subtree_tag(state_dir: str) -> str:
    """Names the daemon's subtree after its state directory: one daemon per state directory,
    so whatever a restarted daemon finds there was left by its predecessor."""
    return hashlib.sha256(state_dir.encode()).hexdigest()[:12]


def choose(found: list[Hierarchy], tag: str) -> tuple[CgroupBackend | None, str]:
    """The backend to use and, when there is none, why. cgroup v2 first where it has the
    memory and pids controllers, then v1, then a v2 group with no controllers (accounting
    of CPU time only)."""
    v2 = V2Backend.probe(found, tag)
    if v2 is not None and {"memory", "pids"} <= v2.controllers:
        return v2, ""
    v1 = V1Backend.probe(found, tag)
    if v1 is not None:
        return v1, ""
    if v2 is not None:
        return v2, ""
    if not found:
        return None, "no cgroup hierarchy is mounted"
    return None, ("no cgroup hierarchy is writable by the daemon (a user daemon needs a "
                  "delegated subtree: systemd's Delegate=yes)")


def open_backend(state_dir: str) -> tuple[CgroupBackend | None, str]:
    return choose(current_hierarchies(), subtree_tag(state_dir))


__all__ = ["CgroupBackend", "SessionGroup", "choose", "open_backend", "subtree_tag"]
