"""What the fresh CONNECT's saved system calls must not lose (nonod.proxy._fresh, ._pump),
checked on the real sockets and the real epoll of this process: accepted sockets still have
``TCP_NODELAY`` and the bound on their buffers (set once, on the listener), an ended tunnel
leaves nothing in the pump's epoll (its sockets are closed rather than unregistered), the
daemon's descriptor reserve still holds for a watermark read once per connection, and bytes
held for a tunnel already added go first."""

from __future__ import annotations

import _socket
import errno
import functools
import gc
import os
import select
import socket
import weakref
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio

from nonod.proxy import ProxyLimits, ProxyPolicy
from nonod.proxy._buffers import CLIENT_BUFFER
from nonod.proxy._fresh import _Acceptor
from nonod.proxy._pump import Tunnel, the_pump
from nonod.proxy._resolve import start_connect
from tests.proxy.conftest import TOKEN, Proxy, connect_head, read_all, read_head

POLICY = ProxyPolicy(hosts=frozenset({"api.github.com"}))
StartProxy = Callable[..., Awaitable[Proxy]]


def epoll_targets(epoll_fd: int) -> set[int]:
    """The descriptors registered in epoll ``epoll_fd`` (its ``fdinfo``)."""
    with open(f"/proc/self/fdinfo/{epoll_fd}") as info:
        return {int(line.split()[1]) for line in info if line.startswith("tfd:")}


async def tunnel_through(proxy: Proxy) -> trio.SocketStream:
    """A client's stream with a tunnel open through ``proxy``."""
    stream = await proxy.open()
    await stream.send_all(connect_head("api.github.com:443", token=TOKEN))
    assert (await read_head(stream))[0] == 200
    return stream


#: ``TCP_NODELAY``, ``SO_SNDBUF`` and ``SO_RCVBUF`` as the kernel reports them once set
#: (it doubles the buffers' sizes).
BOUNDED = (1, 2 * CLIENT_BUFFER, 2 * CLIENT_BUFFER)


async def test_accepted_sockets_get_no_delay_and_bounded_buffers_from_the_listener(
        start_proxy: StartProxy, echo_port: int) -> None:
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    stream = await tunnel_through(proxy)  # accepted by the pump
    assert options_of_accepted(stream) == [BOUNDED]
    listeners = []
    for fd in list(the_pump()._watched):
        with socket.socket(fileno=os.dup(fd)) as sock:
            # an accepted tunnel's socket has the listener's address too: listeners only
            if (sock.getsockname() == ("127.0.0.1", proxy.port)
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                listeners.append(options(sock))
    assert listeners == [BOUNDED]  # what the kernel copies to each socket it accepts
    await stream.aclose()


async def test_a_connection_queued_before_the_proxy_started_gets_them_too(
        echo_port: int) -> None:
    """The kernel copies the listener's options when it completes a connection: one that
    waited in the queue from before gets them from the pump itself."""
    from nonod.proxy import Resolver, serve_proxy

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    early = await trio.open_tcp_stream(*listeners[0].socket.getsockname()[:2])
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            serve_proxy, listeners[0], policy=POLICY, events=lambda _: None,
            resolver=Resolver(pins={"api.github.com": f"127.0.0.1:{echo_port}"})))
        await early.send_all(connect_head("api.github.com:443"))
        assert (await read_head(early))[0] == 200
        assert options_of_accepted(early) == [BOUNDED]
        nursery.cancel_scope.cancel()
    await early.aclose()


def options_of_accepted(stream: trio.SocketStream) -> list[tuple[int, int, int]]:
    """:func:`options` of the pump's socket at the other end of ``stream``."""
    ends = (stream.socket.getpeername(), stream.socket.getsockname())
    return [options(sock) for tunnel in set(the_pump()._tunnels.values())
            for sock in tunnel.socks.values() if addresses(sock) == ends]


