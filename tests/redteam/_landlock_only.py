"""What the eighth pass's tests share: a landlock-only session's policy and its Python."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from nonod.policy import Access, Grant, NetworkPolicy, ResolvedPolicy

PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
# What every launch here accepts: a writable directory has persistence names, every host has
# /proc/keys, and a root session the host's files' metadata (the thirty-first pass).
ACCEPTED = ("persistence", "creation_guard", "host_proc", "host_metadata")


def policy(work: Path, *, accept: tuple[str, ...] = ACCEPTED,
           network: NetworkPolicy | None = None, **fields: object) -> ResolvedPolicy:
    """``/usr`` and ``/etc`` read, ``work`` read-write; ``fields`` for the rest."""
    base = ResolvedPolicy(
        name="landlock-only", denials=(), network=network or NetworkPolicy(),
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(work), access=Access.READWRITE)),
        allow_degraded=accept)
    return msgspec.structs.replace(base, **fields)
