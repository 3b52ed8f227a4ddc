"""The accept back-off every accept loop shares (``nonod._accept``), on real sockets."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio
import trio.testing

from nonod._accept import PAUSE, accept_retrying


async def test_a_shortage_pauses_then_accepts_the_waiting_connection(
    short_tmp: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = str(short_tmp / "s")
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(1)
    client = await trio.open_unix_socket(path)
    failures = [errno.EMFILE]

    async def accept() -> tuple[trio.socket.SocketType, object]:
        if failures:  # what accept(2) says when the process is out of descriptors
            raise OSError(failures.pop(), "Too many open files")
        return await sock.accept()

    started = trio.current_time()
    conn, _ = await accept_retrying(accept, event="test.accept_backoff")
    assert trio.current_time() - started >= PAUSE
    await client.send_all(b"x")
    assert await conn.recv(1) == b"x"
    conn.close()
    await client.aclose()
    sock.close()


async def test_another_accept_error_propagates(short_tmp: Path) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(short_tmp / "s"))  # bound but not listening: accept(2) says EINVAL
    with pytest.raises(OSError) as caught:
        await accept_retrying(sock.accept, event="test.accept_backoff")
    assert caught.value.errno == errno.EINVAL
    sock.close()
