"""Values that cross the cgroups package's face: the limits asked for, what a group used."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from ..protocol import Usage as Usage
else:
    def __getattr__(name: str) -> object:
        """``Usage`` is the protocol's: ``nonod.protocol`` loads when it is first asked for.
        The fork server imports this module for the limits alone, and never loads it."""
        if name != "Usage":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from ..protocol import Usage

        globals()["Usage"] = Usage
        return Usage

#: cgroup v2's scale for weights: 1..10000, 100 is a default group's share.
DEFAULT_WEIGHT = 100


class CgroupLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one session's group is limited to. None: not limited (the parent's limit holds)."""

    memory: int | None = None  # bytes of RAM; swap is capped to none on top of it
    pids: int | None = None  # processes and threads at once
    cpus: float | None = None  # CPU time per wall-clock second (0.5: half of one CPU)
    cpu_weight: int | None = None  # 1..10000 on cgroup v2's scale (100: the default share)
    io_weight: int | None = None  # 1..10000 on cgroup v2's scale

    def requested(self) -> tuple[str, ...]:
        return tuple(f for f in self.__struct_fields__ if getattr(self, f) is not None)


class Missing(msgspec.Struct, frozen=True, kw_only=True):
    """A limit that was asked for and could not be applied, and why."""

    limit: str
    reason: str
