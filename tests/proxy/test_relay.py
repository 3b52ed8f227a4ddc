"""relay(): splice(2) between plain sockets, a userspace copy otherwise; half-close, idle
timeout, peers that break."""

from __future__ import annotations

import functools
import hashlib
import os
import select
import socket
import struct
import time

import pytest
import trio
import trio.testing

from nonod.proxy._relay import plain_sockets, relay

# Each test with the pump's loop in relay.c and in Python alone: the same bytes, totals and
# events.
pytestmark = pytest.mark.usefixtures("each_pump_loop")


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return trio.SocketStream(a), trio.SocketStream(b)


async def tcp_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    return client, server


async def pump(sender: trio.abc.Stream, payload: bytes) -> None:
    await sender.send_all(payload)
    assert isinstance(sender, trio.abc.HalfCloseableStream)
    await sender.send_eof()


async def drain(receiver: trio.abc.Stream, into: list[bytes]) -> None:
    digest = hashlib.sha256()
    while data := await receiver.receive_some(1 << 16):
        digest.update(data)
    into.append(digest.digest())


@pytest.mark.parametrize("zero_copy", [True, False])
@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_both_directions_with_half_close(zero_copy: bool, kind: str) -> None:
    if kind == "unix":
        (client, proxy_a), (proxy_b, upstream) = socket_stream_pair(), socket_stream_pair()
    else:
        (client, proxy_a), (proxy_b, upstream) = await tcp_stream_pair(), await tcp_stream_pair()
    assert plain_sockets(proxy_a, proxy_b) is not None
    up_payload, down_payload = os.urandom(3 << 20), os.urandom(5 << 20)
    got_up: list[bytes] = []
    got_down: list[bytes] = []
    totals: list[tuple[int, int]] = []

    async def run_relay() -> None:
        totals.append(await relay(proxy_a, proxy_b, idle_timeout=30, zero_copy=zero_copy))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_relay)
        nursery.start_soon(pump, client, up_payload)
        nursery.start_soon(pump, upstream, down_payload)
        nursery.start_soon(drain, upstream, got_up)
        nursery.start_soon(drain, client, got_down)
    assert got_up == [hashlib.sha256(up_payload).digest()]
    assert got_down == [hashlib.sha256(down_payload).digest()]
    assert totals == [(len(up_payload), len(down_payload))]
    for stream in (client, proxy_a, proxy_b, upstream):
        await stream.aclose()


async def test_memory_streams_use_the_copy() -> None:
    client, proxy_a = trio.testing.memory_stream_pair()
    proxy_b, upstream = trio.testing.memory_stream_pair()
    assert plain_sockets(proxy_a, proxy_b) is None
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(relay, proxy_a, proxy_b, idle_timeout=30))
        await client.send_all(b"to upstream")
        got.append(bytes(await upstream.receive_some(100)))
        await upstream.send_all(b"to client")
        got.append(bytes(await client.receive_some(100)))
        await client.send_eof()
        await upstream.send_eof()
    assert got == [b"to upstream", b"to client"]


async def test_idle_timeout_of_the_copy(autojump_clock: trio.abc.Clock) -> None:
    (client, proxy_a), (proxy_b, upstream) = socket_stream_pair(), socket_stream_pair()
    start = trio.current_time()
    moved: list[tuple[int, int]] = []

    async def run_relay() -> None:
        moved.append(await relay(proxy_a, proxy_b, idle_timeout=60, zero_copy=False))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_relay)
        await trio.sleep(50)  # virtual time: activity at t=50 pushes the deadline to t=110
        await client.send_all(b"x")
        assert await upstream.receive_some(10) == b"x"
    assert moved == [(1, 0)]
    assert trio.current_time() - start == pytest.approx(110, abs=0.5)


async def test_idle_timeout_of_the_pump() -> None:
    """The pump thread keeps the idle timeout on the real clock: activity 0.3 s in pushes a
    2 s deadline to a full 2 s after that activity. (2 s, so that a loaded host running this
    task late still sends before the first deadline; the bounds below hold at any lateness.)"""
    (client, proxy_a), (proxy_b, upstream) = socket_stream_pair(), socket_stream_pair()
    idle = 2.0
    moved: list[tuple[int, int]] = []

    async def run_relay() -> None:
        moved.append(await relay(proxy_a, proxy_b, idle_timeout=idle))

    with trio.fail_after(idle + 30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_relay)
            await trio.sleep(0.3)
            sent = time.monotonic()  # the pump sees the byte after this
            await client.send_all(b"x")
            assert await upstream.receive_some(10) == b"x"
    after_the_byte = time.monotonic() - sent
    assert moved == [(1, 0)]
    # Not before idle seconds after the byte (without the push: at most idle - 0.3 after it).
    assert after_the_byte >= idle - 0.01, after_the_byte


