"""connect_exactly(): the address it was given and no other, at once when the kernel
completes the connection during connect(2), bounded by a deadline otherwise."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from nonod.proxy._resolve import connect_exactly


async def test_connects_to_a_listener_and_the_stream_works() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        stream = await connect_exactly("127.0.0.1", port)
        peer, _ = listener.accept()
        assert stream.socket.getpeername() == ("127.0.0.1", port)
        await stream.send_all(b"ping")
        assert peer.recv(10) == b"ping"
        peer.close()
        await stream.aclose()
    finally:
        listener.close()


async def test_a_refused_connection_raises_oserror() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(OSError) as caught:
        await connect_exactly("127.0.0.1", port)
    assert caught.value.errno == errno.ECONNREFUSED


async def test_a_hanging_connect_ends_at_the_deadline() -> None:
    # A listener whose accept queue is full: further SYNs are dropped, connects hang.
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(0)
    filler = socket.create_connection(sink.getsockname())
    try:
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await connect_exactly("127.0.0.1", sink.getsockname()[1],
                                  deadline=start + 0.3)
        assert 0.3 <= trio.current_time() - start < 5
    finally:
        filler.close()
        sink.close()
