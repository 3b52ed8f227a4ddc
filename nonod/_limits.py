"""A session's effective resource limits: the launch flags over the profile's
``nonod.limits``, then nonod.toml's ``[limits]`` defaults, then its ceilings.

A ceiling is what the operator allows any caller: a session that asks for more is refused
(``limits.exceeded``, naming the limit), and one that asks for nothing gets the ceiling.
"""

from __future__ import annotations

import msgspec

from . import protocol as p
from ._config import LimitsSection
from ._units import format_size, parse_duration, parse_size
from .errors import NonoError
from .policy import Limits, ResolvedPolicy


class LimitExceeded(NonoError):
    """A launch asked for more than the daemon's ceiling for one limit."""

    code = "limits.exceeded"


class LimitSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``[limits]`` of nonod.toml: defaults for sessions that ask for nothing, and ceilings."""

    defaults: Limits = Limits()
    ceilings: Limits = Limits()


def settings_from(section: LimitsSection) -> LimitSettings:
    """nonod.toml's ``[limits]`` as defaults and ceilings (validated when it was loaded)."""
    def size(value: str | int | None) -> int | None:
        return None if value is None else parse_size(value)

    def duration(value: str | float | None) -> float | None:
        return None if value is None else parse_duration(value)

    s = section
    return LimitSettings(
        defaults=Limits(memory=size(s.memory), cpus=s.cpus, cpu_weight=s.cpu_weight,
                        io_weight=s.io_weight, wall_clock=duration(s.wall_clock)),
        ceilings=Limits(memory=size(s.max_memory), max_processes=s.max_processes,
                        cpus=s.max_cpus, cpu_weight=s.max_cpu_weight,
                        io_weight=s.max_io_weight, wall_clock=duration(s.max_wall_clock)),
    )


def _shown(key: str, value: float) -> str:
    return format_size(int(value)) if key == "memory" else f"{value:g}"


def from_options(options: p.LaunchOptions) -> Limits:
    return Limits(memory=options.memory, max_processes=options.max_processes,
                  cpus=options.cpus, cpu_weight=options.cpu_weight,
                  io_weight=options.io_weight, wall_clock=options.timeout)


def effective(policy: ResolvedPolicy, options: p.LaunchOptions,
              settings: LimitSettings) -> ResolvedPolicy:
    """``policy`` with its limits made final; LimitExceeded if one is above its ceiling."""
    asked = from_options(options)
    merged: dict[str, float | None] = {}
    for key in Limits.__struct_fields__:
        value = getattr(asked, key)
        if value is None:
            value = getattr(policy.limits, key)
        if value is None:
            value = getattr(settings.defaults, key)
        ceiling = getattr(settings.ceilings, key)
        if ceiling is not None:
            if value is None and key == "max_processes" and policy.max_processes:
                value = min(policy.max_processes, ceiling)
            if value is None:
                value = ceiling
            elif value > ceiling:
                raise LimitExceeded(
                    f"{key} {_shown(key, value)} is above this daemon's ceiling "
                    f"{_shown(key, ceiling)}",
                    hint=f"ask for at most {_shown(key, ceiling)}, or have the operator raise "
                    f"[limits] max_{key} in nonod.toml")
        merged[key] = value
    limits = msgspec.convert(merged, Limits)
    return msgspec.structs.replace(
        policy, limits=limits,
        max_processes=limits.max_processes if limits.max_processes else policy.max_processes)
