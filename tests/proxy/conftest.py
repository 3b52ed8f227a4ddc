"""Real local servers and a real proxy listener for the proxy tests."""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
import trio

from nonod.proxy import (
    Asker,
    NetworkEvent,
    ProxyLimits,
    ProxyPolicy,
    ProxyServer,
    Resolved,
    Resolver,
    serve_proxy,
)

TOKEN = "t0ken-Abc123"


class RecordingResolver(Resolver):
    """The real Resolver, remembering every name it was asked to resolve: by ``resolve``
    (trio's path), or by ``resolve_now`` when that answered (the pump thread's fresh
    CONNECT; when it cannot, trio's path takes the request and calls ``resolve``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> Resolved:
        self.asked.append((host, port))
        return await super().resolve(host, port)

    def resolve_now(self, host: str, port: int) -> Resolved | None:
        resolved = super().resolve_now(host, port)
        if resolved is not None:
            self.asked.append((host, port))
        return resolved


def fake_dns(table: dict[str, list[str]]) -> Any:
    """A getaddrinfo over an in-memory table (unknown names fail like NXDOMAIN)."""

    def getaddrinfo(host: str, port: int, *rest: int) -> Sequence[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in table[host]]

    return getaddrinfo


async def echo_handler(stream: trio.abc.Stream) -> None:
    """Echo everything; half-close when the peer does."""
    try:
        async for data in stream:
            await stream.send_all(data)
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
    except trio.BrokenResourceError:
        pass


@dataclass
class Upstream:
    port: int
    received: list[bytes] = field(default_factory=list)


async def start_server(nursery: trio.Nursery,
                       handler: Callable[[trio.SocketStream], Any]) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                      host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


@pytest.fixture
async def echo_port(nursery: trio.Nursery) -> int:
    return await start_server(nursery, echo_handler)


class EventLog(list[NetworkEvent]):
    """The events a proxy reported, and a way to wait for more (a tunnel's close is reported
    once the pump thread has ended it, which trio's scheduler cannot see coming)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def append(self, event: NetworkEvent) -> None:
        super().append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int, *, stage: str | None = None) -> None:
        """Until ``count`` events (of ``stage``, if given) have been reported."""
        while sum(stage in (None, event.stage) for event in self) < count:
            await self._changed.wait()


@dataclass
class Proxy:
    port: int
    server: ProxyServer
    events: EventLog
    resolver: RecordingResolver

    async def open(self) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", self.port)


@pytest.fixture
async def start_proxy(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Any]]:
    async def start(policy: ProxyPolicy, *, pins: dict[str, str] | None = None,
                    limits: ProxyLimits | None = None, token: str | None = None,
                    dns: dict[str, list[str]] | None = None, zero_copy: bool = True,
                    asker: Asker | None = None, fresh: bool = True,
                    within: trio.Nursery | None = None) -> Proxy:
        """``within``: the nursery the proxy runs in (the test's by default): cancelling it
        ends the proxy as a session's end does."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        events = EventLog()
        resolver = RecordingResolver(pins=pins, getaddrinfo=fake_dns(dns or {}))
        server = await (within or nursery).start(functools.partial(
            serve_proxy, listeners[0], policy=policy, resolver=resolver,
            events=events.append, limits=limits or ProxyLimits(), proxy_token=token,
            zero_copy=zero_copy, asker=asker, fresh_connects=fresh))
        return Proxy(port=port, server=server, events=events, resolver=resolver)

    yield start


async def read_head(stream: trio.abc.ReceiveStream) -> tuple[int, bytes, bytes]:
    """Read one response head (and what came after it) with h11 as a client would."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="CONNECT", target="x:1", headers=[("Host", "x:1")]))
    client.send(h11.EndOfMessage())
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(bytes(await stream.receive_some(65536)))
            continue
        assert isinstance(event, h11.Response), event
        body = b""
        if event.status_code == 200:
            return 200, body, client.trailing_data[0]
        while True:
            more = client.next_event()
            if more is h11.NEED_DATA:
                client.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(more, h11.Data):
                body += more.data
            else:
                return event.status_code, body, b""


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    out = b""
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return out
        if not data:
            return out
        out += data


def connect_head(target: str, *, token: str | None = None, extra: bytes = b"") -> bytes:
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
    if token is not None:
        import base64

        head += b"Proxy-Authorization: Basic " + base64.b64encode(
            f"nono:{token}".encode()) + b"\r\n"
    return head + extra + b"\r\n"


@pytest.fixture(params=["native", "python"])
def each_pump_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs once with the pump's loop waiting (and relaying short messages) in
    ``relay.c`` and once with Python's loop alone (``relay.c`` not built): both must relay
    and report alike. A pump of its own for each (its thread idles after the test)."""
    from nonod.proxy import _pump

    native = request.param == "native"
    if native and _pump._native() is None:
        pytest.fail("libnonorelay.so is not built: run make")
    monkeypatch.setattr(_pump, "_pump", _pump._Pump(native=native))
    return str(request.param)
