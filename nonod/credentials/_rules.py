"""Endpoint rules: which method and path a credential route forwards.

A route's ``endpoint_rules`` are ``(method, path glob)`` pairs. Once a route has one rule,
everything no rule matches is refused (default deny); a route without rules forwards every
path. :class:`EndpointRules` is the one matcher: the reverse proxy calls :meth:`check` before
it forwards, and anything that explains a decision calls :meth:`explain`, which runs the same
code.

**Globs.** A pattern is an absolute path split on ``/``. ``*`` as a whole segment matches
exactly one segment; ``**`` as a whole segment matches any number of segments, none included;
``*`` inside a segment (``*.json``, ``v1*``) matches any characters within that segment and
never crosses a ``/``. Everything else is literal and case-sensitive. Empty segments and a
trailing ``/`` are ignored, as in request paths. Rule methods are case-insensitive (``get`` is
``GET``); ``*`` is any method. Request methods are compared as sent, so a client that sends
``get`` matches no rule.

**Normalisation, before any rule is looked at** (the path after the route prefix, without
its query string):

1. it must start with ``/`` and hold no ``\\``, no control character, no ``?``/``#``;
2. it is split on ``/``; empty segments (``//``) are dropped; a trailing ``/`` is remembered;
3. every segment is percent-decoded **once**; a malformed escape (``%zz``, ``%4``) is refused;
4. refused outright (400): a segment that decodes to ``.`` or ``..`` (``..``, ``%2e%2e``,
   ``.%2E``), also before a ``;`` (``..;``, ``..;x=1``: Java servers strip such path
   parameters, then resolve the dots), or that contains ``\\`` or a control character once
   decoded (``%5c``, ``%00``);
5. on a route with rules, also refused: a segment that decodes to something containing ``/``
   (``%2f``, ``%2F``) or ``%`` (double encoding such as ``%252f``), or ``;`` (a path
   parameter: ``/files/admin;.json`` matches ``/files/*.json`` but is ``/files/admin`` to a
   server that strips it), or that is not UTF-8, or that Unicode compatibility folding
   (NFKC, which some upstreams apply; slash look-alikes that Windows' best-fit mapping
   folds) turns into one of these (``..%EF%BC%8F..%EF%BC%8Fadmin``: fullwidth solidus). A
   rule could not say what such a segment means, and an upstream that decodes again would
   see a different path than the one the rule matched;
6. the path sent upstream is rebuilt from the decoded segments with one canonical encoding, so
   the upstream receives exactly the path the rules matched. A route without rules forwards
   its segments as the client encoded them (minus the empty ones): APIs such as GitLab's
   need ``%2F`` inside a segment (``/projects/group%2Fproject``). A segment that would decode
   to ``.`` or ``..`` even after a second decoding is refused there too, and so is one that
   holds a dot segment between the slashes it decodes to, once or twice
   (``x%2F..%2F..%2Fadmin``: ``/admin`` to an upstream that decodes ``%2F`` first).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final, Literal, final
from urllib.parse import quote, unquote_to_bytes

import msgspec

PathProblem = Literal[
    "not_absolute", "bad_character", "bad_escape", "dot_segment", "encoded_slash",
    "double_encoding", "not_utf8", "path_parameter",
]

_HTTP_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3986 pchar without "%": what a canonical segment leaves unencoded.
_SEGMENT_SAFE: Final = "!$&'()*+,;=:@-._~"
_DOTS: Final = (b".", b"..")


class PathRefused(ValueError):
    """A request path the proxy will not forward, whatever the rules say (answered 400).
    ``problem`` is a stable code for audit events."""

    def __init__(self, problem: PathProblem) -> None:
        super().__init__(f"refused request path ({problem})")
        self.problem: PathProblem = problem


class EndpointDenied(Exception):
    """No endpoint rule allows this method and path (answered 403)."""

    def __init__(self, path: NormalisedPath) -> None:
        super().__init__("no endpoint rule allows this request")
        self.path = path


class NormalisedPath(msgspec.Struct, frozen=True, kw_only=True):
    """A request path after normalisation: decoded ``segments``, whether it ended in ``/``,
    and ``forward``, the path to send upstream (it starts with ``/``)."""

    segments: tuple[str, ...]
    trailing_slash: bool
    forward: str

    @property
    def text(self) -> str:
        """The decoded path, for audit events and explanations."""
        if not self.segments:
            return "/"
        return "/" + "/".join(self.segments) + ("/" if self.trailing_slash else "")


class EndpointRule(msgspec.Struct, frozen=True, kw_only=True):
    """One rule as configured: ``method`` (upper case, or ``*``) and the ``path`` glob."""

    method: str
    path: str

    def describe(self) -> str:
        return f"{self.method} {self.path}"


class EndpointVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`EndpointRules.explain` found.

    ``outcome`` is ``allowed`` (``rule`` is the index of the first matching rule, or None on
    a route without rules), ``denied`` (no rule matched) or ``refused`` (the path itself was
    refused; ``problem`` says why). ``path`` is the normalised path when there was one.
    """

    outcome: Literal["allowed", "denied", "refused"]
    rule: int | None = None
    problem: str = ""
    path: NormalisedPath | None = None


