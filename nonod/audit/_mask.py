"""Keeping the session's own secrets out of its audit record, whatever the program sends.

The program holds its phantom token (in its environment and in ``HTTPS_PROXY``) and, in the
weaker ``env_credentials`` mode, real values. Nothing stops it from writing them into what
the daemon records for it: ``CONNECT <token>.example:443``, ``open("/tmp/<secret>")``. So every
event that carries text the program chose (a host, a path, a reason) goes through
:func:`masked` before it is written: each such string is replaced by a marker, in every text
field and in lists of text (argv). Strings shorter than :data:`MIN_HIDDEN` are left alone:
masking three letters everywhere would blur the record and hide nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeVar

import msgspec

MIN_HIDDEN: Final = 8
PHANTOM: Final = "[phantom]"
REDACTED: Final = "[redacted]"

E = TypeVar("E", bound=msgspec.Struct)


def hidden_strings(phantom: str | None, secrets: tuple[str, ...] = ()) -> dict[str, str]:
    """The replacement table for one session: its phantom token and its real values (each
    also in lower case, as the proxy records a host)."""
    table = {spelling: REDACTED for value in secrets if len(value) >= MIN_HIDDEN
             for spelling in (value, value.lower())}
    if phantom and len(phantom) >= MIN_HIDDEN:
        table[phantom] = PHANTOM
    return table


def masked(event: E, hidden: Mapping[str, str]) -> E:
    """``event`` with every hidden string in its text fields replaced (the same object when
    there is nothing to replace)."""
    if not hidden:
        return event
    changes: dict[str, object] = {}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, str):
            new = _mask(value, hidden)
            if new is not value:
                changes[name] = new
        elif isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            items = tuple(_mask(v, hidden) for v in value)
            if any(a is not b for a, b in zip(items, value, strict=True)):
                changes[name] = items
    return msgspec.structs.replace(event, **changes) if changes else event


def _mask(text: str, hidden: Mapping[str, str]) -> str:
    for value, marker in hidden.items():
        if value in text:
            text = text.replace(value, marker)
    return text


__all__ = ["MIN_HIDDEN", "PHANTOM", "REDACTED", "hidden_strings", "masked"]
