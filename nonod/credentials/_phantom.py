"""Phantom tokens: what a sandboxed program holds instead of a real credential.

A phantom token is 256 bits from :mod:`secrets`, written as 64 lowercase hex characters. The
daemon makes one per session; it is valid only on that session's proxy listener (each
session's route table knows only its own token), so a token copied from session A and shown
to session B's listener is just a wrong token. Comparisons are constant-time
(:func:`hmac.compare_digest`). Like a :class:`~nonod.credentials.Secret`, a token never shows
itself in ``repr``/``str``/``format`` and cannot be pickled: it is harmless outside its
session, but it is still the key to the session's routes while the session runs.
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Any, Final, NoReturn, final

from ._opaque import Opaque

_HEX64: Final = re.compile(r"[0-9a-f]{64}")


@final
class PhantomToken(Opaque):
    """One session's phantom token. Make one with :meth:`new`."""

    __slots__ = ()

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            raise ValueError("a phantom token is 64 lowercase hex characters")
        self._value = value

    def __init_subclass__(cls, **kwargs: Any) -> NoReturn:
        raise TypeError("PhantomToken is not designed for subclassing")

    @classmethod
    def new(cls) -> PhantomToken:
        """A fresh token: 32 random bytes from the operating system's CSPRNG."""
        return cls(secrets.token_hex(32))

    def reveal(self) -> str:
        """The token text, for the child's environment and for building replacements."""
        return self._value

    def matches(self, candidate: str | bytes) -> bool:
        """Whether ``candidate`` is this token, compared in constant time (a length mismatch
        returns early, which tells nothing beyond the public length of 64)."""
        if isinstance(candidate, str):
            try:
                candidate = candidate.encode("ascii")
            except UnicodeEncodeError:
                return False
        return hmac.compare_digest(candidate, self._value.encode("ascii"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhantomToken):
            return NotImplemented
        return self.matches(other._value)
