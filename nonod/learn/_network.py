"""The network side of a learn session: a recording proxy, and inbound port forwards.

The recording session has a private network namespace whose only way out is its proxy socket,
as every restricted session has. Here the daemon serves that socket with the proxy library's
own per-connection handler (:class:`nonod.proxy.ProxyServer`), but with an allowlist made for
each connection from the target the program asked for: the request head is read first, its
target is noted (the host *name* the program asked for, never an address it resolved to), and
the connection is handed on, head included, to a ``ProxyServer`` whose policy allows exactly
that name and port. Everything the proxy refuses in any session (loopback and metadata names,
special addresses that are not pinned, malformed requests) is still refused, and said so.

This is a stopgap: ``ProxyPolicy`` cannot say "allow every name" today. With such a flag the
recording would be the proxy's own ``events`` callback, and this module would shrink to
:class:`NetworkRecorder`.
"""

from __future__ import annotations

from typing import Final, NoReturn, final

import h11
import msgspec
import structlog
import trio

from .._accept import accept_retrying
from ..profiles import builtin_network
from ..proxy import (
    Decision,
    NetworkEvent,
    ProxyEvent,
    ProxyLimits,
    ProxyPolicy,
    ProxyRequest,
    ProxyServer,
    Reason,
    Resolver,
    decide,
)
from ..sandbox import Sandboxed

log = structlog.get_logger()

_READ_SIZE: Final = 1 << 16
_NOTHING: Final = ProxyPolicy()  # allows no name at all
#: The reason a host named like a network group is refused while learning.
NETWORK_GROUP: Final = "network_group"


class OutboundHost(msgspec.Struct, frozen=True, kw_only=True):
    """A host name the program asked the proxy for, on one port, and how many times."""

    hostname: str
    port: int
    count: int


class DirectAddress(msgspec.Struct, frozen=True, kw_only=True):
    """An address the program reached for without a name: an IP literal given to the proxy
    (``via="proxy"``) or a connect() that bypassed it (``via="direct"``, refused by the
    network namespace). Reported, never proposed."""

    address: str
    port: int
    count: int
    via: str


class RefusedTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A target the proxy refuses in every session (loopback, metadata, malformed...)."""

    host: str
    port: int
    reason: str
    count: int


@final
class NetworkRecorder:
    """What the program asked the network for. Fed by the recording proxy (and by the trace,
    for direct connection attempts); read with :meth:`outbound` and friends."""

    def __init__(self) -> None:
        self._hosts: dict[tuple[str, int], int] = {}
        self._addresses: dict[tuple[str, int, str], int] = {}
        self._refused: dict[tuple[str, int, str], int] = {}
        self._failed: dict[tuple[str, int], str] = {}

    def policy_for(self, request: ProxyRequest) -> ProxyPolicy:
        """Note ``request`` and return the allowlist its connection is served with."""
        decision: Decision = decide(request, _NOTHING)
        if (decision.reason is Reason.NOT_ALLOWED and decision.host and "." not in decision.host
                and decision.host in builtin_network().groups):
            # A profile reads this entry as the group (every LLM API, every registry...), and
            # no session could reach a host of that name: refused, never proposed.
            rkey = (decision.host, request.port, NETWORK_GROUP)
            self._refused[rkey] = self._refused.get(rkey, 0) + 1
            return _NOTHING
        if decision.reason is Reason.NOT_ALLOWED and decision.host:
            port = decision.port
            if decision.address is None:
                key = (decision.host, port)
                self._hosts[key] = self._hosts.get(key, 0) + 1
                return ProxyPolicy(hosts=frozenset({decision.host}), ports=frozenset({port}))
            akey = (decision.address, port, "proxy")
            self._addresses[akey] = self._addresses.get(akey, 0) + 1
            return ProxyPolicy(addresses=frozenset({decision.address}),
                               ports=frozenset({port}))
        rkey = (decision.host or request.host, request.port, decision.reason.value)
        self._refused[rkey] = self._refused.get(rkey, 0) + 1
        return _NOTHING

    def note_direct(self, address: str, port: int, count: int) -> None:
        key = (address, port, "direct")
        self._addresses[key] = self._addresses.get(key, 0) + count

    def on_event(self, event: ProxyEvent) -> None:
        """The proxy's ``events`` callback: remembers upstream failures for the summary."""
        if not isinstance(event, NetworkEvent):
            return
        if event.stage == "close" and event.decision == "allow" and event.status >= 500:
            self._failed[(event.host, event.port)] = event.reason
        elif event.stage == "close" and event.status == 200:
            self._failed.pop((event.host, event.port), None)

    def outbound(self) -> tuple[OutboundHost, ...]:
        return tuple(OutboundHost(hostname=h, port=p, count=c)
                     for (h, p), c in sorted(self._hosts.items()))

    def addresses(self) -> tuple[DirectAddress, ...]:
        return tuple(DirectAddress(address=a, port=p, count=c, via=v)
                     for (a, p, v), c in sorted(self._addresses.items()))

    def refused(self) -> tuple[RefusedTarget, ...]:
        return tuple(RefusedTarget(host=h, port=p, reason=r, count=c)
                     for (h, p, r), c in sorted(self._refused.items()))

    def upstream_failures(self) -> tuple[tuple[str, int, str], ...]:
        """(host, port, reason) of hosts whose last connection failed upstream while learning
        (an unreachable host is still asked for, so it is still proposed)."""
        return tuple((h, p, r) for (h, p), r in sorted(self._failed.items()))

    @property
    def host_count(self) -> int:
        return len({h for h, _ in self._hosts})


