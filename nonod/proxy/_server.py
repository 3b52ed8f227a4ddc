"""The per-session proxy server: one listener, one task per connection, h11 for HTTP.

(Over 600 lines on purpose: :class:`ProxyServer` is one forward-proxy request's path, every
check in the order it runs, so that the order can be read in one place; the reverse proxy,
which is a job of its own, is :mod:`._reverse`.)

Shape (after trio's ``serve_listeners``): :func:`serve_proxy` accepts connections and starts one
handler task for each, which owns its stream and closes it in ``finally``. Accept errors that
mean the system is short of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) are logged and retried
after a pause; other accept errors propagate. The handler is the only place that catches
``Exception``: a bug or a surprise on one connection is logged with its traceback, becomes an
``internal_error`` event and closes that connection, and nothing else.

One connection carries one request:

* ``CONNECT host:port``: authenticate, :func:`decide` on the name, resolve (pins first, then the
  special-range check), connect to exactly the checked address, answer ``200``, forward what
  the client sent after the head (h11's ``trailing_data``), then relay bytes both ways.
* ``METHOD http://host[:port]/path``: the same checks, then the request goes upstream with
  hop-by-hop and ``Proxy-*`` headers removed and ``Host`` rebuilt, and the response streams back.
* ``METHOD /<route>/path`` (origin form), when the session has credential routes: handed
  to the reverse proxy (:mod:`nonod.proxy._reverse`), which keeps the connection alive for
  further route requests. Without routes, origin form is refused like anything else.
* Anything else gets an error response; nothing the client sent is echoed in it.

Every phase has its own time limit (:class:`ProxyLimits`); request heads are size-bounded.

Fresh connections: when the proxy relays tunnels in the pump thread (``zero_copy``, a plain
socket listener, no TLS interception), the pump thread accepts, and serves the common CONNECT
itself (:mod:`._fresh`): a plain head (:mod:`._connect_head`) that the checks below allow, to a
pinned name or an address literal, answered and relayed without trio's event loop. The checks
are the same code (:meth:`ProxyServer.fresh_plan`); everything else (another request, any
refusal, an approval, a name that needs a lookup, a head still coming) is handed to a handler
task here with the bytes already read, and served as it always was. Counters and the
connection cap are shared by both; the events of a fresh tunnel reach ``events`` in trio's
thread, in order, within 10 ms (:meth:`ProxyServer.report`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Literal, NoReturn, final

import h11
import msgspec
import structlog
import trio
from structlog.contextvars import bound_contextvars

from .._accept import accept_retrying
from .._cancelled import one_cancelled
from .._descriptors import for_sessions
from ._allowlist import ProxyPolicy
from ._ask import ApprovalAsk, Asker, Verdict
from ._buffers import bound_buffers
from ._connect_head import ESTABLISHED, ConnectHead, parse_connect
from ._decide import Decision, ProxyRequest, Reason, decide
from ._eager import close_now, closing_now, read_now, write_now
from ._events import Exchange, NetworkEvent, ProxyEvent
from ._fresh import address_text, fresh_available, refusal, serve_fresh
from ._http import (
    BadRequest,
    absolute_target,
    check_framing,
    connect_target,
    downstream_response_headers,
    joined,
    path_for_audit,
    proxy_authorized,
    upstream_request_headers,
)
from ._intercept import Interceptor
from ._pump import Moved
from ._relay import relay
from ._resolve import Resolved, ResolveError, Resolver, connect_exactly
from ._reverse import ReverseHandler, RouteTable
from ._share import UidShare
from ._sni import check_first_flight

if TYPE_CHECKING:
    from ..credentials import SessionCA

log = structlog.get_logger()

_READ_SIZE: Final = 1 << 16


class ProxyLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits of one session's proxy. Times are seconds.

    ``max_head_bytes``: largest request (or upstream response) head, else 431;
    ``max_headers``: most header fields in a request, else 431; ``max_connections``: open
    client connections at once, more get 503 (or are dropped under a flood);
    ``head_timeout``: time for the whole request head to arrive (slowloris), else 408;
    ``connect_timeout``: time to connect upstream, else 502; ``idle_timeout``: longest silence
    on a tunnel or a streamed body; ``response_timeout``: time for an upstream's response head
    to a plain-HTTP request, else 504; ``send_timeout``: time to write one of our own
    responses. Credential routes only: ``max_body_bytes``: largest request body forwarded,
    else 413; ``keepalive_timeout``: how long an idle client connection waits for its next
    request; ``max_websockets``: WebSocket connections relayed at once, more get 503
    (``too_many_websockets``); ``max_websocket_message_bytes``: largest WebSocket message
    either side may send (larger ones close that connection with 1009). WebSocket messages are
    held whole in the daemon's memory, so these two bound what one session's WebSockets
    make the daemon hold (about six messages per connection at worst). Approvals only:
    ``approval_timeout``: the longest a request is held for its
    asker's verdict, else 403 (``approval_timeout``).
    """

    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    max_connections: int = 256
    head_timeout: float = 10.0
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0
    response_timeout: float = 300.0
    send_timeout: float = 10.0
    max_body_bytes: int = 32 * 1024 * 1024
    keepalive_timeout: float = 60.0
    max_websockets: int = 8
    max_websocket_message_bytes: int = 4 * 1024 * 1024
    #: Longer than any approval deadline (at most 3600 s): the asker's own timeout decides
    #: and is recorded; this bound only stops a hung asker.
    approval_timeout: float = 3660.0

    def __post_init__(self) -> None:
        if not 1024 <= self.max_head_bytes <= 1 << 20:
            raise ValueError("max_head_bytes must be between 1 KiB and 1 MiB")
        if not 1 <= self.max_headers <= 1000:
            raise ValueError("max_headers must be between 1 and 1000")
        if not 1 <= self.max_connections <= 100_000:
            raise ValueError("max_connections must be between 1 and 100000")
        if not 0 <= self.max_body_bytes <= 1 << 40:
            raise ValueError("max_body_bytes must be between 0 and 1 TiB")
        if not 0 <= self.max_websockets <= 1024:
            raise ValueError("max_websockets must be between 0 and 1024")
        if not 1024 <= self.max_websocket_message_bytes <= 64 << 20:
            raise ValueError("max_websocket_message_bytes must be between 1 KiB and 64 MiB")
        for name in ("head_timeout", "connect_timeout", "idle_timeout", "response_timeout",
                     "send_timeout", "keepalive_timeout", "approval_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


class ProxyStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one proxy since it started (for ``inspect``)."""

    active: int
    accepted: int
    rejected: int
    allowed: int
    denied: int


@final
class ProxyServer:
    """The running proxy, as handed to ``task_status.started()`` by :func:`serve_proxy`."""

    def __init__(
        self,
        *,
        policy: ProxyPolicy,
        resolver: Resolver,
        events: Callable[[ProxyEvent], None],
        limits: ProxyLimits,
        proxy_token: str | None,
        zero_copy: bool,
        routes: RouteTable | None = None,
        asker: Asker | None = None,
        intercept: SessionCA | None = None,
        share: tuple[UidShare, int] | None = None,
    ) -> None:
        """``share``: the daemon's per-uid count (``_share``) and this session's uid."""
        if proxy_token is not None and not proxy_token:
            raise ValueError("proxy_token must not be empty (use None for no authentication)")
        self._policy = policy
        self._resolver = resolver
        self._sink = events
        #: The pump thread's fresh tunnels (:mod:`._fresh`) set this: what it posted is
        #: delivered before any event of this path, so ``events`` keep the order of the
        #: client-visible actions they record.
        self.deliver_fresh: Callable[[], None] | None = None
        self._limits = limits
        self._token = proxy_token
        self._zero_copy = zero_copy
        self._asker = asker
        self._share = share
        #: Whose the upstream connections are in the kernel's view: the session's user on
        #: the system daemon (``_callerfs.made_as``), the daemon's own otherwise.
        self.upstream_owner = None if share is None else share[1]
        self._active = 0
        self._rejecting = 0
        self._accepted = 0
        self._rejected = 0
        self._allowed = 0
        self._denied = 0
        self._next_conn = 0
        self._counts = threading.Lock()  # the pump thread admits and releases too
        self._reverse = None if routes is None else ReverseHandler(
            routes, resolver=resolver, limits=limits, emit=self._emit_route_event, share=share)
        self._intercept = None if intercept is None or self._reverse is None else Interceptor(
            intercept, self._reverse, limits=limits, emit=self._emit_route_event)

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(active=self._active, accepted=self._accepted,
                               rejected=self._rejected, allowed=self._allowed,
                               denied=self._denied)

    # accepting

    def _admit(self, fd: int | None, below: int | None = None) -> tuple[bool | None, int]:
        """Count one accepted connection, its socket ``fd`` (None: not a socket), from either
        thread: serve it (True), refuse it with 503 (False) or just close it (None: under a
        flood, or when ``fd`` lies in the daemon's reserve, ``nonod._descriptors``, whose
        ``watermark()`` the caller may have just read: ``below``); and its number."""
        with self._counts:
            self._accepted += 1
            self._next_conn += 1
            if fd is not None and not (for_sessions(fd) if below is None else fd < below):
                self._rejected += 1
                return None, self._next_conn
            if self._active < self._limits.max_connections and (
                    self._share is None or self._share[0].take(self._share[1])):
                self._active += 1
                return True, self._next_conn
            self._rejected += 1
            if self._rejecting < self._limits.max_connections:
                self._rejecting += 1
                return False, self._next_conn
            return None, self._next_conn

    def release(self, reject: bool = False) -> None:
        """An admitted connection has been closed (from either thread)."""
        with self._counts:
            if reject:
                self._rejecting -= 1
            else:
                self._active -= 1
                if self._share is not None:
                    self._share[0].give(self._share[1])

    async def _serve(self, listener: trio.abc.Listener[trio.abc.Stream],
                     nursery: trio.Nursery) -> NoReturn:
        while True:
            stream = await accept_retrying(listener.accept, event="proxy.accept_backoff")
            fd = None
            if isinstance(stream, trio.SocketStream):
                fd = stream.socket.fileno()
                # Also here, not only on the listener: the program runs before the daemon
                # serves it, and what it connected meanwhile waited in the backlog with the
                # kernel's own buffers (a stalled upload held up to tcp_rmem's maximum).
                bound_buffers(stream.socket)
            admitted, conn = self._admit(fd)
            if admitted is None:
                await trio.aclose_forcefully(stream)  # not even a 503 for this one
                continue
            with bound_contextvars(proxy_conn=conn):
                nursery.start_soon(self._run_handler, stream, not admitted)

    def adopt(self, nursery: trio.Nursery, sock: socket.socket, data: bytes | None,
              accepted: float, admitted: bool, conn: int) -> None:
        """In trio's thread: serve the connection ``sock`` that the pump thread accepted
        (:mod:`._fresh`) in a handler task, as if accepted here; ``data`` is what was read
        of it already and ``accepted`` when it was accepted (``time.monotonic``)."""
        started = trio.current_time() - (time.monotonic() - accepted)
        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            with bound_contextvars(proxy_conn=conn):
                nursery.start_soon(self._run_handler, stream, not admitted, data, started)
        except Exception:  # the proxy is closing (or the socket is unusable): drop it
            log.debug("proxy.handover_dropped", exc_info=True)
            sock.close()
            self.release(not admitted)

    async def _run_handler(self, stream: trio.abc.Stream, reject: bool,
                           data: bytes | None = None, started: float | None = None) -> None:
        """Own one accepted connection: serve it (or refuse it with 503), then close it.
        ``data``: what was read of it already; ``started``: when it was accepted."""
        exchange = Exchange(started=trio.current_time() if started is None else started)
        try:
            if reject:
                await self._refuse(stream, h11.Connection(h11.SERVER), exchange, 503,
                                   Reason.TOO_MANY_CONNECTIONS)
            else:
                with one_cancelled():  # a nursery's group of them, too
                    await self.handle(stream, exchange, data)
        except trio.Cancelled:
            # The session ended with this connection open (its services are cancelled before
            # its audit file is sealed): what was asked, and allowed, still gets its record.
            if not exchange.done and exchange.host:
                allowed = exchange.decision is not None and exchange.decision.allowed
                try:
                    self._emit(exchange, "allow" if allowed else "deny", Reason.SESSION_ENDED,
                               status=exchange.status)
                except Exception:
                    log.exception("proxy.event_failed")
            raise
        except Exception:  # noqa: BLE001 - the per-connection boundary (module docstring)
            self.failed(exchange)
            if not exchange.done:
                try:
                    self._emit(exchange, "deny", Reason.INTERNAL_ERROR, status=0)
                except Exception:
                    log.exception("proxy.event_failed")
        finally:
            self.release(reject)
            await close_now(stream)

    def failed(self, exchange: Exchange) -> None:
        """Log the exception being handled as the failure of ``exchange``'s connection."""
        host = (exchange.host.replace(self._token, "[phantom]") if self._token
                else exchange.host)  # the program chose it: it may hold its token
        log.exception("proxy.connection_failed", mode=exchange.mode, host=host,
                      port=exchange.port)

    # one connection

    async def handle(self, stream: trio.abc.Stream, exchange: Exchange | None = None,
                     data: bytes | None = None) -> None:
        """Serve one client connection (one request) on ``stream``. The caller closes it.
        ``data``: what was read of the stream already (``b""``: its end)."""
        exchange = exchange or Exchange(started=trio.current_time())
        if isinstance(stream, trio.SocketStream) and self._asker is not None:
            with contextlib.suppress(OSError):  # for an approval's ask (see _ask)
                exchange.client_port = int(stream.socket.getpeername()[1])
        limits = self._limits
        # What has already arrived is read at once (a client sends its head right after
        # connecting), without a pass through the event loop.
        if data is None:
            data = read_now(stream, _READ_SIZE)
        if data and await self._plain_connect(stream, data, exchange):
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        if data is not None:
            conn.receive_data(data)
        try:
            with trio.fail_at(exchange.started + limits.head_timeout):
                request = await _next_request(stream, conn)
        except trio.TooSlowError:
            await self._refuse(stream, conn, exchange, 408, Reason.REQUEST_TIMEOUT)
            return
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                await self._refuse(stream, conn, exchange, 431, Reason.HEAD_TOO_LARGE)
            else:
                await self._refuse(stream, conn, exchange, 400, Reason.BAD_REQUEST)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away before asking anything
        if request is None:
            return
        exchange.method = request.method.decode("ascii", "replace")
        if (self._reverse is not None and request.target.startswith(b"/")
                and request.method != b"CONNECT"):
            exchange.done = True  # the reverse proxy reports each of its requests itself
            await self._reverse.serve(stream, conn, request)
            return
        exchange.mode = "connect" if request.method == b"CONNECT" else "http"
        try:
            if len(request.headers) > limits.max_headers:
                raise BadRequest(431, Reason.HEAD_TOO_LARGE)
            if self._token is not None and not proxy_authorized(request.headers, self._token):
                raise BadRequest(407, Reason.AUTH_REQUIRED)
            check_framing(request.headers)
            if request.method == b"CONNECT":
                await self._tunnel(stream, conn, request.target, request.headers, exchange)
            else:
                await self._forward(stream, conn, request, exchange)
        except BadRequest as exc:
            await self._refuse(stream, conn, exchange, exc.status, exc.reason)

    async def _plain_connect(self, stream: trio.abc.Stream, data: bytes,
                             exchange: Exchange) -> bool:
        """Serve a plain CONNECT read without h11 (:mod:`._connect_head`) and return True;
        False, having done nothing, for anything else and for a request the checks before
        the decision would refuse: h11's path then reads ``data`` and answers it. (A refusal
        or an intercepted site gets an h11 connection fed the same bytes.)"""
        head = parse_connect(data, self._limits.max_head_bytes)
        if head is None or len(head.headers) > self._limits.max_headers:
            return False
        if self._token is not None and not proxy_authorized(head.headers, self._token):
            return False
        exchange.method = "CONNECT"
        exchange.mode = "connect"
        try:
            await self._tunnel(stream, head, head.target, head.headers, exchange)
        except BadRequest as exc:
            await self._refuse(stream, head, exchange, exc.status, exc.reason)
        return True

    @property
    def policy(self) -> ProxyPolicy:
        """The policy in force (an approval for the session replaces it)."""
        return self._policy

    def fresh_plan(self, head: ConnectHead) -> tuple[Decision, Resolved] | None:
        """For the pump thread's fresh CONNECT (:mod:`._fresh`): this path's checks up to the
        lookup, in its order, run at once. The decision and the addresses to connect to;
        None where this path must serve the request: a refusal, an approval, an intercepted
        site, a name that needs a lookup."""
        if (len(head.headers) > self._limits.max_headers or (
                self._token is not None and not proxy_authorized(head.headers, self._token))
                or _carries_body(head.headers) or self._intercept is not None):
            return None
        try:
            host, port = connect_target(head.target)
        except BadRequest:
            return None
        decision = decide(ProxyRequest(mode="connect", host=host, port=port), self._policy)
        if not decision.allowed:
            return None
        try:
            resolved = self._resolver.resolve_now(decision.host, port)
        except ResolveError:
            return None
        return None if resolved is None else (decision, resolved)

    async def _decide_and_connect(
        self, stream: trio.abc.Stream, conn: h11.Connection | ConnectHead, exchange: Exchange,
        host: str, port: int,
    ) -> tuple[trio.SocketStream, Decision] | None:
        """The decision, the lookup and the upstream connection; None after a refusal."""
        exchange.host, exchange.port = host, port
        decision = decide(ProxyRequest(mode=exchange.mode, host=host, port=port), self._policy)
        if (decision.reason is Reason.NOT_ALLOWED and self._policy.ask
                and self._asker is not None and port in self._policy.ports):
            decision = await self._ask(self._asker, exchange, decision)
        if (decision.allowed and self._intercept is not None
                and self._intercept.filtered(decision.host)):
            decision = msgspec.structs.replace(decision, allowed=False,
                                               reason=Reason.ENDPOINTS_ONLY)
        exchange.host = decision.host
        exchange.decision = decision
        if not decision.allowed:
            await self._refuse(stream, conn, exchange, 403, decision.reason)
            return None
        try:
            resolved = await self._resolver.resolve(decision.host, port)
        except ResolveError as exc:
            if exc.refused:
                await self._refuse(stream, conn, exchange, 403, exc.reason)
            else:
                status = 504 if exc.reason is Reason.RESOLVE_TIMEOUT else 502
                await self._refuse(stream, conn, exchange, status, exc.reason,
                                   decision="allow")
            return None
        reason = Reason.CONNECT_FAILED
        deadline = trio.current_time() + self._limits.connect_timeout
        for address, target_port in resolved.addresses:
            try:
                upstream = await connect_exactly(address, target_port, deadline=deadline,
                                                 owner=self.upstream_owner)
            except trio.TooSlowError:
                reason = Reason.CONNECT_TIMEOUT
                break
            except OSError:
                continue
            exchange.address = address_text(address, target_port)
            return upstream, decision
        await self._refuse(stream, conn, exchange, 502, reason, decision="allow")
        return None

    async def _ask(self, asker: Asker, exchange: Exchange, refused: Decision) -> Decision:
        """Hold the request while the asker decides on an unlisted target (bounded by
        ``approval_timeout``); a ``session`` verdict widens this proxy's allowlist."""
        ask = ApprovalAsk(mode=exchange.mode, host=refused.host, port=refused.port,
                          address=refused.address, method=exchange.method if
                          exchange.mode == "http" else "", path=exchange.path,
                          client_port=exchange.client_port)
        verdict: Verdict = "timeout"
        with trio.move_on_after(self._limits.approval_timeout):
            try:
                verdict = await asker(ask)
            except Exception:  # an asker failure refuses; it never lets the request through
                log.exception("proxy.asker_failed", host=refused.host, port=refused.port)
                verdict = "deny"
        if verdict in ("deny", "timeout"):
            reason = Reason.APPROVAL_DENIED if verdict == "deny" else Reason.APPROVAL_TIMEOUT
            return msgspec.structs.replace(refused, reason=reason)
        if verdict == "session":
            self._policy = self._policy.with_target(refused.host, refused.address)
        return msgspec.structs.replace(refused, allowed=True, reason=Reason.APPROVED)

    async def _tunnel(self, stream: trio.abc.Stream, conn: h11.Connection | ConnectHead,
                      target: bytes, headers: Sequence[tuple[bytes, bytes]],
                      exchange: Exchange) -> None:
        host, port = connect_target(target)
        if _carries_body(headers):
            raise BadRequest(400, Reason.BAD_REQUEST)  # a CONNECT carries no body
        site = self._intercept.site(host, port) if self._intercept is not None else None
        if self._intercept is not None and site is not None:
            if isinstance(conn, ConnectHead):
                conn = conn.h11()
            exchange.done = True  # the interceptor reports the tunnel and each request itself
            await self._intercept.serve(stream, conn, site, host, port)
            return
        connected = await self._decide_and_connect(stream, conn, exchange, host, port)
        if connected is None:
            return
        upstream, decision = connected
        async with closing_now(upstream):
            if isinstance(conn, ConnectHead):
                head, trailing = ESTABLISHED, conn.trailing
            else:
                event = conn.next_event()
                if not isinstance(event, h11.EndOfMessage):
                    raise BadRequest(400, Reason.BAD_REQUEST)
                head = conn.send(h11.Response(status_code=200, headers=[],
                                              reason=b"Connection established")) or b""
                trailing = conn.trailing_data[0]
            try:
                sent = write_now(stream, head)
                if sent < len(head):
                    with trio.fail_after(self._limits.send_timeout):
                        await stream.send_all(head[sent:])
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                self._emit(exchange, "allow", exchange.reason, status=0)
                return
            exchange.status = 200
            self._emit_open(exchange)
            if decision.address is None and not self._resolver.pinned(decision.host):
                checked = await check_first_flight(stream, upstream, bytes(trailing),
                                                   decision.host, self._limits.idle_timeout)
                if isinstance(checked, Reason):  # another name, plain HTTP, or nothing
                    if checked is Reason.PLAIN_HTTP_IN_TUNNEL:  # a client that reads HTTP
                        await self._answer_inside(stream, checked)
                    self._emit(exchange, "deny", checked, status=200)
                    return
                trailing = checked
            moved = Moved()  # counted even when the session's end cancels the relay
            try:
                if trailing:
                    with trio.fail_after(self._limits.send_timeout):
                        await upstream.send_all(trailing)
                    exchange.bytes_out += len(trailing)
                await relay(stream, upstream, idle_timeout=self._limits.idle_timeout,
                            zero_copy=self._zero_copy, moved=moved)
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the upstream stalled or went away before the relay began
            finally:
                exchange.bytes_out += moved.to_upstream
                exchange.bytes_in += moved.to_client
        self._emit(exchange, "allow", exchange.reason, status=200)

    async def _answer_inside(self, stream: trio.abc.Stream, reason: Reason) -> None:
        """A 403 inside a tunnel whose client spoke HTTP, so that it reads why it ends."""
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # its state, not its bytes
        conn.next_event()
        with trio.move_on_after(self._limits.send_timeout):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(refusal(conn, 403, reason))

    async def _forward(self, stream: trio.abc.Stream, conn: h11.Connection,
                       request: h11.Request, exchange: Exchange) -> None:
        if request.method == b"TRACE":
            raise BadRequest(405, Reason.METHOD_NOT_ALLOWED)
        host, port, target = absolute_target(request.target)
        exchange.path = path_for_audit(target)
        connected = await self._decide_and_connect(stream, conn, exchange, host, port)
        if connected is None:
            return
        upstream, decision = connected
        authority = decision.host if port == 80 else f"{decision.host}:{port}"
        limits = self._limits
        up = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_head_bytes)
        async with upstream:
            try:
                status = await self._exchange_http(stream, conn, upstream, up, request,
                                                   target, authority.encode("ascii"),
                                                   exchange)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                status = exchange.status  # the client went away: nothing more to say
            except (h11.RemoteProtocolError, trio.TooSlowError) as exc:
                # The upstream failed (broke, closed, spoke no HTTP, e.g. TLS only) or stalled.
                if exchange.status == 0 and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    timeout = isinstance(exc, trio.TooSlowError)
                    unread = conn.their_state is h11.SEND_BODY
                    await self._refuse(stream, conn, exchange, 504 if timeout else 502,
                                       Reason.UPSTREAM_TIMEOUT if timeout
                                       else Reason.UPSTREAM_ERROR, decision="allow")
                    if unread:
                        await _drain(stream, limits.send_timeout)
                    return
                status = exchange.status
        self._emit(exchange, "allow", exchange.reason, status=status)

    async def _exchange_http(
        self, client: trio.abc.Stream, conn: h11.Connection, upstream: trio.SocketStream,
        up: h11.Connection, request: h11.Request, target: bytes, authority: bytes,
        exchange: Exchange,
    ) -> int:
        limits = self._limits
        headers = upstream_request_headers(list(request.headers), authority)
        await _to_upstream(upstream, up.send(h11.Request(method=request.method, target=target,
                                                         headers=headers)))
        # The request body, as it comes.
        pending: object | None = None
        while True:
            if conn.they_are_waiting_for_100_continue:
                await client.send_all(conn.send(h11.InformationalResponse(status_code=100,
                                                                          headers=[])))
            try:
                with trio.fail_after(limits.idle_timeout):
                    event = pending if pending is not None else await _next_event(client, conn)
                pending = None
                if isinstance(event, h11.Data):
                    event, pending = joined(conn, event)
            except h11.RemoteProtocolError:
                raise BadRequest(400, Reason.BAD_REQUEST) from None
            except trio.TooSlowError:
                raise BadRequest(408, Reason.REQUEST_TIMEOUT) from None
            if isinstance(event, h11.Data):
                await _to_upstream(upstream, up.send(h11.Data(data=event.data)))
                exchange.bytes_out += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                await _to_upstream(upstream, up.send(h11.EndOfMessage()))
                break
            else:
                raise BadRequest(400, Reason.BAD_REQUEST)  # the client closed mid-body
        # The response head, then its body, streamed.
        with trio.fail_after(limits.response_timeout):
            while True:
                event = await _from_upstream(upstream, up)
                if isinstance(event, h11.Response):
                    break
                if not isinstance(event, h11.InformationalResponse):
                    raise h11.RemoteProtocolError("upstream closed without a response")
        response = h11.Response(status_code=event.status_code, reason=event.reason,
                                headers=downstream_response_headers(list(event.headers)))
        with trio.fail_after(limits.send_timeout):
            await client.send_all(conn.send(response) or b"")
        exchange.status = event.status_code
        pending = None
        while True:
            with trio.fail_after(limits.idle_timeout):
                event = pending if pending is not None else await _from_upstream(upstream, up)
            pending = None
            if isinstance(event, h11.Data):
                event, pending = joined(up, event)
                with trio.fail_after(limits.idle_timeout):
                    await client.send_all(conn.send(h11.Data(data=event.data)) or b"")
                exchange.bytes_in += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                await client.send_all(conn.send(h11.EndOfMessage()) or b"")
                return exchange.status
            else:
                raise h11.RemoteProtocolError("upstream closed in the middle of a response")

    # answers and events

    async def _refuse(self, stream: trio.abc.Stream, conn: h11.Connection | ConnectHead,
                      exchange: Exchange, status: int, reason: Reason,
                      decision: Literal["allow", "deny"] = "deny") -> None:
        sent = 0
        data = refusal(conn, status, reason)
        try:
            written = write_now(stream, data)
        except trio.BrokenResourceError:
            data, written = b"", 0  # the client went away; it gets no answer
        if data and written == len(data):
            # Its event before this task yields: the program may act on the answer at once
            # (a refused open, whose fs_denied event the daemon's reader writes when it
            # runs), and the session's events keep the order it saw (docs/audit.md).
            self._emit(exchange, decision, reason, status=status)
            await trio.lowlevel.checkpoint()
            return
        if data:
            with trio.move_on_after(self._limits.send_timeout):
                try:
                    await stream.send_all(data[written:])
                    sent = status
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client went away; it gets no answer
        self._emit(exchange, decision, reason, status=sent)

    def _events(self, event: ProxyEvent) -> None:
        if self.deliver_fresh is not None:
            self.deliver_fresh()
        self._sink(event)

    def _count(self, event: ProxyEvent) -> None:
        if isinstance(event, NetworkEvent):
            if event.decision == "allow":
                self._allowed += 1
            else:
                self._denied += 1

    def _emit_route_event(self, event: ProxyEvent) -> None:
        self._count(event)
        self._events(event)

    def report(self, event: NetworkEvent) -> None:
        """In trio's thread: an event of a tunnel the pump thread served (:mod:`._fresh`)
        goes to ``events``, counted as this path counts its own."""
        if event.stage == "close":
            self._count(event)
        self._sink(event)

    def _emit_open(self, exchange: Exchange) -> None:
        self._events(exchange.event("allow", exchange.reason, 200, "open"))

    def _emit(self, exchange: Exchange, decision: Literal["allow", "deny"], reason: Reason,
              *, status: int) -> None:
        if decision == "allow":
            self._allowed += 1
        else:
            self._denied += 1
        self._events(exchange.close(decision, reason, status))


