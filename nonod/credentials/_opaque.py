"""What a secret value and a phantom token share: they never show themselves.

``repr``, ``str`` and every ``format`` spec give ``<Class>([redacted])``; copies are the
object itself (immutable); pickling is refused, so neither travels to another process or a
cache by accident; neither is hashable (a hash is a function of the value). The value is
reached only through the subclass's ``reveal``.
"""

from __future__ import annotations

from typing import NoReturn, TypeVar

_O = TypeVar("_O", bound="Opaque")


class Opaque:
    __slots__ = ("_value",)

    _value: str

    def _shown(self) -> str:
        return f"{type(self).__name__}([redacted])"

    def __repr__(self) -> str:
        return self._shown()

    def __str__(self) -> str:
        return self._shown()

    def __format__(self, spec: str) -> str:
        return self._shown()

    __hash__ = None  # type: ignore[assignment]

    def __copy__(self: _O) -> _O:
        return self

    def __deepcopy__(self: _O, memo: dict[int, object]) -> _O:
        return self

    def _refuse_pickle(self) -> NoReturn:
        raise TypeError(f"a {type(self).__name__} cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self._refuse_pickle()

    def __reduce__(self) -> NoReturn:
        self._refuse_pickle()

    def __getstate__(self) -> NoReturn:
        self._refuse_pickle()