async def test_cancelling_the_pump_lets_go_of_the_sockets_at_once() -> None:
    """A cancelled tunnel (its session stopping) returns promptly, raising Cancelled, and the
    pump no longer touches its sockets: what the client sends next stays in the proxy's
    socket, and closing that socket ends the client's connection."""
    (client, proxy_a), (proxy_b, upstream) = socket_stream_pair(), socket_stream_pair()
    outcome: list[str] = []

    async def run_relay(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            try:
                await relay(proxy_a, proxy_b, idle_timeout=300)
            except trio.Cancelled:
                outcome.append("cancelled")
                raise
            outcome.append("returned")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            scope = await nursery.start(run_relay)
            await client.send_all(b"before")
            assert await upstream.receive_some(10) == b"before"
            scope.cancel()
        assert outcome == ["cancelled"]
        await client.send_all(b"after")
        assert await proxy_a.receive_some(10) == b"after"
        await proxy_a.aclose()
        assert await client.receive_some(10) == b""
    for stream in (client, proxy_b, upstream):
        await stream.aclose()


async def test_a_reset_ends_the_tunnel_quietly() -> None:
    (client, proxy_a), (proxy_b, upstream) = await tcp_stream_pair(), await tcp_stream_pair()

    async def run_relay_then_close() -> None:  # as the proxy does
        await relay(proxy_a, proxy_b, idle_timeout=30)
        await proxy_a.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_relay_then_close)
        await client.send_all(b"hello")
        assert await upstream.receive_some(10) == b"hello"
        # The upstream resets (SO_LINGER 0 then close sends RST).
        upstream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
        await upstream.aclose()
        await client.send_all(b"more")
        with trio.fail_after(5):
            try:
                while await client.receive_some(10):
                    pass
            except trio.BrokenResourceError:
                pass  # a reset passed on is as good as an end of file
    for stream in (client, proxy_a, proxy_b):
        await stream.aclose()


async def test_a_bulk_transfer_lets_other_tasks_run() -> None:
    """A direction that never has to wait (its source always readable, its sink always
    writable) still yields to the other tasks now and then."""
    (client, proxy_a), (proxy_b, upstream) = await tcp_stream_pair(), await tcp_stream_pair()
    payload = b"\0" * (64 << 20)
    ticks = 0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(relay, proxy_a, proxy_b, idle_timeout=30))
        nursery.start_soon(pump, client, payload)
        nursery.start_soon(pump, upstream, b"")
        got_up: list[bytes] = []
        got_down: list[bytes] = []
        nursery.start_soon(drain, client, got_down)
        nursery.start_soon(ticker)
        await drain(upstream, got_up)
        done.set()
    assert got_up == [hashlib.sha256(payload).digest()]
    assert ticks >= 16  # at least once per 4 MiB moved
    for stream in (client, proxy_a, proxy_b, upstream):
        await stream.aclose()


async def test_tunnels_relayed_at_once_keep_their_own_bytes_and_state() -> None:
    """Four tunnels in the pump at once, both ways in bulk (spliced through pipes): each end
    gets exactly its own tunnel's bytes, each tunnel's totals are its own, and what a
    direction starts with (no pipe, nothing held, nothing moved: defaults shared by every
    direction, which a step shadows per direction) is untouched by the others' steps."""
    from nonod.proxy._pump import _Way

    tunnels = [(await tcp_stream_pair(), await tcp_stream_pair()) for _ in range(4)]
    payloads = [(os.urandom((2 << 20) + i), os.urandom((3 << 20) + 7 * i)) for i in range(4)]
    got: list[tuple[list[bytes], list[bytes]]] = [([], []) for _ in tunnels]
    totals: dict[int, tuple[int, int]] = {}

    async def run_relay(index: int, a: trio.SocketStream, b: trio.SocketStream) -> None:
        totals[index] = await relay(a, b, idle_timeout=30)

    async with trio.open_nursery() as nursery:
        for index, ((client, proxy_a), (proxy_b, upstream)) in enumerate(tunnels):
            up_payload, down_payload = payloads[index]
            nursery.start_soon(run_relay, index, proxy_a, proxy_b)
            nursery.start_soon(pump, client, up_payload)
            nursery.start_soon(pump, upstream, down_payload)
            nursery.start_soon(drain, upstream, got[index][0])
            nursery.start_soon(drain, client, got[index][1])
    for index, (up_payload, down_payload) in enumerate(payloads):
        assert got[index] == ([hashlib.sha256(up_payload).digest()],
                              [hashlib.sha256(down_payload).digest()])
        assert totals[index] == (len(up_payload), len(down_payload))
    fresh = _Way(3, 4)
    assert (fresh.pipe, fresh.piped, fresh.moved, bytes(fresh.held)) == (None, 0, 0, b"")
    assert (fresh.waits, fresh.can_splice, fresh.grown) == (select.EPOLLIN, True, False)
    for (client, proxy_a), (proxy_b, upstream) in tunnels:
        for stream in (client, proxy_a, proxy_b, upstream):
            await stream.aclose()
