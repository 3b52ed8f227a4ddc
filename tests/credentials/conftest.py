"""Fixtures for the credential tests: a real Secret Service (gnome-keyring on a private D-Bus
session bus), a private CA, TLS fake upstreams and a proxy with credential routes."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trustme

from nonod.credentials import LoadedRoute, PhantomToken, Route, Secret, SessionCA
from nonod.proxy import ProxyEvent, ProxyLimits, ProxyPolicy, Resolver, RouteTable, serve_proxy
from nonod.proxy._share import UidShare

KEYRING_PASSWORD = "test-keyring-password"

# ---------------------------------------------------------------------- the Secret Service


@dataclass
class SecretService:
    """A running gnome-keyring on its own session bus. ``env`` is what a process needs to
    reach it (DBUS_SESSION_BUS_ADDRESS, and a HOME where its keyring files live)."""

    env: dict[str, str]

    def secret_tool(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["secret-tool", *args], input=stdin, capture_output=True,
                              text=True, env=self.env, timeout=30, check=False)


@pytest.fixture(scope="session")
def secret_service() -> Iterator[SecretService]:
    """``dbus-run-session`` starts a bus; inside it, gnome-keyring is unlocked with a password
    from stdin (which creates the login keyring), the bus address is printed, and a `sleep`
    keeps the bus alive until the fixture ends it. The keyring exits with its bus."""
    for tool in ("dbus-run-session", "gnome-keyring-daemon", "secret-tool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make system-deps installs it)")
    home = Path(tempfile.mkdtemp(prefix="nono-keyring-"))
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_RUNTIME_DIR": str(runtime),
        "KEYRING_PASSWORD": KEYRING_PASSWORD,
    }
    script = ('printf %s "$KEYRING_PASSWORD" | gnome-keyring-daemon --unlock '
              '--components=secrets >/dev/null && printf "%s\\n" "$DBUS_SESSION_BUS_ADDRESS" '
              '&& exec sleep 3600')
    process = subprocess.Popen(["dbus-run-session", "--", "sh", "-c", script],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                               text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        if not address:
            pytest.fail("gnome-keyring did not start on the private session bus")
        env.pop("KEYRING_PASSWORD")
        yield SecretService(env={**env, "DBUS_SESSION_BUS_ADDRESS": address})
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def keyring_env(secret_service: SecretService, monkeypatch: pytest.MonkeyPatch) -> SecretService:
    """The in-process keyring client talks to the test's Secret Service (jeepney reads the
    bus address when it connects)."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", secret_service.env["DBUS_SESSION_BUS_ADDRESS"])
    return secret_service


# ------------------------------------------------------------------------ TLS and upstreams


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: str
    server: ssl.SSLContext


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    cert = ca.issue_cert("api.github.com", "generativelanguage.googleapis.com",
                         "upstream.test")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    path = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return Pki(ca=ca, ca_file=str(path), server=server)


@dataclass
class Seen:
    """What a fake upstream received: one entry per request, and how many connections."""

    requests: list[UpstreamRequest] = field(default_factory=list)
    connections: int = 0


@dataclass
class UpstreamRequest:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n == name.lower()]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None


class Responder:
    """How a fake upstream app answers: a head, body pieces, the end."""

    def __init__(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        self.stream = stream
        self.conn = conn

    async def start(self, status: int, headers: Sequence[tuple[bytes | str, bytes | str]] = ()
                    ) -> None:
        await self.stream.send_all(self.conn.send(h11.Response(status_code=status,
                                                               headers=list(headers))) or b"")

    async def data(self, data: bytes) -> None:
        await self.stream.send_all(self.conn.send(h11.Data(data=data)) or b"")

    async def end(self) -> None:
        await self.stream.send_all(self.conn.send(h11.EndOfMessage()) or b"")

    async def whole(self, status: int, body: bytes,
                    headers: Sequence[tuple[bytes | str, bytes | str]] = ()) -> None:
        await self.start(status, [*headers, (b"Content-Length", str(len(body)).encode())])
        await self.data(body)
        await self.end()


App = Callable[[UpstreamRequest, Responder], Awaitable[None]]


async def serve_http(app: App, seen: Seen, stream: trio.abc.Stream) -> None:
    """A small keep-alive HTTP/1.1 server on h11, for fake upstreams."""
    seen.connections += 1
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request = await _next(stream, conn)
            if not isinstance(request, h11.Request):
                return
            body = b""
            while True:
                event = await _next(stream, conn)
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            received = UpstreamRequest(request.method, request.target,
                                       [(n.lower(), v) for n, v in request.headers], body)
            seen.requests.append(received)
            await app(received, Responder(stream, conn))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def _next(stream: trio.abc.Stream, conn: h11.Connection) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(65536)))


