"""Sizes (``512M``) and durations (``1h30m``) as people write them in profiles, flags and
nonod.toml. Binary units: ``K`` is 1024 bytes."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


#: The smallest memory limit a session may have (the protocol and ``[limits]`` say the same).
MIN_MEMORY = 1 << 20


def parse_memory(value: str | int) -> int:
    """A memory limit: a size of at least ``MIN_MEMORY``; ValueError otherwise."""
    size = parse_size(value)
    if size < MIN_MEMORY:
        raise ValueError(f"`{value}` is below the smallest memory limit, 1M")
    return size


def parse_size(value: str | int) -> int:
    """Bytes from ``512M``, ``1.5G``, ``64k`` or a plain number; ValueError otherwise."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.fullmatch(value)
    if m is None:
        raise ValueError(f"`{value}` is not a size (such as 512M, 2G, 65536)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(value: str | float) -> float:
    """Seconds from ``90s``, ``1h30m``, ``2d`` or a plain number of seconds."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"`{value}` is not a duration (such as 90s, 30m, 1h30m)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def format_size(n: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f}M"
    return str(n)


def describe_limits(*, memory: int | None = None, max_processes: int | None = None,
                    cpus: float | None = None, cpu_weight: int | None = None,
                    io_weight: int | None = None, wall_clock: float | None = None) -> str:
    """Limits as people read them (``memory 512M, 256 processes, 0.5 CPUs``); "" for none."""
    parts: tuple[tuple[float | None, str], ...] = (
        (memory, f"memory {format_size(int(memory))}" if memory is not None else ""),
        (max_processes, f"{max_processes} processes"),
        (cpus, f"{cpus:g} CPUs" if cpus is not None else ""),
        (cpu_weight, f"CPU weight {cpu_weight}"),
        (io_weight, f"I/O weight {io_weight}"),
        (wall_clock, f"wall clock {wall_clock:g}s" if wall_clock is not None else ""),
    )
    return ", ".join(text for value, text in parts if value is not None)
