"""Asking about a destination the allowlist does not name (profiles with approvals).

The proxy never decides an unlisted target on its own when its policy says ``ask``: it holds
the client's request and awaits the session's *asker*, an async callback injected by whoever
runs the proxy (the daemon: ``nonod.approvals``). The proxy imports nothing of the daemon; the
asker sees only an :class:`ApprovalAsk` (no header, no body) and answers with a
:data:`Verdict`. The proxy bounds the wait itself (``ProxyLimits.approval_timeout``), so a
hung asker still ends in a refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, final

import msgspec

#: ``once``: this request only; ``session``: this request and every later one to the same
#: host for the session's life; ``deny``: refused (403); ``timeout``: nobody answered in time
#: (refused like ``deny``, recorded apart).
Verdict = Literal["once", "session", "deny", "timeout"]


@final
class ApprovalAsk(msgspec.Struct, frozen=True, kw_only=True):
    """What the proxy knows of a held request: the normalised ``host`` (an A-label name, or
    an address with IPv6 in brackets), ``address`` when the target was an IP literal, the
    port, for plain HTTP the method and the path without its query string, and
    ``client_port``, the client's own TCP port (0: unknown), by which the asker may find
    the process that asked."""

    mode: Literal["connect", "http"]
    host: str
    port: int
    address: str | None = None
    method: str = ""
    path: str = ""
    client_port: int = 0


#: The callback a proxy with ``ask`` in its policy awaits for each unlisted target.
Asker = Callable[[ApprovalAsk], Awaitable[Verdict]]