async def start_tls_upstream(nursery: trio.Nursery, context: ssl.SSLContext, app: App
                             ) -> tuple[int, Seen]:
    seen = Seen()
    listeners = await nursery.start(functools.partial(
        trio.serve_ssl_over_tcp, functools.partial(serve_http, app, seen), 0, context,
        host="127.0.0.1"))
    return int(listeners[0].transport_listener.socket.getsockname()[1]), seen


# -------------------------------------------------------------------------- proxy and client


def github_route(**fields: Any) -> Route:
    base: dict[str, Any] = {"name": "github", "upstream": "https://api.github.com",
                            "credential_key": "github_token", "credential_format": "Bearer {}"}
    return Route(**{**base, **fields})


@dataclass
class RouteProxy:
    port: int
    token: PhantomToken
    events: list[ProxyEvent]
    table: RouteTable

    async def client(self) -> Client:
        return Client(await trio.open_tcp_stream("127.0.0.1", self.port))


@pytest.fixture
async def start_route_proxy(nursery: trio.Nursery, pki: Pki
                            ) -> AsyncIterator[Callable[..., Awaitable[RouteProxy]]]:
    async def start(routes: Sequence[tuple[Route, str | None]], *, pins: dict[str, str],
                    limits: ProxyLimits | None = None, token: PhantomToken | None = None,
                    ca_file: str | None = None, system_roots: bool = False,
                    intercept: SessionCA | None = None, within: trio.Nursery | None = None,
                    policy: ProxyPolicy | None = None,
                    share: tuple[UidShare, int] | None = None) -> RouteProxy:
        """``within``: the nursery the proxy runs in (the test's by default); ``policy``:
        the allowlist (by default, nothing); ``share``: the system daemon's per-uid count
        and the session's uid."""
        from nonod.credentials import CredentialNotFound

        token = token or PhantomToken.new()
        loaded = [LoadedRoute(route, Secret(value)) if value is not None else
                  LoadedRoute(route, None) if route.filter_only else
                  LoadedRoute(route, None, CredentialNotFound("gone",
                                                              reference=route.credential_key))
                  for route, value in routes]
        table = RouteTable(loaded, token=token,
                           extra_ca_file=pki.ca_file if ca_file is None else ca_file or None,
                           system_roots=system_roots)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        events: list[ProxyEvent] = []
        await (within or nursery).start(functools.partial(
            serve_proxy, listeners[0], policy=policy or ProxyPolicy(), resolver=Resolver(pins=pins),
            events=events.append, limits=limits or ProxyLimits(), proxy_token=token.reveal(),
            routes=table, intercept=intercept, share=share))
        return RouteProxy(port=port, token=token, events=events, table=table)

    yield start


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[0] if values else None


class Client:
    """An HTTP/1.1 client on h11 over one connection to the proxy (keep-alive)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, method: str, target: str, headers: Sequence[tuple[str, str]] = (),
                   body: bytes | None = None, *, chunks: Sequence[bytes] | None = None) -> None:
        all_headers = [("Host", "127.0.0.1"), *headers]
        if body is not None:
            all_headers.append(("Content-Length", str(len(body))))
        if chunks is not None:
            all_headers.append(("Transfer-Encoding", "chunked"))
        await self.stream.send_all(self.conn.send(h11.Request(
            method=method, target=target, headers=all_headers)) or b"")
        for piece in ([body] if body else []) + list(chunks or []):
            await self.stream.send_all(self.conn.send(h11.Data(data=piece)) or b"")
        await self.stream.send_all(self.conn.send(h11.EndOfMessage()) or b"")

    async def event(self) -> object:
        return await _next(self.stream, self.conn)

    async def head(self) -> h11.Response:
        while True:
            event = await self.event()
            if isinstance(event, h11.Response):
                return event
            assert isinstance(event, h11.InformationalResponse), event

    async def rest(self) -> bytes:
        body = b""
        while True:
            event = await self.event()
            if isinstance(event, h11.Data):
                body += event.data
            else:
                assert isinstance(event, h11.EndOfMessage), event
                return body

    async def response(self) -> Response:
        head = await self.head()
        return Response(head.status_code, list(head.headers), await self.rest())

    async def request(self, method: str, target: str, headers: Sequence[tuple[str, str]] = (),
                      body: bytes | None = None) -> Response:
        await self.send(method, target, headers, body)
        return await self.response()

    def next_cycle(self) -> None:
        self.conn.start_next_cycle()

    async def aclose(self) -> None:
        await self.stream.aclose()
