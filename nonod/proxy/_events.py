"""The audit record of every proxy decision, and what is known of a request until then."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, final

import msgspec
import structlog
import trio

from ._decide import Decision, Reason

log = structlog.get_logger()


class NetworkEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
                   tag="network"):
    """One decision of a session's proxy, handed to the session's ``events`` callback.

    ``mode`` is ``connect`` (a CONNECT tunnel), ``http`` (a plain-HTTP absolute-URI
    request), ``reverse`` (a request on a credential route), ``websocket`` (an upgraded
    credential route) or ``intercept`` (a request inside an intercepted TLS tunnel, served by
    its host's credential route); ``decision`` is ``allow`` or ``deny``; ``host`` is the normalised
    target (empty when the request could not be parsed that far); ``reason`` is a stable code
    (``allowed_host``, ``not_allowed``, ``loopback``, ``connect_timeout``...); ``status`` is
    the HTTP status the client got (0 if the connection was dropped without one).

    ``bytes_out`` counts bytes from the sandbox to the upstream, ``bytes_in`` the other way,
    payload only (not our own response heads). An allowed tunnel produces two events: one with
    ``stage="open"`` when the tunnel is up, one with ``stage="close"`` with the totals; every
    other request produces one ``close`` event. ``method`` and ``path`` are set for plain-HTTP
    requests; ``path`` never carries the query string. ``address`` is the address connected
    to. On credential routes, ``route`` names the route, ``host``/``port`` are its upstream,
    ``path`` is the path after the route prefix (a phantom token in it is masked), and
    ``auth`` is how the phantom token check went (``ok``, ``missing``, ``invalid``, or empty
    when it was not reached). No field ever holds a header value, a phantom token or a
    credential.
    """

    mode: Literal["connect", "http", "reverse", "websocket", "intercept"]
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
    route: str = ""
    auth: Literal["", "ok", "missing", "invalid"] = ""


class CredentialInjected(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
                         tag="credential_injected"):
    """The proxy put a real credential into a request on ``route``. Names only: ``credential``
    is the reference (``gemini``, ``env://GITHUB_TOKEN``), ``source`` the kind of store
    (``keychain``, ``env``, ``file``, ``op``, ``systemd``), ``into`` where it went (a header
    name, ``query:<name>`` or ``path``). There is no value field."""

    route: str
    credential: str
    source: str
    into: str = ""


#: What a proxy hands to its ``events`` callback.
ProxyEvent = NetworkEvent | CredentialInjected


def log_network_event(event: ProxyEvent) -> None:
    """An ``events`` callback that writes each event to the operational log (structlog).

    For use until the session's audit stream takes the events; it never raises.
    """
    fields = msgspec.structs.asdict(event)
    fields.pop("type", None)
    if isinstance(event, CredentialInjected):
        log.info("proxy.credential_injected", **fields)
    else:
        log.info("proxy.decision", **fields)


_replace = msgspec.structs.replace


def open_template(decision: Decision, address: str) -> NetworkEvent:
    """The open event of an allowed CONNECT tunnel to ``address`` (``address:port``, as
    :func:`._fresh.address_text` writes it) for ``decision``, as :meth:`Exchange.event` makes
    it, but for the time (0): kept with a plan, each request's own is a copy with its time
    (:meth:`Exchange.opened`)."""
    return NetworkEvent(mode="connect", decision="allow", host=decision.host,
                        port=decision.port, reason=decision.reason._value_, status=200,
                        stage="open", address=address)


@final
class Exchange:
    """What is known so far about one connection's request, for its audit event."""

    # What nothing has set yet: immutable class-level defaults, which an assignment shadows
    # per instance (one request's constructor then runs two lines, not fourteen).
    mode: Literal["connect", "http"] = "http"
    host = ""
    port = 0
    method = ""
    path = ""
    address = ""
    status = 0
    bytes_in = 0
    bytes_out = 0
    decision: Decision | None = None
    done = False
    #: The client's own TCP port (it names the client's socket; for approvals).
    client_port = 0

    def __init__(self, *, started: float, clock: Callable[[], float] = trio.current_time
                 ) -> None:
        self.started = started
        self.clock = clock

    @property
    def reason(self) -> Reason:
        return self.decision.reason if self.decision is not None else Reason.INTERNAL_ERROR

    def close(self, decision: Literal["allow", "deny"], reason: Reason, status: int
              ) -> NetworkEvent:
        """The request's final event (it is then done)."""
        self.done = True
        return self.event(decision, reason, status, "close")

    def opened(self, template: NetworkEvent) -> NetworkEvent:
        """``event("allow", self.reason, 200, "open")`` from ``template``, the tunnel's open
        event made by :func:`open_template` from the decision and address this exchange
        holds: only the time is new (a copy with one field set, not a record of fifteen)."""
        elapsed = (self.clock() - self.started) * 1000
        return _replace(template, duration_ms=round(elapsed * 1000) / 1000)

    def closed(self, opened: NetworkEvent, status: int) -> NetworkEvent:
        """``close("allow", self.reason, status)`` from ``opened`` (what :meth:`opened`
        returned): the time, the status and the byte counts are new."""
        self.done = True
        elapsed = (self.clock() - self.started) * 1000
        return _replace(opened, stage="close", status=status, bytes_in=self.bytes_in,
                        bytes_out=self.bytes_out, duration_ms=round(elapsed * 1000) / 1000)

    def event(self, decision: Literal["allow", "deny"], reason: Reason, status: int,
              stage: Literal["open", "close"]) -> NetworkEvent:
        elapsed = (self.clock() - self.started) * 1000
        # (to the microsecond: ``round(elapsed, 3)`` goes through a decimal string)
        return NetworkEvent(
            mode=self.mode, decision=decision, host=self.host, port=self.port,
            reason=reason._value_, status=status, bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, duration_ms=round(elapsed * 1000) / 1000, stage=stage,
            method=self.method if self.mode == "http" else "", path=self.path,
            address=self.address,
        )
