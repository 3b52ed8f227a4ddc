"""What the daemon holds for a tunnel whose program side stalls, on the program's side.

A CONNECT tunnel's bytes wait in the daemon's sockets when one end stops taking them: the
program stops reading a download (it may shrink its own receive buffer to 4 KiB first), or
sends an upload faster than an upstream that does not read. The daemon's end of the
program's connection (on the loopback of the session's network namespace) let the kernel
grow its buffers as for any connection: up to ``tcp_wmem``'s maximum for a download (4 MiB by
default) and ``tcp_rmem``'s for an upload (6 MiB by default, 32 MiB on this host), for each
of the 256 connections a session's proxy serves. That is the daemon's memory and the host's
TCP memory (``tcp_mem``, shared by every socket of the host: 2.4 GB at most here), taken by
a program without any help from its upstream. A real proxy (the pump thread's path), a
real upstream, real sockets; the daemon's side is read with ``ss``.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
import trio

from nonod.proxy import ProxyLimits, ProxyPolicy, serve_proxy
from tests.proxy.conftest import EventLog, Proxy, RecordingResolver, fake_dns
from tests.proxy.conftest import start_proxy as start_proxy  # the fixture

StartProxy = Callable[..., Awaitable[Proxy]]
#: The most the daemon's end may hold each way: the bound (256 KiB), as the kernel counts it
#: (twice), with room for the segment in flight.
HELD = 640 * 1024


@contextmanager
def upstream(*, sends: bool) -> Iterator[tuple[int, list[int], threading.Event]]:
    """A server on loopback: each connection is sent bytes without pause (``sends``), or is
    never read. Its port, the bytes sent on each connection, and an event set once the first
    connection is accepted (the proxy's connect returns before that)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    sent: list[int] = []
    held: list[socket.socket] = []  # connections never read stay open until the end
    stop, accepted = threading.Event(), threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            sent.append(0)
            accepted.set()
            if not sends:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                held.append(conn)
                continue
            threading.Thread(target=feed, args=(conn, len(sent) - 1), daemon=True).start()

    def feed(conn: socket.socket, index: int) -> None:
        conn.settimeout(0.2)
        data = b"x" * 65536
        with conn:
            while not stop.is_set():
                try:
                    sent[index] += conn.send(data)
                except TimeoutError:
                    continue
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1], sent, accepted
    finally:
        stop.set()
        server.close()
        for conn in held:
            conn.close()


def daemon_side(proxy_port: int) -> tuple[int, int]:
    """Recv-Q and Send-Q of the proxy's end of the program's connection (``ss``)."""
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{proxy_port} )"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) >= 4, out
    return int(out[0]), int(out[1])


async def settled(read: Callable[[], int]) -> int:
    """``read()`` once it has stopped growing for half a second and ten looks (at most
    10 s): a process that was not run for half a second on a loaded host looked fewer
    times."""
    last, since, looks = read(), time.monotonic(), 0
    deadline = since + 10
    while time.monotonic() < deadline:
        await trio.sleep(0.05)
        now = read()
        if now != last:
            last, since, looks = now, time.monotonic(), 0
            continue
        looks += 1
        if time.monotonic() - since > 0.5 and looks >= 10:
            break
    return last


def pusher(sock: socket.socket) -> Callable[[], int]:
    """A call that sends on the non-blocking ``sock`` until it would block: the bytes sent
    so far, in all."""
    data, pushed = b"y" * 65536, 0

    def push() -> int:
        nonlocal pushed
        try:
            while True:
                pushed += sock.send(data)
        except BlockingIOError:
            return pushed

    return push


async def tunnel(proxy: Proxy, *, rcvbuf: int | None = None) -> socket.socket:
    """A tunnel to ``up.example`` (pinned to the upstream), as a non-blocking socket."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await trio.to_thread.run_sync(sock.connect_ex, ("127.0.0.1", proxy.port))
    await trio.lowlevel.wait_writable(sock)
    sock.send(b"CONNECT up.example:443 HTTP/1.1\r\nHost: up.example:443\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        await trio.lowlevel.wait_readable(sock)
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_a_stalled_tunnel_holds_little_on_the_programs_side(
        start_proxy: StartProxy, direction: str) -> None:
    with upstream(sends=direction == "download") as (port, sent, accepted):
        proxy = await start_proxy(ProxyPolicy(hosts=frozenset({"up.example"})),
                                  pins={"up.example": f"127.0.0.1:{port}"})
        if direction == "download":
            client = await tunnel(proxy, rcvbuf=4096)  # and never read
            assert await trio.to_thread.run_sync(accepted.wait, 10)
            await settled(lambda: sent[0])
            held = daemon_side(proxy.port)[1]  # bytes waiting to go to the program
        else:
            client = await tunnel(proxy)
            await settled(pusher(client))
            held = daemon_side(proxy.port)[0]  # bytes the program sent, not yet passed on
        client.close()
    # Before: 3 to 4 MB waiting for a download, up to tcp_rmem's maximum for an upload.
    assert held <= HELD, f"the daemon's end holds {held} bytes"


async def test_a_connection_made_before_the_proxy_serves_holds_little_too(
        nursery: trio.Nursery) -> None:
    """The program runs before the daemon serves its proxy's listener (the listener comes
    from the session's init, the daemon serves it after the launch): a connection made
    meanwhile waits in the listener's backlog, created with the kernel's own buffers, and
    an upload it stalls held up to ``tcp_rmem``'s maximum on the daemon's end. Its buffers
    are bounded when it is accepted."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy_port = listeners[0].socket.getsockname()[1]
    early = socket.create_connection(("127.0.0.1", proxy_port))  # in the backlog
    with upstream(sends=False) as (port, _, _):
        await nursery.start(functools.partial(
            serve_proxy, listeners[0], policy=ProxyPolicy(hosts=frozenset({"up.example"})),
            resolver=RecordingResolver(pins={"up.example": f"127.0.0.1:{port}"},
                                       getaddrinfo=fake_dns({})),
            events=EventLog().append, limits=ProxyLimits()))
        early.sendall(b"CONNECT up.example:443 HTTP/1.1\r\nHost: up.example:443\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += early.recv(1)
        assert head.startswith(b"HTTP/1.1 200"), head
        early.setblocking(False)
        await settled(pusher(early))
        held = daemon_side(proxy_port)[0]
        early.close()
    assert held <= HELD, f"the daemon's end holds {held} bytes"