def _carries_body(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") and value != b"0"
               for name, value in headers)


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection) -> object:
    """The next h11 event, reading from ``stream`` only when h11 needs data."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(_READ_SIZE)))


async def _to_upstream(upstream: trio.abc.Stream, data: bytes | None) -> None:
    """Send to the upstream; its failure is the upstream's (h11.RemoteProtocolError, which
    the caller answers with 502), never taken for the client going away."""
    try:
        await upstream.send_all(data or b"")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise h11.RemoteProtocolError("the upstream connection broke") from None


async def _from_upstream(upstream: trio.abc.Stream, up: h11.Connection) -> object:
    """The upstream's next h11 event; a broken connection is the upstream's failure."""
    try:
        return await _next_event(upstream, up)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise h11.RemoteProtocolError("the upstream connection broke") from None


async def _drain(stream: trio.abc.Stream, timeout: float) -> None:
    """After answering a client whose request body was still coming: read and discard what it
    sends, for at most ``timeout``, so that closing the connection with unread data (a reset)
    cannot destroy the answer before the client has read it."""
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(_READ_SIZE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _next_request(stream: trio.abc.Stream, conn: h11.Connection) -> h11.Request | None:
    """The connection's request."""
    event = await _next_event(stream, conn)
    if isinstance(event, h11.Request):
        return event
    if isinstance(event, h11.ConnectionClosed):
        return None
    raise h11.RemoteProtocolError("expected a request")