def operator_resolver(config_path: str | None = None) -> Resolver:
    """The resolver the daemon's sessions get: the ``[network]`` table of ``nonod.toml``
    (``resolve`` pins, ``allow_private``), read here on the client side. ``config_path`` None:
    the user daemon's default file, else the system daemon's, else no pins at all.

    ``extra_ca_file`` plays no part in learning: the recording proxy only tunnels (CONNECT)
    and forwards plain HTTP, so the program's TLS is its own, end to end, as in a session
    (the daemon's CA is for credential routes, which learn does not run).
    """
    from .._config import default_config_path, load_config

    if config_path is None:
        for system in (False, True):
            candidate = default_config_path(system=system)
            if candidate.is_file():
                config_path = str(candidate)
                break
    if config_path is None:
        return Resolver()
    network = load_config(config_path, system=False).config.network
    return Resolver(pins=network.resolve or None, allow_private=network.allow_private)


def request_target(head: bytes, limits: ProxyLimits) -> ProxyRequest | None:
    """The target of the request whose head is ``head``, or None if there is none to note
    (not a proxy request, or not parseable: the ProxyServer will say why)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
    try:
        conn.receive_data(head)
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    try:
        target = event.target.decode("ascii")
    except UnicodeDecodeError:
        return None
    if event.method == b"CONNECT":
        authority: str | None = target
        default = None
        mode = "connect"
    else:
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() != "http":
            return None
        cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, default, mode = rest[:cut], 80, "http"
    if authority is None or "@" in authority:
        return None
    host, port = _split_host_port(authority, default)
    if host is None or port is None:
        return None
    return ProxyRequest(mode="connect" if mode == "connect" else "http", host=host, port=port)


def _split_host_port(authority: str, default: int | None) -> tuple[str | None, int | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            return None, None
        host, tail = authority[:close + 1], authority[close + 1:]
        port_text = tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            return None, None
    else:
        host, sep, port_text_raw = authority.rpartition(":")
        if not sep:
            host, port_text = authority, None
        else:
            port_text = port_text_raw
    if port_text is None:
        return host, default
    if not port_text.isdigit() or len(port_text) > 5:
        return None, None
    return host, int(port_text)


@final
class _Replay(trio.abc.HalfCloseableStream):
    """``stream`` with ``head`` (already read from it) put back in front."""

    def __init__(self, head: bytes, stream: trio.SocketStream) -> None:
        self._head = head
        self._stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            size = len(self._head) if max_bytes is None else max_bytes
            chunk, self._head = self._head[:size], self._head[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _read_head(stream: trio.SocketStream, limits: ProxyLimits) -> bytes:
    """Bytes up to the end of the request head (and whatever came with them), or what
    arrived before the head timeout, EOF or the size limit."""
    data = b""
    with trio.move_on_after(limits.head_timeout):
        while b"\r\n\r\n" not in data and len(data) <= limits.max_head_bytes:
            chunk = await stream.receive_some(_READ_SIZE)
            if not chunk:
                break
            data += chunk
    return data


async def serve_recording_proxy(
    listener: trio.SocketListener,
    *,
    recorder: NetworkRecorder,
    resolver: Resolver,
    proxy_token: str | None,
    limits: ProxyLimits = ProxyLimits(),  # noqa: B008 - frozen, immutable
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve a learn session's proxy socket until cancelled (the listener is closed then)."""
    async with listener, trio.open_nursery() as nursery:
        task_status.started()
        while True:
            stream = await accept_retrying(listener.accept, event="learn.proxy_accept_backoff")
            nursery.start_soon(_serve_one, stream, recorder, resolver, proxy_token, limits)


async def _serve_one(stream: trio.SocketStream, recorder: NetworkRecorder, resolver: Resolver,
                     proxy_token: str | None, limits: ProxyLimits) -> None:
    try:
        head = await _read_head(stream, limits)
        target = request_target(head, limits) if head else None
        policy = recorder.policy_for(target) if target is not None else _NOTHING
        server = ProxyServer(policy=policy, resolver=resolver, events=recorder.on_event,
                             limits=limits, proxy_token=proxy_token, zero_copy=False)
        await server.handle(_Replay(head, stream))
    except Exception:  # the per-connection boundary: this connection ends, nothing else
        log.exception("learn.proxy_connection_failed")
    finally:
        await trio.aclose_forcefully(stream)


# -- inbound: --listen-port while learning -------------------------------------------------------


async def forward_listen_port(
    proc: Sandboxed,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Forward ``host:port`` to ``127.0.0.1:port`` inside the learn session, so the program
    can be exercised (a test webhook) while it is traced."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_forward_from, listener, proc, port)
        task_status.started()
        await trio.sleep_forever()
    raise AssertionError("unreachable")


async def _forward_from(listener: trio.SocketListener, proc: Sandboxed, port: int) -> None:
    async with listener, trio.open_nursery() as nursery:
        while True:
            client = await accept_retrying(listener.accept, event="learn.forward_accept_backoff")
            nursery.start_soon(_forward_one, client, proc, port)


async def _forward_one(client: trio.SocketStream, proc: Sandboxed, port: int) -> None:
    try:
        try:
            inner = await proc.connect_inside(port)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return  # nothing listens there (yet), or the session is over
        async with inner, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, inner, nursery.cancel_scope)
            nursery.start_soon(_pump, inner, client, nursery.cancel_scope)
    except Exception:  # the per-connection boundary
        log.exception("learn.forward_failed", port=port)
    finally:
        await trio.aclose_forcefully(client)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream,
                both: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(_READ_SIZE):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        both.cancel()
