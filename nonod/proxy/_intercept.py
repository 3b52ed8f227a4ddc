"""TLS interception of chosen hosts: a CONNECT to the upstream of an intercepted credential
route is answered by the proxy itself (``docs/network.md``, "TLS interception").

The proxy answers ``200``, then completes TLS with the client as that host, presenting a leaf
of the session's own CA (:class:`nonod.credentials.SessionCA`), which only this session's
trust bundle holds. The requests inside are served by the route's reverse-proxy path
(:meth:`ReverseHandler.serve` with ``site``): endpoint rules, the real credential injected
(whatever the program put in the route's header, typically its phantom token, is replaced),
responses scrubbed, and a new, normally verified TLS connection to the real upstream. Every
request is one ``intercept`` event, like a route request.

A client that refuses the session's certificate (it pins keys, or ignores the session's
trust bundle) ends the tunnel there: nothing is forwarded, and a ``connect`` event with reason
``client_tls_rejected`` says so. Every host that is not intercepted stays a blind tunnel.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, final

import h11
import structlog
import trio

from .._cancelled import one_cancelled
from ._decide import Reason
from ._events import NetworkEvent, ProxyEvent
from ._http import BadRequest
from ._replayed import Replayed

if TYPE_CHECKING:
    from ..credentials import SessionCA
    from ._reverse import ReverseHandler
    from ._server import ProxyLimits

log = structlog.get_logger()

_READ_SIZE: Final = 1 << 16


@final
class Interceptor:
    """The intercepted hosts of one session's proxy and what serves them."""

    def __init__(self, ca: SessionCA, reverse: ReverseHandler, *, limits: ProxyLimits,
                 emit: Callable[[ProxyEvent], None]) -> None:
        self._ca = ca
        self._reverse = reverse
        self._limits = limits
        self._emit = emit
        served = [route for route in reverse.table.routes()
                  if route.scheme == "https" and route.host in ca.hosts]
        self._sites = {(route.host, route.port): route.name for route in served}
        self._filtered = frozenset(route.host for route in served if route.filter_only)

    def filtered(self, host: str) -> bool:
        """Whether ``host`` (normalised) is reached only through its endpoint rules: the host
        of an ``allow_domain`` entry with ``endpoints``. Any other way to it (another port, a
        plain-HTTP request) would pass unfiltered, so the proxy refuses it."""
        return host in self._filtered

    def site(self, host: str, port: int) -> str | None:
        """The route that intercepts ``host:port``, or None (a blind tunnel)."""
        return self._sites.get((host.lower().rstrip("."), port))

    async def serve(self, stream: trio.abc.Stream, conn: h11.Connection, site: str,
                    host: str, port: int) -> None:
        """Answer the CONNECT (h11 has read its head), take over the tunnel as ``host`` and
        serve the requests inside on route ``site``. The caller owns and closes ``stream``.
        The tunnel gets its own record whatever ends it: the session's end too (before, a
        tunnel cut by it had none, only the records of the requests it carried)."""
        started = trio.current_time()
        host = host.lower().rstrip(".")
        try:
            with one_cancelled():  # a nursery's group of them, too
                decision, reason, status = await self._serve(stream, conn, site, host, port)
        except trio.Cancelled:
            self._event(host, port, started, "allow", Reason.SESSION_ENDED, 200)
            raise
        self._event(host, port, started, decision, reason, status)

    async def _serve(self, stream: trio.abc.Stream, conn: h11.Connection, site: str,
                     host: str, port: int
                     ) -> tuple[Literal["allow", "deny"], str, int]:
        """:meth:`serve`'s work; the tunnel's decision, reason and status for its record."""
        if not isinstance(conn.next_event(), h11.EndOfMessage):
            raise BadRequest(400, Reason.BAD_REQUEST)
        limits = self._limits
        try:
            with trio.fail_after(limits.send_timeout):
                await stream.send_all(conn.send(h11.Response(
                    status_code=200, headers=[], reason=b"Connection established")) or b"")
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return "allow", "intercepted", 0  # the client never took its 200
        trailing, _ = conn.trailing_data
        tls = trio.SSLStream(Replayed(stream, bytes(trailing)), self._ca.server_context(host),
                             server_side=True, https_compatible=True)
        try:
            with trio.fail_after(limits.head_timeout):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            cause = exc.__cause__ or exc
            log.info("proxy.intercept_client_rejected", host=host, port=port,
                     problem=type(cause).__name__, detail=str(cause)[:200])
            return "deny", "client_tls_rejected", 200
        inner = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        client = _Gathered(tls)
        try:
            with trio.fail_after(limits.head_timeout):
                request = await _next_request(client, inner)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                h11.RemoteProtocolError):
            request = None
        if request is not None:
            await self._reverse.serve(client, inner, request, site=site)
        return "allow", "intercepted", 200

    def _event(self, host: str, port: int, started: float,
               decision: Literal["allow", "deny"], reason: str, status: int) -> None:
        elapsed = (trio.current_time() - started) * 1000
        self._emit(NetworkEvent(mode="connect", decision=decision, host=host, port=port,
                                reason=reason, status=status, duration_ms=round(elapsed, 3),
                                route=self.site(host, port) or ""))


@final
class _Gathered(trio.abc.Stream):
    """The program's side of an intercepted tunnel, where each read returns every TLS record
    that has arrived (up to the size asked) rather than one.

    ``trio.SSLStream`` decrypts one record per ``receive_some``. A program that cut its
    request body into one-byte records (23 bytes on the wire each, all sent in one write)
    made the route's reverse proxy read, parse and send upstream one byte at a time: 92 us
    of the daemon's event loop per record, every session's proxy waiting behind it (the
    twentieth red-team pass). Here, after trio's read, the records already in its incoming
    buffer are decrypted too, without waiting, in the same call. Relies on
    ``SSLStream._ssl_object`` and ``_incoming`` (trio 0.2x; mypy checks the names): the
    same ``SSLObject.read`` trio's own read makes, on bytes trio has already received;
    anything OpenSSL writes meanwhile (a TLS 1.3 key update) goes out with trio's next
    operation on the stream, as trio sends it after its own reads."""

    def __init__(self, tls: trio.SSLStream[Replayed]) -> None:
        self._tls = tls

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._tls.receive_some(max_bytes)
        limit = _READ_SIZE if max_bytes is None else max_bytes
        if not data or len(data) >= limit:
            return data
        pieces, have = [data], len(data)
        tls, incoming = self._tls._ssl_object, self._tls._incoming
        while have < limit and (incoming.pending or tls.pending()):
            try:
                more = tls.read(limit - have)
            except ssl.SSLError:  # a record not whole yet, or the end: trio's next read says
                break
            if not more:
                break
            pieces.append(more)
            have += len(more)
        return data if len(pieces) == 1 else b"".join(pieces)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._tls.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._tls.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._tls.aclose()


async def _next_request(stream: trio.abc.Stream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is not h11.NEED_DATA:
            return None
        conn.receive_data(bytes(await stream.receive_some(_READ_SIZE)))


__all__ = ["Interceptor"]
