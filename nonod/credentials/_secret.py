"""A credential value that does not show itself.

:class:`Secret` holds a real credential. Its ``repr``, ``str`` and every ``format`` spec give
``Secret([redacted])``; it refuses to be pickled (so it cannot travel to another process or a
cache by accident) and is not hashable (a hash is a function of the value). The one way to the
value is :meth:`Secret.reveal`, which makes every use greppable.

Python strings cannot be wiped from memory; the daemon keeps a Secret only as long as the
session that needs it (the session's route table drops it when the session ends).
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn, final

from ._opaque import Opaque


@final
class Secret(Opaque):
    """A non-empty credential value. Equality is constant-time; nothing else looks inside."""

    __slots__ = ()

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        if not value:
            raise ValueError("a Secret cannot be empty")
        self._value = value

    def __init_subclass__(cls, **kwargs: Any) -> NoReturn:
        raise TypeError("Secret is not designed for subclassing")

    def reveal(self) -> str:
        """The value. Call this only where the value is put into a request or a store."""
        return self._value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())