async def serve_proxy(
    listener: trio.abc.Listener[trio.abc.Stream],
    *,
    policy: ProxyPolicy,
    resolver: Resolver,
    events: Callable[[ProxyEvent], None],
    limits: ProxyLimits = ProxyLimits(),  # noqa: B008 - frozen, immutable
    proxy_token: str | None = None,
    zero_copy: bool = True,
    routes: RouteTable | None = None,
    asker: Asker | None = None,
    intercept: SessionCA | None = None,
    fresh_connects: bool = True,
    share: tuple[UidShare, int] | None = None,
    task_status: trio.TaskStatus[ProxyServer] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve one session's proxy on ``listener`` until cancelled; the listener is closed on
    the way out, and every open connection with it.

    ``events`` is called (synchronously; it must not block) with a NetworkEvent for every
    decision. With ``proxy_token`` set, every request must carry ``Proxy-Authorization``
    with it (``Basic base64(nono:<token>)`` or ``Bearer <token>``), else it gets 407.
    ``zero_copy=False`` turns splice(2) off (for benchmarks). ``routes`` is the session's
    credential route table: origin-form requests (``/<route>/...``) are then served by the
    reverse proxy, authenticated by the phantom token instead of ``Proxy-Authorization``.
    ``events`` then also receives CredentialInjected events. ``asker`` is awaited, with the
    request held, for a target the policy does not list when the policy says ``ask``
    (``nonod.proxy._ask``). ``task_status.started()`` gets the ProxyServer
    (``statistics()``) once the proxy is accepting. ``intercept`` is the session's CA when
    it intercepts TLS: a CONNECT to the upstream of one of ``routes`` whose host the CA
    covers is then served by :mod:`nonod.proxy._intercept` instead of a blind tunnel.
    ``fresh_connects=False`` keeps the pump thread from serving fresh CONNECTs (see the
    module docstring): every connection is then accepted and served here (for tests that
    compare both paths). ``share`` (the system daemon's) also counts each served
    connection against the session's uid's share of all proxies' connections (``_share``).
    """
    server = ProxyServer(policy=policy, resolver=resolver, events=events, limits=limits,
                         proxy_token=proxy_token, zero_copy=zero_copy, routes=routes,
                         asker=asker, intercept=intercept, share=share)
    fresh = fresh_connects and zero_copy and intercept is None and fresh_available()
    if isinstance(listener, trio.SocketListener):
        bound_buffers(listener.socket)
    async with listener, trio.open_nursery() as nursery:
        task_status.started(server)
        if fresh and isinstance(listener, trio.SocketListener):
            await serve_fresh(server, listener.socket.fileno(), nursery)
        else:
            await server._serve(listener, nursery)