def options(sock: socket.socket | trio.socket.SocketType | _socket.socket
            ) -> tuple[int, int, int]:
    """``sock``'s ``TCP_NODELAY``, ``SO_SNDBUF`` and ``SO_RCVBUF``."""
    return (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def addresses(sock: socket.socket | trio.socket.SocketType) -> object:
    """``sock``'s own address and its peer's (None once it is not connected)."""
    try:
        return sock.getsockname(), sock.getpeername()
    except OSError:
        return None


async def test_ended_fresh_tunnels_leave_nothing_in_the_pump_s_epoll(
        start_proxy: StartProxy, echo_port: int) -> None:
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    epoll_fd = the_pump()._epoll.fileno()
    await (await tunnel_through(proxy)).aclose()  # the pump watches the listener by now
    with trio.fail_after(5):
        await proxy.events.wait_for(1, stage="close")
    before = epoll_targets(epoll_fd)
    for _ in range(20):
        stream = await tunnel_through(proxy)
        await stream.send_all(b"ping")
        await stream.send_eof()
        assert await read_all(stream) == b"ping"
        await stream.aclose()
    with trio.fail_after(5):
        await proxy.events.wait_for(21, stage="close")
    # Every tunnel's sockets are closed by now (before its close event was posted), and a
    # closed socket is out of the epoll.
    assert epoll_targets(epoll_fd) <= before


async def test_a_fresh_tunnel_s_upstream_socket_gets_no_delay(start_proxy: StartProxy,
                                                               echo_port: int) -> None:
    """The upstream's ``TCP_NODELAY`` is set after the ``200`` (nothing goes to the upstream
    before the tunnel's first turn), but set: small writes go out at once."""
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    stream = await tunnel_through(proxy)
    await stream.send_all(b"ping")
    got = b""
    with trio.fail_after(5):
        while len(got) < 4:
            got += await stream.receive_some(4)  # relayed both ways: the tunnel is in
    tunnels = {id(tunnel): tunnel for tunnel in list(the_pump()._tunnels.values())}
    upstreams = [tunnel.socks[tunnel.b] for tunnel in tunnels.values()]
    assert len(upstreams) == 1
    assert upstreams[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await stream.aclose()


def test_a_connect_above_a_given_watermark_is_refused(echo_port_sync: int) -> None:
    with pytest.raises(OSError) as raised:
        start_connect("127.0.0.1", echo_port_sync, below=0)
    assert raised.value.errno == errno.EMFILE
    sock, _ = start_connect("127.0.0.1", echo_port_sync, below=1 << 30)
    sock.close()


@pytest.fixture
def echo_port_sync() -> Iterator[int]:
    """A listening TCP port on loopback (connections are left in its backlog)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def test_a_fresh_tunnel_still_ends_when_idle(start_proxy: StartProxy,
                                                   echo_port: int) -> None:
    """The pump adds a fresh CONNECT's tunnel to its own set at once (no hand-over): its
    idle deadline is still kept."""
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN, limits=ProxyLimits(idle_timeout=1.0))
    # The clock starts before the tunnel exists: its idle deadline cannot fall before
    # start + 1.0 however late this task runs after the tunnel's last byte.
    start = trio.current_time()
    stream = await tunnel_through(proxy)
    with trio.fail_after(15):
        assert await read_all(stream) == b""  # ended by the proxy, not by us
        await proxy.events.wait_for(1, stage="close")
    # Not before the configured 1 s (less 10 ms: the timer's
    # granularity); far before the default idle_timeout (300 s), with room for a loaded
    # host's scheduling.
    assert 0.99 <= trio.current_time() - start < 10
    await stream.aclose()


async def test_a_descriptor_the_pump_does_not_know_is_dropped_from_its_epoll() -> None:
    """Were a bug to leave a socket in the pump's epoll that no tunnel or watcher owns (a
    closing tunnel's socket not closed), the thread takes it out rather than be woken for
    it again and again."""
    pump = the_pump()
    epoll_fd = pump._epoll.fileno()
    left, right = socket.socketpair()
    with left, right:
        right.send(b"x")  # readable from now on: a level-triggered epoll reports it each turn
        pump._epoll.register(left.fileno(), select.EPOLLIN)
        token, seen = trio.lowlevel.current_trio_token(), trio.Event()

        def after_a_turn() -> None:  # at the start of a turn: the poll comes after it
            pump.call_soon(lambda: token.run_sync_soon(seen.set))

        pump.call_soon(after_a_turn)
        with trio.fail_after(5):
            await seen.wait()
        assert left.fileno() not in epoll_targets(epoll_fd)


async def test_an_ended_fresh_tunnel_is_freed_without_the_garbage_collector(
        start_proxy: StartProxy, echo_port: int) -> None:
    """Its connection, tunnel, sockets and buffers go when it ends (reference counts): no
    cycle among them is left for the collector to find, per request, later."""
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    gc.collect()
    gc.disable()
    try:
        stream = await tunnel_through(proxy)
        [acceptor] = [watcher.__self__ for watcher in list(the_pump()._watched.values())
                      if isinstance(getattr(watcher, "__self__", None), _Acceptor)
                      and watcher.__self__._listener.getsockname()[1] == proxy.port]
        [fresh] = [weakref.ref(held) for held in list(acceptor.live)]
        await stream.send_all(b"ping")
        await stream.send_eof()
        assert await read_all(stream) == b"ping"
        await stream.aclose()
        with trio.fail_after(5):
            await proxy.events.wait_for(1, stage="close")  # posted by a turn before this one
            # The pump's turn that posted it may still name it until its next turn (proxy6's
            # one loop): freed by reference counts then, the collector still off.
            while fresh() is not None:
                await trio.sleep(0.001)
    finally:
        gc.enable()


async def test_the_rest_of_a_short_200_goes_before_what_the_other_side_sent() -> None:
    """A fresh CONNECT's ``200`` is sent before its tunnel is made; were the send short, the
    tunnel is made holding the rest (``to_a``), which goes ahead of what the upstream sent
    already (a server that speaks first), and the tunnel relays on after it."""
    pump = the_pump()
    (client, a), (b, upstream) = socket.socketpair(), socket.socketpair()
    ended, token = trio.Event(), trio.lowlevel.current_trio_token()
    with client, a, b, upstream:
        upstream.sendall(b"banner")  # readable when the tunnel is added

        def start() -> None:  # one step of the pump thread, as _Fresh._established's
            tunnel = Tunnel(a, b, 30, lambda _: token.run_sync_soon(ended.set),
                            to_a=b"HTTP/1.1 200 Connection established\r\n\r\n"[9:],
                            closing=False)
            pump.add_here(tunnel)
            assert not tunnel.routed  # Python holds bytes of it: relay.c does not take it

        pump.call_soon(start)
        client.sendall(b"hello")
        assert await trio.to_thread.run_sync(upstream.recv, 5) == b"hello"
        upstream.shutdown(socket.SHUT_WR)
        client.shutdown(socket.SHUT_WR)
        with trio.fail_after(5):
            got = await trio.to_thread.run_sync(read_to_end, client)
            await ended.wait()
    assert got == b"200 Connection established\r\n\r\nbanner"


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data
