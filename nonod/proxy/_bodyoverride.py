"""A ``_method`` field in a request body, seen as the body streams through:
:class:`BodyOverrideWatch`.

Upstreams take the method to run from the body of a request too: Rails' ``Rack::MethodOverride``
(in every Rails application's middleware) reads ``_method`` from a form body (a POST with
``application/x-www-form-urlencoded``, ``multipart/form-data``, or no content type), Symfony
and Laravel from the parsed request (Laravel's is the JSON body for a JSON request), Express's
``method-override`` from ``req.body`` when told so. On a route with endpoint rules that field
would have the upstream run a method no rule allows, with the real key.

The watch is fed each piece of the body before it is passed on and says when the piece holds
the end of such a field; the proxy then drops the upstream connection before that piece is
sent (every such parser reads the whole body before it acts, and never gets it). Recognised,
in any letter case, each character also as ``%XX`` or ``\\u00XX``:

- a form pair's name: ``_method=`` at the start of the body or after ``&`` or ``;``;
- a quoted string ``"_method"`` or ``'_method'`` (a JSON key, a multipart part's
  ``name="_method"``);
- an unquoted multipart name: ``name=_method`` followed by ``;``, a quote or white space.

A quoted ``"_method"`` that is a value, not a key, is refused too (the watch does not parse).
Only bodies such parsers read are watched (:func:`parsed_for_fields`): no content type, a form,
or JSON; an upload of another type (``application/octet-stream``, ``image/png``) is not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, final


def _char(c: str) -> str:
    """One character of the field name: itself, or its ``%XX`` or ``\\u00XX`` escape."""
    code = f"{ord(c):02x}"
    return f"(?:{re.escape(c)}|%{code}|\\\\u00{code})"


_NAME: Final = "".join(_char(c) for c in "_method")
#: Every spelling; each match ends at the byte that completes it (a form pair's ``=``, the
#: closing quote, the delimiter after an unquoted name).
_FIELD: Final = re.compile(  # searched in lower case
    (f"[&;]{_NAME}=|[\"']{_NAME}[\"']|name\\s{{0,32}}=\\s{{0,32}}{_NAME}[;\\s\"']").encode())
#: Bytes kept from the pieces before: more than the longest match (a field split across
#: pieces is found when its last byte comes).
_KEEP: Final = 160


#: The media types whose bodies frameworks take fields from (Rack reads a POST without one).
_FORMS: Final = frozenset({b"application/x-www-form-urlencoded", b"multipart/form-data"})


def parsed_for_fields(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request body of these headers' type is one a framework takes fields from:
    none given, a form, or JSON (``application/json``, ``...+json``); several
    ``Content-Type`` headers count as such a body too."""
    types = [value for name, value in headers if name.lower() == b"content-type"]
    if len(types) != 1:
        return True
    media = types[0].partition(b";")[0].strip().lower()
    return not media or media in _FORMS or b"json" in media


@final
class BodyOverrideWatch:
    """Fed a request body piece by piece (:meth:`feed`), then :meth:`end`; True from the
    piece that completes a ``_method`` field (see the module doc)."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b"&"  # the start of the body begins a form pair

    def feed(self, data: bytes) -> bool:
        """Whether ``data`` (the next piece) completes a ``_method`` field."""
        window = (self._tail + data).lower()
        self._tail = window[-_KEEP:]
        if b"%" not in window and b"\\u00" not in window and b"_method" not in window:
            return False  # no escape: a field would be spelt out (``find`` is fast in C)
        return _FIELD.search(window) is not None

    def end(self) -> bool:
        """Whether the body's end completes one (an unquoted multipart name last)."""
        return self.feed(b"\r\n")