_ONE: Final = object()
_ANY: Final = object()
_Piece = object  # str (literal), _Glob (in-segment glob), _ONE or _ANY


@final
class _Glob:
    """A segment with ``*`` in it, as its literal parts: ``a*b*c`` is ``("a", "b", "c")``.
    Matched by finding each middle part leftmost (:meth:`matches`), in time linear in the
    segment per part; a regular expression of ``[^/]*`` runs was tried at every split by
    the backtracking engine (time a power of the segment's length: a rule ``*-*.json``
    against a segment of 60,000 dashes held the daemon's event loop for seconds, one
    star more for hours)."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[str, ...]) -> None:
        self.parts = parts

    def matches(self, segment: str) -> bool:
        first, *middle, last = self.parts
        end = len(segment) - len(last)
        if end < len(first) or not segment.startswith(first) or not segment.endswith(last):
            return False
        at = len(first)
        for part in middle:
            found = segment.find(part, at, end)
            if found < 0:
                return False
            at = found + len(part)
        return True


@final
class EndpointRules:
    """The endpoint rules of one route, compiled. An empty set allows every path."""

    __slots__ = ("_compiled", "_rules", "name")

    def __init__(self, rules: Iterable[tuple[str, str]], *, name: str = "") -> None:
        """``rules`` as (method, glob) pairs; ``name`` says where they came from
        (``network.custom_credentials.github.endpoint_rules``), for 403 answers. Raises
        ValueError for a malformed rule."""
        self.name = name
        checked: list[EndpointRule] = []
        compiled: list[tuple[str, tuple[_Piece, ...]]] = []
        for method, pattern in rules:
            method = method.strip()
            if method != "*" and not _HTTP_TOKEN.fullmatch(method):
                raise ValueError(f"`{method}` is not an HTTP method")
            method = method.upper()
            compiled.append((method, _compile(pattern)))
            checked.append(EndpointRule(method=method, path=pattern))
        self._rules = tuple(checked)
        self._compiled = tuple(compiled)

    @property
    def rules(self) -> tuple[EndpointRule, ...]:
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def describe(self) -> list[str]:
        return [rule.describe() for rule in self._rules]

    def check(self, method: str, path: str) -> NormalisedPath:
        """The normalised path to forward for ``method`` and ``path`` (no query string).
        Raises PathRefused for a path that is refused on its own, EndpointDenied when rules
        exist and none matches."""
        verdict = self._evaluate(method, path)
        if verdict.outcome == "refused":
            raise PathRefused(verdict.problem)  # type: ignore[arg-type]
        if verdict.path is None:  # not reached: only "refused" comes without a path
            raise PathRefused("bad_character")
        if verdict.outcome == "denied":
            raise EndpointDenied(verdict.path)
        return verdict.path

    def explain(self, method: str, path: str) -> EndpointVerdict:
        """The same decision as :meth:`check`, as a value (for ``explain``-style output)."""
        return self._evaluate(method, path)

    def _evaluate(self, method: str, path: str) -> EndpointVerdict:
        try:
            normalised = normalise_path(path, strict=bool(self._rules))
        except PathRefused as exc:
            return EndpointVerdict(outcome="refused", problem=exc.problem)
        if not self._rules:
            return EndpointVerdict(outcome="allowed", path=normalised)
        for index, (rule_method, pieces) in enumerate(self._compiled):
            if rule_method not in ("*", method):
                continue
            if _match(pieces, normalised.segments):
                return EndpointVerdict(outcome="allowed", rule=index, path=normalised)
        return EndpointVerdict(outcome="denied", path=normalised)


#: Characters that are no ``/`` or ``\\`` to Unicode's compatibility folding (NFKC) but are
#: one to Windows' best-fit mapping (IIS) and look-alike folds.
_SLASHES: Final = frozenset("\u2215\u2044\u29f8\u2216\u29f5\u29f9")


def _check_folded(text: str) -> None:
    """Refuse a segment that an upstream folding Unicode (NFKC, as some frameworks and
    Windows' best-fit mapping do) would read as a slash, a backslash, a dot segment, an
    escape or a path parameter: ``..%EF%BC%8F..%EF%BC%8Fadmin`` (fullwidth solidus) matches
    ``*`` and is ``../../admin`` once folded."""
    folded = unicodedata.normalize("NFKC", text)
    if "/" in folded or any(c in _SLASHES for c in text):
        raise PathRefused("encoded_slash")
    if "\\" in folded:
        raise PathRefused("bad_character")
    if folded.split(";", 1)[0] in (".", ".."):
        raise PathRefused("dot_segment")
    if "%" in folded:
        raise PathRefused("double_encoding")
    if ";" in folded:
        raise PathRefused("path_parameter")


def _holds_dots(segment: bytes) -> bool:
    """Whether a decoded segment is, or holds between the slashes it decoded to, a dot
    segment (also before a ``;``): ``..``, and ``x/../../admin`` from ``x%2F..%2F..%2Fadmin``,
    which an upstream that decodes ``%2F`` before it resolves dot segments serves as
    ``/admin``, outside the route's base path."""
    return any(part.split(b";", 1)[0] in _DOTS for part in segment.split(b"/"))


def normalise_path(path: str, *, strict: bool) -> NormalisedPath:
    """Normalise a request path as the module docstring says; ``strict`` for routes with
    rules. Raises PathRefused."""
    if not path.startswith("/"):
        raise PathRefused("not_absolute")
    if any(ord(c) < 0x21 or ord(c) >= 0x7F for c in path) or any(c in path for c in "\\?#"):
        raise PathRefused("bad_character")
    raw_segments = [segment for segment in path.split("/") if segment]
    trailing = path.endswith("/") and bool(raw_segments)
    decoded: list[str] = []
    forward: list[str] = []
    for raw in raw_segments:
        if _BAD_ESCAPE.search(raw):
            raise PathRefused("bad_escape")
        once = unquote_to_bytes(raw)
        if once in _DOTS or once.split(b";", 1)[0] in _DOTS:
            raise PathRefused("dot_segment")
        if b"\\" in once or any(b < 0x20 or b == 0x7F for b in once):
            raise PathRefused("bad_character")
        if strict:
            if b"/" in once:
                raise PathRefused("encoded_slash")
            if b"%" in once:
                raise PathRefused("double_encoding")
            if b";" in once:
                raise PathRefused("path_parameter")
            try:
                text = once.decode("utf-8")
            except UnicodeDecodeError:
                raise PathRefused("not_utf8") from None
            if not text.isascii():
                _check_folded(text)
            decoded.append(text)
            forward.append(quote(once, safe=_SEGMENT_SAFE))
        else:
            if _holds_dots(once):
                raise PathRefused("dot_segment")
            if b"%" in once:
                twice = unquote_to_bytes(once.decode("latin-1"))
                dots = _holds_dots(twice)
                if dots or b"\\" in twice:
                    raise PathRefused("dot_segment" if dots else "bad_character")
            decoded.append(once.decode("utf-8", "replace"))
            forward.append(raw)
    text = "/" + "/".join(forward) + ("/" if trailing else "")
    return NormalisedPath(segments=tuple(decoded), trailing_slash=trailing, forward=text)


def _compile(pattern: str) -> tuple[_Piece, ...]:
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"endpoint rule path `{pattern}` must start with `/`")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in pattern) or any(
            c in pattern for c in "\\?#%"):
        raise ValueError(f"endpoint rule path `{pattern}` holds a character rules cannot use "
                         "(space, control, \\ ? # %): write paths decoded")
    pieces: list[_Piece] = []
    for segment in (s for s in pattern.split("/") if s):
        if segment in (".", ".."):
            raise ValueError(f"endpoint rule path `{pattern}` has a `.` or `..` segment")
        if segment == "**":
            if pieces and pieces[-1] is _ANY:
                continue  # `**/**` is `**`
            pieces.append(_ANY)
        elif segment == "*":
            pieces.append(_ONE)
        elif "**" in segment:
            raise ValueError(f"endpoint rule path `{pattern}`: `**` must be a whole segment")
        elif "*" in segment:
            pieces.append(_Glob(tuple(segment.split("*"))))
        else:
            pieces.append(segment)
    return tuple(pieces)


def _match(pieces: tuple[_Piece, ...], segments: tuple[str, ...]) -> bool:
    """Whether ``segments`` match ``pieces``: dynamic programming over (piece, segment)
    positions, linear in their product, so no pattern can make matching slow."""
    n = len(segments)
    # reachable[j]: the first i pieces can consume exactly segments[:j]
    reachable = [True] + [False] * n
    for piece in pieces:
        following = [False] * (n + 1)
        if piece is _ANY:
            seen = False
            for j in range(n + 1):
                seen = seen or reachable[j]
                following[j] = seen
        else:
            for j in range(n):
                if reachable[j] and _segment_matches(piece, segments[j]):
                    following[j + 1] = True
        reachable = following
        if not any(reachable):
            return False
    return reachable[n]


def _segment_matches(piece: _Piece, segment: str) -> bool:
    if piece is _ONE:
        return True
    if isinstance(piece, str):
        return piece == segment
    if isinstance(piece, _Glob):
        return piece.matches(segment)
    return False
