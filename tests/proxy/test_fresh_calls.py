"""What the fresh CONNECT's saved system calls must not lose (nonod.proxy._fresh, ._pump),
checked on the real sockets and the real epoll of this process: accepted sockets still have
``TCP_NODELAY`` (set once, on the listener), an ended tunnel leaves nothing in the pump's
epoll (its sockets are closed rather than unregistered), and the daemon's descriptor reserve
still holds for a watermark read once per connection."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio

from nonod.proxy import ProxyPolicy
from nonod.proxy._pump import the_pump
from nonod.proxy._resolve import start_connect
from tests.proxy.conftest import TOKEN, Proxy, connect_head, read_all, read_head

POLICY = ProxyPolicy(hosts=frozenset({"api.github.com"}))
StartProxy = Callable[..., Awaitable[Proxy]]


def own_sockets() -> list[socket.socket]:
    """This process's stream sockets (duplicates of its descriptors: the caller closes them)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if sock.type == socket.SOCK_STREAM:
            found.append(sock)
        else:
            sock.close()
    return found


def address_of(sock: socket.socket, which: str) -> object:
    try:
        return sock.getpeername() if which == "peer" else sock.getsockname()
    except OSError:
        return None


def epoll_targets(epoll_fd: int) -> set[int]:
    """The descriptors registered in epoll ``epoll_fd`` (its ``fdinfo``)."""
    with open(f"/proc/self/fdinfo/{epoll_fd}") as info:
        return {int(line.split()[1]) for line in info if line.startswith("tfd:")}


async def test_accepted_sockets_get_no_delay_from_the_listener(start_proxy: StartProxy,
                                                                echo_port: int) -> None:
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    stream = await proxy.open()
    await stream.send_all(connect_head("api.github.com:443", token=TOKEN))
    assert (await read_head(stream))[0] == 200  # the pump accepted it
    client, proxy_address = stream.socket.getsockname(), stream.socket.getpeername()
    sockets = own_sockets()
    try:
        accepted = [s for s in sockets if address_of(s, "peer") == client]
        listener = [s for s in sockets if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and address_of(s, "name") == proxy_address]
        assert accepted and listener
        for sock in accepted + listener:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        for sock in sockets:
            sock.close()
    await stream.aclose()


async def test_ended_fresh_tunnels_leave_nothing_in_the_pump_s_epoll(
        start_proxy: StartProxy, echo_port: int) -> None:
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    epoll_fd = the_pump()._epoll.fileno()
    before = epoll_targets(epoll_fd)
    for _ in range(20):
        stream = await proxy.open()
        await stream.send_all(connect_head("api.github.com:443", token=TOKEN))
        assert (await read_head(stream))[0] == 200
        await stream.send_all(b"ping")
        await stream.send_eof()
        assert await read_all(stream) == b"ping"
        await stream.aclose()
    with trio.fail_after(5):
        await proxy.events.wait_for(20, stage="close")
    # Every tunnel's sockets are closed by now (before its close event was posted), and a
    # closed socket is out of the epoll.
    assert epoll_targets(epoll_fd) <= before


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
