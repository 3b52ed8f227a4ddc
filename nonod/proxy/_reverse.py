"""The reverse proxy of credential routes: ``http://127.0.0.1:<port>/<route>/<path>``.

(Over 600 lines on purpose: :class:`ReverseHandler` is one request's seven steps, below, in
the order they run, each one's refusal next to it; the pieces that stand alone (rules,
scrubbing, injection, WebSocket relay) are modules of their own.)

One session's :class:`RouteTable` (its routes, their secrets, its phantom token, a TLS context
per route) is handed to ``serve_proxy(..., routes=table)``. Origin-form requests on that
session's listener then come here instead of being refused. Each request, in order:

1. the route is the first path segment, matched whole (``/github.evil/x`` is not ``github``);
   unknown: 404;
2. the request must carry the session's phantom token where the route expects it
   (:func:`check_phantom`); missing or wrong (a token of another session is just wrong): 401;
3. the path is normalised and checked by the route's :class:`EndpointRules` (the one
   matcher): a refused path 400, no matching rule 403 with a JSON body naming the rule set;
4. no secret for the route: 503, and nothing of the request goes anywhere;
5. a declared body over ``max_body_bytes``: 413 (a chunked body is counted as it streams);
6. the upstream is resolved through the session's Resolver (operator pins included),
   connected, TLS-verified (system roots, the daemon's ``extra_ca_file``, the route's
   ``tls_ca``; SNI is the upstream host), and the request goes out with the phantom token and
   every proxy artefact removed and the real credential injected;
7. the response streams back as it arrives (chunked, SSE), never buffered, with every header
   value and the body scrubbed of the real secret (:class:`Scrubber`); redirects are
   returned as they are, never followed. ``Upgrade: websocket`` goes to
   :mod:`nonod.proxy._websocket` instead.

Connections are kept alive on both sides: the client connection serves request after
request (until either side says ``close``), and each client connection keeps its own
upstream connection per route (nothing is shared between connections or sessions). Each
request ends with one :class:`NetworkEvent` (mode ``reverse``); each forwarded request also
gives a :class:`CredentialInjected` event. No URL after injection, no secret and no phantom
token ever reaches an event, a log line or an error body.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import select
import ssl
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, cast, final

import h11
import msgspec
import trio

from .._cancelled import one_cancelled
from ..credentials import (
    ROUTE_NAME,
    EndpointDenied,
    EndpointRules,
    LoadedRoute,
    PathRefused,
    PhantomToken,
    Route,
    Scrubber,
    Secret,
    injected_parts,
    scrub_replacements,
)
from ..errors import NonoError
from ._bodyoverride import (
    BodyOverrideWatch,
    DecodedBodyWatch,
    UnreadableBody,
    deflate_coded,
    parsed_for_fields,
)
from ._bulk import pump
from ._events import CredentialInjected, NetworkEvent, ProxyEvent
from ._http import BadRequest, check_framing, joined
from ._inject import (
    AuthOutcome,
    BadTarget,
    RouteTarget,
    UpstreamHead,
    check_phantom,
    content_decoding,
    downstream_head,
    event_path,
    is_websocket,
    overrides_request,
    split_target,
    upstream_head,
)
from ._offload import Seats, Stop, run_stoppable
from ._pump import Moved
from ._resolve import ResolveError, Resolver, connect_exactly
from ._tls import TlsStream, receive_into
from ._vectored import send_pieces, write_pieces

if TYPE_CHECKING:
    from ._server import ProxyLimits
    from ._share import UidShare

_READ_SIZE: Final = 1 << 16
#: A response body of at least this many bytes with a Content-Length is read past h11, in
#: pieces of up to _BODY_READ bytes, each whatever has arrived (see
#: ReverseHandler._relay_sized_body): few, large scrubs and writes to the program.
_SIZED_BODY_MIN: Final = 1 << 18
_BODY_READ: Final = 1 << 20
_INFLATE_STEP: Final = 1 << 16
#: Large bodies moved by worker threads at once, in this process (every session's proxy):
#: each is a thread with two _BODY_READ buffers (ciphertext read, plaintext decrypted). More
#: go by the event loop's tasks meanwhile.
BODY_WORKERS: Final = Seats(32)
_PHRASES: Final = {
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class RouteConfigError(NonoError):
    """A route's TLS material (``tls_ca``, client certificate, ``extra_ca_file``) cannot be
    loaded."""

    code = "proxy.route_config"


@final
class _Entry:
    """One route of a table, ready to serve."""

    __slots__ = ("error_code", "route", "rules", "scrubber", "secret", "ssl", "table")

    def __init__(self, loaded: LoadedRoute, token: PhantomToken, ssl_context: ssl.SSLContext | None
                 ) -> None:
        self.route: Route = loaded.route
        self.secret: Secret | None = loaded.secret
        self.error_code = loaded.error.code if loaded.error is not None else ""
        self.rules: EndpointRules = loaded.route.rules()
        self.ssl = ssl_context
        self.table = (scrub_replacements(loaded.secret, token,
                                         injected_parts(loaded.route, loaded.secret))
                      if loaded.secret is not None else None)
        self.scrubber = Scrubber(self.table) if self.table is not None else None

    def new_scrubber(self) -> Scrubber | None:
        """A scrubber for one response (or one WebSocket) of this route."""
        return self.scrubber.fresh() if self.scrubber is not None else None


@final
class RouteTable:
    """The credential routes of one session, with their secrets and the session's phantom
    token. Build one per session, after :func:`nonod.credentials.load_route_secrets`.

    ``extra_ca_file`` is the daemon's ``[network] extra_ca_file`` (PEM), trusted for every
    route in addition to the system roots (``system_roots=False`` leaves those out, for tests
    that must prove a private CA is what made verification pass). ``tls_files``: the bytes of
    the routes' own TLS files by path, read beforehand as the caller (the daemon passes them:
    a route's paths come from the caller's profile); a path not in it is loaded by name.
    Building loads certificates (blocking, a few milliseconds); raises RouteConfigError when
    one cannot be loaded.
    """

    __slots__ = ("_entries", "_token")

    def __init__(self, routes: Sequence[LoadedRoute], *, token: PhantomToken,
                 extra_ca_file: str | None = None, system_roots: bool = True,
                 tls_files: Mapping[str, bytes] | None = None) -> None:
        if not isinstance(token, PhantomToken):
            raise TypeError("token must be a PhantomToken")
        self._token = token
        self._entries: dict[str, _Entry] = {}
        for loaded in routes:
            name = loaded.route.name
            if name in self._entries:
                raise ValueError(f"route `{name}` is defined twice")
            context = None
            if loaded.route.scheme == "https":
                context = _client_context(loaded.route, extra_ca_file, system_roots,
                                          tls_files or {})
            self._entries[name] = _Entry(loaded, token, context)

    @property
    def token(self) -> PhantomToken:
        return self._token

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def routes(self) -> tuple[Route, ...]:
        return tuple(entry.route for entry in self._entries.values())

    def get(self, name: str) -> _Entry | None:
        return self._entries.get(name)

    def forget(self) -> None:
        """Let go of every route and its secret (the session ended): whatever still holds
        the table holds no real credential."""
        self._entries = {}

    def __repr__(self) -> str:
        return f"RouteTable({', '.join(self._entries)})"


def _client_context(route: Route, extra_ca_file: str | None, system_roots: bool,
                    tls_files: Mapping[str, bytes]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if system_roots:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if extra_ca_file:
            context.load_verify_locations(cafile=extra_ca_file)
        if route.tls_ca and route.tls_ca in tls_files:
            context.load_verify_locations(cadata=tls_files[route.tls_ca].decode("latin-1"))
        elif route.tls_ca:
            context.load_verify_locations(cafile=route.tls_ca)
        if route.tls_client_cert is not None and route.tls_client_key is not None:
            with _as_file(tls_files.get(route.tls_client_cert)) as cert, \
                    _as_file(tls_files.get(route.tls_client_key)) as key:
                context.load_cert_chain(cert or route.tls_client_cert,
                                        key or route.tls_client_key)
    except (OSError, ssl.SSLError) as exc:
        raise RouteConfigError(f"route {route.name}: its TLS files cannot be loaded "
                               f"({type(exc).__name__})",
                               hint="check tls_ca / tls_client_cert and [network] "
                               "extra_ca_file") from exc
    context.set_alpn_protocols(["http/1.1"])
    return context


@contextlib.contextmanager
def _as_file(data: bytes | None) -> Iterator[str | None]:
    """A name OpenSSL can open that holds ``data`` (an unlinked memory file), or None."""
    if data is None:
        yield None
        return
    fd = os.memfd_create("nonod-route-tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


# failures, by who caused them


class _Refusal(Exception):
    """Answer the program with ``status`` and a JSON body; ``reason`` is the audit code."""

    def __init__(self, status: int, reason: str, message: str, *,
                 decision: Literal["allow", "deny"] = "deny",
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.message = message
        self.decision: Literal["allow", "deny"] = decision
        self.extra = extra or {}


class _UpstreamFailed(Exception):
    def __init__(self, *, timeout: bool) -> None:
        super().__init__("upstream timeout" if timeout else "upstream failed")
        self.timeout = timeout


class _ClientGone(Exception):
    """The program closed or broke its connection, or stalled past a limit."""


@final
class _Upstream:
    __slots__ = ("address", "conn", "max_head", "read_past", "stream")

    def __init__(self, stream: TlsStream | trio.SocketStream, address: str, max_head: int
                 ) -> None:
        self.stream = stream
        self.address = address
        self.max_head = max_head
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        #: The last response's body was read past h11, whole, on a connection that stays
        #: open (h11 still waits for that body: a fresh h11 takes over for the next cycle).
        self.read_past = False

    def exchange_done(self) -> bool:
        """Whether the request and its response both ended cleanly (the connection can be
        kept for another)."""
        return self.read_past or (self.conn.our_state is h11.DONE
                                  and self.conn.their_state is h11.DONE)

    def next_cycle(self) -> None:
        if self.read_past:
            self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.max_head)
            self.read_past = False
        else:
            self.conn.start_next_cycle()

    def idle_and_open(self) -> bool:
        """Whether this kept-alive connection can carry another request: h11 is idle and
        the socket has nothing to read (an idle HTTP connection that is readable has been
        closed by the server, or sent something nobody asked for). Bytes already read past
        the last response, by h11 or by the TLS layer, count as sent."""
        if self.conn.our_state is not h11.IDLE or self.conn.their_state is not h11.IDLE:
            return False
        if self.conn.trailing_data[0]:
            return False
        stream = self.stream
        if isinstance(stream, TlsStream) and stream.buffered():
            return False
        poller = select.poll()
        poller.register(stream.socket.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        return not poller.poll(0)


@final
class _Record:
    """What is known about one request, for its event."""

    __slots__ = ("address", "auth", "bytes_in", "bytes_out", "done", "host", "method",
                 "mode", "path", "port", "route", "started", "status")

    def __init__(self, method: bytes) -> None:
        self.started = trio.current_time()
        self.method = method.decode("ascii", "replace")
        self.mode: Literal["reverse", "websocket", "intercept"] = "reverse"
        self.route = ""
        self.host = ""
        self.port = 0
        self.path = ""
        self.auth: Literal["", "ok", "missing", "invalid"] = ""
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.address = ""
        self.done = False

    def event(self, decision: Literal["allow", "deny"], reason: str, status: int
              ) -> NetworkEvent:
        self.done = True
        elapsed = (trio.current_time() - self.started) * 1000
        return NetworkEvent(
            mode=self.mode, decision=decision, host=self.host, port=self.port, reason=reason,
            status=status, bytes_in=self.bytes_in, bytes_out=self.bytes_out,
            duration_ms=round(elapsed, 3), method=self.method, path=self.path,
            address=self.address, route=self.route, auth=self.auth,
        )


@final
class ReverseHandler:
    """Serves credential-route requests on client connections of one session's proxy."""

    def __init__(self, table: RouteTable, *, resolver: Resolver, limits: ProxyLimits,
                 emit: Callable[[ProxyEvent], None],
                 share: tuple[UidShare, int] | None = None) -> None:
        self._table = table
        self._resolver = resolver
        self._limits = limits
        self._emit = emit
        #: WebSocket relays running now: each holds whole messages in the daemon's memory.
        self._websockets = 0
        #: Every kept-alive upstream connection of this proxy, waiting in the pool of its
        #: client connection for the next request, oldest first (with that pool and route).
        #: At most ``max_connections``: a client connection keeps one per route it used, and
        #: the routes would otherwise multiply what one session holds in the daemon.
        self._kept: collections.OrderedDict[_Upstream, tuple[dict[str, _Upstream], str]] = (
            collections.OrderedDict())
        #: The system daemon's per-uid count of connections (``_share``) and the session's
        #: uid: each kept connection takes a place of it too (a kept connection is an
        #: ephemeral port of the host, beyond the one its program connection was counted
        #: for), given back when it leaves ``_kept``.
        self._share = share
        #: Whose its upstream connections are in the kernel's view (``ProxyServer``'s).
        self._owner = None if share is None else share[1]

    @property
    def table(self) -> RouteTable:
        return self._table

    async def serve(self, stream: trio.abc.Stream, conn: h11.Connection,
                    request: h11.Request, *, site: str | None = None) -> None:
        """Serve ``request`` and whatever requests follow on the connection (keep-alive).
        The caller owns and closes ``stream``.

        ``site`` names the route of an intercepted TLS connection (:mod:`._intercept`):
        every request on it is then for that route, its target is the real URL's path (which
        must lie under the route's base path), and no phantom token is asked of it (the
        CONNECT that opened the tunnel was authenticated with the session's token)."""
        pool: dict[str, _Upstream] = {}
        try:
            while await self._one(stream, conn, request, pool, site):
                conn.start_next_cycle()
                following = await self._next_request(stream, conn)
                if following is None:
                    return
                request = following
        finally:
            # Out of the kept ones first, all at once: another connection's request may
            # close the oldest kept while these are being closed, and must not find them.
            kept = list(pool.values())
            pool.clear()
            for upstream in kept:
                self._unkeep(upstream)
            for upstream in kept:
                await trio.aclose_forcefully(upstream.stream)

    async def _next_request(self, stream: trio.abc.Stream, conn: h11.Connection
                            ) -> h11.Request | None:
        try:
            with trio.fail_after(self._limits.keepalive_timeout):
                event = await _next_event(stream, conn)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return None  # an idle keep-alive connection ends quietly
        except h11.RemoteProtocolError:
            record = _Record(b"")
            await self._refuse(stream, conn, record, _Refusal(
                400, "bad_request", "the proxy could not understand the request"))
            return None
        if not isinstance(event, h11.Request):
            return None
        if not event.target.startswith(b"/") or event.method == b"CONNECT":
            record = _Record(event.method)
            await self._refuse(stream, conn, record, _Refusal(
                400, "not_a_route_request",
                "a connection that used a credential route carries only route requests"))
            return None
        return event

    async def _one(self, stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request,
                   pool: dict[str, _Upstream], site: str | None) -> bool:
        """One request; True when the connection can carry another."""
        record = _Record(request.method)
        if site is not None:
            record.mode = "intercept"
        try:
            with one_cancelled():  # a nursery's group of them, too
                return await self._route_request(stream, conn, request, pool, record, site)
        except _Refusal as refusal:
            return await self._refuse(stream, conn, record, refusal)
        except _ClientGone:
            if not record.done:
                self._emit(record.event("allow" if record.auth == "ok" else "deny",
                                        "client_gone", record.status))
            return False
        except trio.Cancelled:
            # The session ended (its program exited, or it was stopped) while this request
            # was in flight, or just after its response went out, before its record: the
            # session's audit is still open (it is sealed once its services are done), and
            # a request that may have reached the upstream must not go unrecorded.
            if not record.done:
                self._emit(record.event("allow" if record.auth == "ok" else "deny",
                                        "session_ended", record.status))
            raise
        except Exception:
            if not record.done:
                self._emit(record.event("deny", "internal_error", record.status))
            raise

    async def _route_request(self, stream: trio.abc.Stream, conn: h11.Connection,
                             request: h11.Request, pool: dict[str, _Upstream],
                             record: _Record, site: str | None) -> bool:
        limits = self._limits
        token = self._table.token
        if len(request.headers) > limits.max_headers:
            raise _Refusal(431, "head_too_large", "the request head is too large")
        if request.method in (b"CONNECT", b"TRACE"):
            raise _Refusal(405, "method_not_allowed", "credential routes do not forward this "
                           "method")
        try:
            target = (split_target(request.target) if site is None
                      else self._site_target(site, request.target))
        except BadTarget:
            raise _Refusal(400, "bad_request", "the request target is not /<route>/<path>"
                           ) from None
        entry = self._table.get(target.route)
        if entry is not None and entry.route.filter_only and site is None:
            entry = None  # an allow_domain entry is reached by interception only
        if entry is None:
            if ROUTE_NAME.fullmatch(target.route) and not token.matches(target.route):
                record.route = target.route
            raise _Refusal(404, "unknown_route", "this session has no credential route of that "
                           "name", extra={"routes": [r.name for r in self._table.routes()
                                                      if not r.filter_only]})
        route = entry.route
        record.route, record.host, record.port = route.name, route.host, route.port
        needles = tuple(entry.table or ())
        record.path = event_path(target.path, token, needles)
        try:
            check_framing(request.headers)
        except BadRequest:
            raise _Refusal(400, "bad_request", "the request has conflicting framing headers"
                           ) from None
        auth: AuthOutcome = ("ok" if site is not None
                             else check_phantom(route, token, request.headers, target))
        record.auth = auth
        if auth != "ok":
            raise _Refusal(401, f"token_{auth}",
                           "the request does not carry this session's token for the route "
                           f"(expected in {_token_place(route)})")
        method = request.method.decode("ascii", "replace")
        try:
            path = entry.rules.check(method, target.path)
        except PathRefused as exc:
            raise _Refusal(400, "bad_path", "the request path is refused before any rule is "
                           "looked at", extra={"problem": exc.problem}) from None
        except EndpointDenied as exc:
            record.path = event_path(exc.path.text, token, needles)
            raise _Refusal(403, "endpoint_denied", "no endpoint rule of this route allows "
                           "this method and path",
                           extra={"rule_set": entry.rules.name,
                                  "rules": entry.rules.describe()}) from None
        record.path = event_path(path.text, token, needles)
        if route.endpoint_rules and overrides_request(request.headers, target.query):
            # The rules matched this method and path; the upstream would serve those named.
            raise _Refusal(403, "method_override", "a route with endpoint rules does not "
                           "forward a request that names another method or path for the "
                           "upstream (X-HTTP-Method-Override, X-HTTP-Method, "
                           "X-Method-Override, X-Original-URL, X-Rewrite-URL, _method)")
        if entry.secret is None and not route.filter_only:
            raise _Refusal(503, "secret_missing", "the credential of this route is not "
                           "available to the daemon", extra={"problem": entry.error_code})
        declared = _content_length(request.headers)
        if declared is not None and declared > limits.max_body_bytes:
            raise _Refusal(413, "body_too_large", "the request body is larger than the proxy "
                           f"forwards ({limits.max_body_bytes} bytes)")
        try:
            head = upstream_head(route, entry.secret, token, request.headers,
                                 forward_path=path.forward, query=target.query)
        except BadTarget:
            raise _Refusal(400, "bad_path", "the path does not hold the route's token pattern"
                           ) from None
        if is_websocket(request.headers):
            if self._websockets >= limits.max_websockets:
                raise _Refusal(503, "too_many_websockets", "the session has as many WebSocket "
                               f"connections open as the proxy relays ({limits.max_websockets})")
            return await self._websocket(stream, conn, request, entry, entry.secret, head,
                                         record)
        return await self._forward(stream, conn, request, entry, head, pool, record)

    def _site_target(self, site: str, target: bytes) -> RouteTarget:
        """An intercepted request's target as a route target: its path below the route's
        base path (a path outside it is refused)."""
        if not target.startswith(b"/"):
            raise BadTarget("not an origin-form target")
        entry = self._table.get(site)
        whole = split_target(b"/" + site.encode("ascii") + target)
        base = entry.route.base_path if entry is not None else ""
        if base and not (whole.path == base or whole.path.startswith(base + "/")):
            raise _Refusal(403, "outside_route", "an intercepted request must stay under "
                           "the route's upstream path")
        return msgspec.structs.replace(whole, path=whole.path[len(base):] or "/")

    # forwarding

    async def _forward(self, stream: trio.abc.Stream, conn: h11.Connection,
                       request: h11.Request, entry: _Entry, head: UpstreamHead,
                       pool: dict[str, _Upstream], record: _Record) -> bool:
        route = entry.route
        has_body = _has_body(request.headers)
        # On a route with rules, a ``_method`` field in the body is an override as well,
        # also in a compressed body (an upstream may decode it before its framework reads it).
        watch: BodyOverrideWatch | DecodedBodyWatch | None = None
        if has_body and route.endpoint_rules and parsed_for_fields(request.headers):
            coding = content_decoding(request.headers)
            if coding == "unsupported":
                raise _Refusal(415, "body_encoding", "a route with endpoint rules does not "
                               "forward a form or JSON body in a content coding the proxy "
                               "cannot read (it reads gzip and deflate)")
            watch = (BodyOverrideWatch() if coding == "identity"
                     else DecodedBodyWatch(self._limits.max_body_bytes,
                                          deflate=deflate_coded(request.headers)))
        upstream = pool.pop(route.name, None)
        if upstream is not None:
            self._unkeep(upstream)
        if upstream is not None and not upstream.idle_and_open():
            await trio.aclose_forcefully(upstream.stream)
            upstream = None
        reused = upstream is not None
        if upstream is None:
            upstream = await self._connect(entry, record)
        self._injected(route, head)
        keep = False
        try:
            try:
                response = await self._send_request(stream, conn, request, upstream, head,
                                                     record, has_body, watch)
            except _UpstreamFailed as failed:
                if not (reused and not has_body and not failed.timeout):
                    raise
                # A kept-alive connection the server had closed: once more, on a new one.
                await trio.aclose_forcefully(upstream.stream)
                upstream = await self._connect(entry, record)
                response = await self._send_request(stream, conn, request, upstream, head,
                                                    record, has_body, watch)
            record.address = upstream.address
            status = await self._relay_response(stream, conn, request, upstream, response,
                                                entry, record)
            keep = upstream.exchange_done()
        except _UpstreamFailed as failed:
            if record.status:
                self._emit(record.event("allow", "upstream_error", record.status))
                return False
            raise _Refusal(504 if failed.timeout else 502,
                           "upstream_timeout" if failed.timeout else "upstream_error",
                           "the route's upstream did not answer" if failed.timeout
                           else "the route's upstream failed", decision="allow") from None
        finally:
            if keep:
                upstream.next_cycle()
                await self._keep(pool, route.name, upstream)
            else:
                await trio.aclose_forcefully(upstream.stream)
        self._emit(record.event("allow", "forwarded", status))
        return _both_done(conn)

    async def _keep(self, pool: dict[str, _Upstream], name: str, upstream: _Upstream) -> None:
        """Put ``upstream`` in ``pool`` for the next request on route ``name``; beyond
        ``max_connections`` kept connections (all client connections together), the one kept
        longest is closed (its client connection connects again when it needs it). On the
        system daemon a kept connection takes a place of its uid's share of connections
        (``_share``); with the share full it is closed instead of kept."""
        if self._share is not None and not self._share[0].take(self._share[1]):
            await trio.aclose_forcefully(upstream.stream)
            return
        pool[name] = upstream
        self._kept[upstream] = (pool, name)
        while len(self._kept) > self._limits.max_connections:
            oldest, (its_pool, its_name) = self._kept.popitem(last=False)
            self._give_back()
            if its_pool.get(its_name) is oldest:
                del its_pool[its_name]
            await trio.aclose_forcefully(oldest.stream)

    def _unkeep(self, upstream: _Upstream) -> None:
        """Take ``upstream`` out of the kept ones (if it is one), giving its place back."""
        if self._kept.pop(upstream, None) is not None:
            self._give_back()

    def _give_back(self) -> None:
        if self._share is not None:
            self._share[0].give(self._share[1])

    async def _send_request(self, stream: trio.abc.Stream, conn: h11.Connection,
                            request: h11.Request, upstream: _Upstream, head: UpstreamHead,
                            record: _Record, has_body: bool,
                            watch: BodyOverrideWatch | DecodedBodyWatch | None = None,
                            ) -> h11.Response:
        limits = self._limits
        data = upstream.conn.send(h11.Request(method=request.method, target=head.target,
                                              headers=head.headers))
        await _to_upstream(upstream, data or b"", limits.send_timeout)
        if has_body:
            await self._send_body(stream, conn, upstream, record, watch)
        else:
            if conn.their_state is h11.SEND_BODY:
                event = await _from_client(stream, conn, limits.idle_timeout)
                if not isinstance(event, h11.EndOfMessage):
                    raise _Refusal(400, "bad_request", "unexpected request body")
            await _to_upstream(upstream, upstream.conn.send(h11.EndOfMessage()) or b"",
                               limits.send_timeout)
        while True:
            event = await _from_upstream(upstream, limits.response_timeout)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise _UpstreamFailed(timeout=False)

    async def _send_body(self, stream: trio.abc.Stream, conn: h11.Connection,
                         upstream: _Upstream, record: _Record,
                         watch: BodyOverrideWatch | DecodedBodyWatch | None = None,
                         ) -> None:
        """The request body, piece by piece; a piece that completes a ``_method`` field
        (``watch``) is not sent: the upstream connection is dropped with the body unfinished
        (the caller closes it on the refusal)."""
        limits = self._limits
        pending: object | None = None
        while True:
            if conn.they_are_waiting_for_100_continue:
                continue_head = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                await _to_client(stream, continue_head or b"", limits.send_timeout)
            event = (pending if pending is not None else
                     await _from_client(stream, conn, limits.idle_timeout))
            pending = None
            if isinstance(event, h11.Data):
                try:
                    event, pending = joined(conn, event)
                except h11.RemoteProtocolError:
                    raise _Refusal(400, "bad_request", "the request body is malformed") from None
                record.bytes_out += len(event.data)
                if record.bytes_out > limits.max_body_bytes:
                    raise _Refusal(413, "body_too_large", "the request body is larger than "
                                   f"the proxy forwards ({limits.max_body_bytes} bytes)")
                if watch is not None and await _watched(watch, event.data):
                    raise _body_override()
                await _to_upstream(upstream, upstream.conn.send(h11.Data(data=event.data))
                                   or b"", limits.idle_timeout)
            elif isinstance(event, h11.EndOfMessage):
                if watch is not None and await _watched(watch, None):
                    raise _body_override()
                await _to_upstream(upstream, upstream.conn.send(h11.EndOfMessage()) or b"",
                                   limits.send_timeout)
                return
            else:
                raise _ClientGone

    async def _relay_response(self, stream: trio.abc.Stream, conn: h11.Connection,
                              request: h11.Request, upstream: _Upstream, response: h11.Response,
                              entry: _Entry, record: _Record) -> int:
        limits = self._limits
        decoding = content_decoding(response.headers)
        if decoding == "unsupported":
            raise _Refusal(502, "upstream_encoding", "the upstream used a content encoding the "
                           "proxy cannot inspect", decision="allow")
        has_body = (request.method != b"HEAD" and response.status_code >= 200
                    and response.status_code not in (204, 304))
        scrubber = entry.new_scrubber()
        headers = downstream_head(response.headers, scrubber, has_body=has_body)
        reason = scrubber.replace_all(response.reason) if scrubber else response.reason
        data = conn.send(h11.Response(status_code=response.status_code, headers=headers,
                                      reason=reason))
        await _to_client(stream, data or b"", limits.send_timeout)
        record.status = response.status_code
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32) if (
            has_body and decoding == "gzip") else None
        size = _sized_body(response) if has_body and inflater is None else None
        if size is not None and size >= _SIZED_BODY_MIN:
            await self._relay_sized_body(stream, conn, upstream, size, response, scrubber,
                                         record)
            await self._pass_on(stream, conn, scrubber.flush() if scrubber else b"", record)
            await _to_client(stream, conn.send(h11.EndOfMessage()) or b"",
                             limits.send_timeout)
            return response.status_code
        while True:
            event = await _from_upstream(upstream, limits.idle_timeout)
            if isinstance(event, h11.Data):
                for piece in _decoded(inflater, event.data):
                    out = scrubber.feed(piece) if scrubber else piece
                    await self._pass_on(stream, conn, out, record)
            elif isinstance(event, h11.EndOfMessage):
                tail = b""
                if inflater is not None:
                    try:
                        tail = inflater.flush()
                    except zlib.error:
                        raise _UpstreamFailed(timeout=False) from None
                if scrubber is not None:
                    tail = scrubber.feed(tail) + scrubber.flush()
                await self._pass_on(stream, conn, tail, record)
                await _to_client(stream, conn.send(h11.EndOfMessage()) or b"",
                                 limits.send_timeout)
                return response.status_code
            else:
                raise _UpstreamFailed(timeout=False)

    async def _relay_sized_body(self, stream: trio.abc.Stream, conn: h11.Connection,
                                upstream: _Upstream, size: int, response: h11.Response,
                                scrubber: Scrubber | None, record: _Record) -> None:
        """A large body with a Content-Length, read past h11 (h11 does not copy every byte
        twice) into reused buffers of _BODY_READ bytes, in reads of whatever has arrived.
        What h11 had already read with the head comes first. Every byte goes through the
        scrubber, in order, as on the h11 path (it copies only what it changes or holds
        back). When the upstream fails, what it sent before is still passed on; when the
        program goes away, the reading stops. When the upstream sent more than the body (it
        must not), or the response ends its connection, the connection is not reused.

        To a plain client connection the body is moved by a worker thread
        (:func:`._offload.run_stoppable`, :meth:`_move_body`): no pass through the event loop
        per piece. Otherwise (an intercepted connection, TLS on the program's side too; or
        BODY_WORKERS bodies already on workers) by two tasks (:func:`._bulk.pump`), one
        reading while the other sends."""
        early = upstream.conn.trailing_data[0]
        first = early[:size]
        if isinstance(stream, trio.SocketStream) and BODY_WORKERS.take():
            try:
                await run_stoppable(functools.partial(
                    self._move_body, client=stream.socket.fileno(), conn=conn,
                    upstream=upstream.stream, left=size - len(first), first=first,
                    scrubber=scrubber, record=record))
            finally:
                BODY_WORKERS.give()
        else:
            async def write(piece: bytes | bytearray) -> None:
                await self._pass_on(stream, conn, scrubber.feed(piece) if scrubber else piece,
                                    record)

            if first:
                await write(first)
            await pump(size - len(first),
                       lambda view: _from_upstream_into(upstream, view,
                                                        self._limits.idle_timeout),
                       write, read_errors=(_UpstreamFailed,), write_errors=(_ClientGone,),
                       size=_BODY_READ)
        upstream.read_past = len(early) <= size and _keeps_alive(response)

    def _move_body(self, stop: Stop, *, client: int, conn: h11.Connection,
                   upstream: TlsStream | trio.SocketStream, left: int, first: bytes,
                   scrubber: Scrubber | None, record: _Record) -> None:
        """On the worker thread: ``first``, then ``left`` bytes read from the upstream, each
        read scrubbed, framed by h11 and written to the program's socket before the next
        read. The failures are those of the task path: the upstream's (broken, cut short,
        silent for idle_timeout) as _UpstreamFailed, the program's (gone, or not taking a
        piece within idle_timeout) as _ClientGone."""
        idle = self._limits.idle_timeout
        source = upstream.socket.fileno()

        def wait_writable(seconds: float) -> bool:
            return stop.wait(client, writable=True, timeout=seconds)

        def write(data: bytes | bytearray, end: int) -> None:
            """Pass on ``data[:end]``, scrubbed (no copy of it when nothing changes)."""
            if scrubber is not None:
                out = scrubber.feed_part(data, end)
            else:
                out = data if end == len(data) else memoryview(data)[:end]
            if not out:
                return
            pieces = conn.send_with_data_passthrough(h11.Data(data=cast(bytes, out))) or []
            try:
                write_pieces(client, pieces, wait_writable, idle)
            except OSError:  # TimeoutError included
                raise _ClientGone from None
            record.bytes_in += len(out)

        def read(view: memoryview) -> int:
            while True:
                try:
                    n = _read_ready(upstream, view)
                except (trio.BrokenResourceError, OSError):
                    raise _UpstreamFailed(timeout=False) from None
                if n is None:
                    if not stop.wait(source, writable=False, timeout=idle):
                        raise _UpstreamFailed(timeout=True)
                    continue
                if not n:
                    raise _UpstreamFailed(timeout=False)  # closed before the end of the body
                return n

        if first:
            write(first, len(first))
        buffer = bytearray(min(left, _BODY_READ))
        view = memoryview(buffer)
        with (upstream.bulk_reads(_BODY_READ) if isinstance(upstream, TlsStream)
              else contextlib.nullcontext()):
            while left:
                stop.check()  # a body that never makes the worker wait must stop too
                n = read(view[:min(left, len(buffer))])
                left -= n
                write(buffer, n)

    async def _pass_on(self, stream: trio.abc.Stream, conn: h11.Connection,
                       data: bytes | bytearray, record: _Record) -> None:
        if not data:
            return  # an empty chunk would end a chunked body
        # h11 passes the data through as it is (its type says bytes; any buffer will do).
        pieces = conn.send_with_data_passthrough(h11.Data(data=cast(bytes, data))) or [b""]
        try:
            with trio.fail_after(self._limits.idle_timeout):
                await send_pieces(stream, pieces)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            raise _ClientGone from None
        record.bytes_in += len(data)

    async def _connect(self, entry: _Entry, record: _Record) -> _Upstream:
        route = entry.route
        limits = self._limits
        try:
            resolved = await self._resolver.resolve(route.host, route.port)
        except ResolveError as exc:
            timeout = exc.reason.value == "resolve_timeout"
            raise _Refusal(504 if timeout else 502, exc.reason.value,
                           "the route's upstream could not be resolved to an address the "
                           "proxy connects to", decision="allow") from None
        failure = "connect_failed"
        with trio.move_on_after(limits.connect_timeout) as scope:
            for address, port in resolved.addresses:
                try:
                    tcp = await connect_exactly(address, port, owner=self._owner)
                except OSError:
                    continue
                shown = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
                record.address = shown
                if entry.ssl is None:
                    return _Upstream(tcp, shown, limits.max_head_bytes)
                try:
                    tls = await TlsStream.connect(tcp, entry.ssl, route.host)
                except trio.BrokenResourceError:
                    failure = "upstream_tls"
                    break
                return _Upstream(tls, shown, limits.max_head_bytes)
        if scope.cancelled_caught:
            raise _Refusal(504, "connect_timeout", "the route's upstream did not accept the "
                           "connection in time", decision="allow")
        message = ("the route's upstream failed TLS verification" if failure == "upstream_tls"
                   else "the route's upstream could not be reached")
        raise _Refusal(502, failure, message, decision="allow")

    async def _websocket(self, stream: trio.abc.Stream, conn: h11.Connection,
                         request: h11.Request, entry: _Entry, secret: Secret | None,
                         head: UpstreamHead, record: _Record) -> bool:
        from ._websocket import relay_websocket

        record.mode = "websocket"
        route = entry.route
        self._websockets += 1
        try:
            upstream = await self._connect(entry, record)
            self._injected(route, head)
            scrubber = entry.new_scrubber()
            moved = Moved()  # counted also when the session's end cancels the relay
            try:
                outcome = await relay_websocket(
                    client=stream, request=request, trailing=conn.trailing_data[0],
                    route=route, secret=secret, token=self._table.token,
                    upstream=upstream.stream, resource=head.target.decode("ascii"),
                    scrubber=scrubber, limits=self._limits, moved=moved)
            finally:
                record.bytes_in, record.bytes_out = moved.to_client, moved.to_upstream
                await trio.aclose_forcefully(upstream.stream)
        finally:
            self._websockets -= 1
        self._emit(record.event("allow", outcome.reason, outcome.status))
        return False

    def _injected(self, route: Route, head: UpstreamHead) -> None:
        if not route.filter_only:
            self._emit(CredentialInjected(route=route.name, credential=route.credential_key,
                                          source=route.source, into=head.into))

    # answers

    async def _refuse(self, stream: trio.abc.Stream, conn: h11.Connection, record: _Record,
                      refusal: _Refusal) -> bool:
        """Send our own JSON answer; True when the connection can carry another request."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._emit(record.event(refusal.decision, refusal.reason, record.status))
            return False
        complete = _request_complete(conn)
        body = json.dumps({"error": refusal.message, "reason": refusal.reason,
                           "route": record.route, **refusal.extra}).encode() + b"\n"
        headers = [(b"Content-Type", b"application/json"),
                   (b"Content-Length", str(len(body)).encode()),
                   (b"Cache-Control", b"no-store")]
        if not complete:
            headers.append((b"Connection", b"close"))
        sent = 0
        try:
            data = conn.send(h11.Response(status_code=refusal.status, headers=headers,
                                          reason=_PHRASES.get(refusal.status, b"Error")))
            data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            data = b""
        if data:
            try:
                await _to_client(stream, data, self._limits.send_timeout)
                sent = refusal.status
            except _ClientGone:
                complete = False
        self._emit(record.event(refusal.decision, refusal.reason, sent))
        return complete and sent != 0 and _both_done(conn)


def _both_done(conn: h11.Connection) -> bool:
    """Whether both sides finished their message, so that the connection can go on."""
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


def _token_place(route: Route) -> str:
    if route.inject_mode == "url_path":
        return f"the path ({route.path_pattern})"
    if route.inject_mode == "query_param":
        return f"the query parameter {route.query_param_name}"
    return f"the {route.inject_header} header"


def _request_complete(conn: h11.Connection) -> bool:
    """Whether the program's request has been read to its end (so that the connection can
    carry another). Reads only what h11 already holds."""
    if conn.their_state is h11.DONE:
        return True
    if conn.their_state is not h11.SEND_BODY:
        return False
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return False
    return isinstance(event, h11.EndOfMessage)


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value)  # h11 has checked it is one decimal number
    return None


def _sized_body(response: h11.Response) -> int | None:
    """The body length of a response framed by Content-Length alone, else None."""
    if any(name == b"transfer-encoding" for name, _ in response.headers):
        return None
    return _content_length(response.headers)


def _keeps_alive(response: h11.Response) -> bool:
    """Whether the upstream keeps its connection open after this response (HTTP/1.1 and no
    ``Connection: close``; the proxy never asks for close itself)."""
    if response.http_version != b"1.1":
        return False
    return not any(name == b"connection" and b"close" in (t.strip().lower()
                                                         for t in value.split(b","))
                   for name, value in response.headers)


async def _watched(watch: BodyOverrideWatch | DecodedBodyWatch, data: bytes | None) -> bool:
    """Whether the body's next piece (``None``: its end) completes a ``_method`` field; a
    compressed body that does not decode, or expands past the body limit, is refused. A
    compressed piece is decoded a step at a time, other tasks running between the steps."""
    try:
        if data is None:
            return watch.end()
        if isinstance(watch, BodyOverrideWatch):
            return watch.feed(data)
        for found in watch.steps(data):
            if found:
                return True
            await trio.lowlevel.checkpoint()
        return False
    except UnreadableBody as exc:
        if exc.too_large:
            raise _Refusal(413, "body_too_large", "the request body expands past what the "
                           "proxy forwards") from None
        raise _Refusal(400, "bad_request", "the request body does not decode") from None


def _body_override() -> _Refusal:
    return _Refusal(403, "method_override", "a route with endpoint rules does not forward a "
                    "request whose body names another method for the upstream (a _method "
                    "field)")


def _has_body(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding" or (lower == b"content-length" and value != b"0"):
            return True
    return False


def _decoded(inflater: Any, data: bytes) -> Iterator[bytes]:
    """``data`` as is, or inflated in bounded steps (a small gzip body cannot make one huge
    allocation)."""
    if inflater is None:
        yield data
        return
    try:
        yield inflater.decompress(data, _INFLATE_STEP)
        while inflater.unconsumed_tail:
            yield inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
    except zlib.error:
        raise _UpstreamFailed(timeout=False) from None


# I/O, with failures attributed to the side that caused them


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(_READ_SIZE)))


async def _from_client(stream: trio.abc.Stream, conn: h11.Connection, timeout: float
                       ) -> object:
    try:
        with trio.fail_after(timeout):
            return await _next_event(stream, conn)
    except h11.RemoteProtocolError:
        raise _Refusal(400, "bad_request", "the request body is malformed") from None
    except trio.TooSlowError:
        raise _Refusal(408, "request_timeout", "the request body stalled") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise _ClientGone from None


async def _to_client(stream: trio.abc.Stream, data: bytes, timeout: float) -> None:
    try:
        with trio.fail_after(timeout):
            await stream.send_all(data)
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
        raise _ClientGone from None


async def _from_upstream(upstream: _Upstream, timeout: float) -> object:
    try:
        with trio.fail_after(timeout):
            return await _next_event(upstream.stream, upstream.conn)
    except trio.TooSlowError:
        raise _UpstreamFailed(timeout=True) from None
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        raise _UpstreamFailed(timeout=False) from None


async def _from_upstream_into(upstream: _Upstream, buffer: memoryview, timeout: float) -> int:
    """Raw body bytes from the upstream into ``buffer``; the end of the stream is a failure
    (the caller reads only bytes the response still owes)."""
    try:
        with trio.fail_after(timeout):
            n = await receive_into(upstream.stream, buffer)
    except trio.TooSlowError:
        raise _UpstreamFailed(timeout=True) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise _UpstreamFailed(timeout=False) from None
    if not n:
        raise _UpstreamFailed(timeout=False)  # closed before the end of the body
    return n


def _read_ready(stream: TlsStream | trio.SocketStream, view: memoryview) -> int | None:
    """For a worker thread: what has arrived on an upstream connection, into ``view``; None
    when nothing has, 0 at its end. A failure raises ``trio.BrokenResourceError`` or
    ``OSError``."""
    if isinstance(stream, TlsStream):
        n = stream.read_ready(view)
        stream.send_ready()  # what reading made OpenSSL answer (a key update), if it fits
        return n
    try:
        return os.readv(stream.socket.fileno(), [view])
    except BlockingIOError:
        return None


async def _to_upstream(upstream: _Upstream, data: bytes, timeout: float) -> None:
    try:
        with trio.fail_after(timeout):
            await upstream.stream.send_all(data)
    except trio.TooSlowError:
        raise _UpstreamFailed(timeout=True) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise _UpstreamFailed(timeout=False) from None

