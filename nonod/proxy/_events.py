"""The audit record of every proxy decision."""

from __future__ import annotations

from typing import Literal

import msgspec
import structlog

log = structlog.get_logger()


class NetworkEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
                   tag="network"):
    """One decision of a session's proxy, handed to the session's ``events`` callback.

    ``mode`` is ``connect`` (a CONNECT tunnel) or ``http`` (a plain-HTTP absolute-URI
    request); ``decision`` is ``allow`` or ``deny``; ``host`` is the normalised target (empty
    when the request could not be parsed that far); ``reason`` is a stable code
    (``allowed_host``, ``not_allowed``, ``loopback``, ``connect_timeout``...); ``status`` is
    the HTTP status the client got (0 if the connection was dropped without one).

    ``bytes_out`` counts bytes from the sandbox to the upstream, ``bytes_in`` the other way,
    payload only (not our own response heads). An allowed tunnel produces two events: one with
    ``stage="open"`` when the tunnel is up, one with ``stage="close"`` with the totals; every
    other request produces one ``close`` event. ``method`` and ``path`` are set for plain-HTTP
    requests; ``path`` never carries the query string. ``address`` is the address connected
    to. No field ever holds a header value or a credential.
    """

    mode: Literal["connect", "http"]
    decision: Literal["allow", "deny"]
    host: str
    port: int
    reason: str
    status: int
    bytes_in: int = 0
    bytes_out: int = 0
    duration_ms: float = 0.0
    stage: Literal["open", "close"] = "close"
    method: str = ""
    path: str = ""
    address: str = ""


def log_network_event(event: NetworkEvent) -> None:
    """An ``events`` callback that writes each event to the operational log (structlog).

    For use until the session's audit stream takes the events; it never raises.
    """
    fields = msgspec.structs.asdict(event)
    fields.pop("type", None)
    log.info("proxy.decision", **fields)
