"""Hostile or idle clients must not lock out others (issue 19, item 5).

Real sockets against a real daemon: hello and idle timeouts (virtual time, trio's autojump
clock), the per-uid and global connection caps with a refusal that names the cause, and a
client that stops reading being dropped (and releasing the session it was attached to).
"""

from __future__ import annotations

import json
import os
import select
import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from nonoctl.client import Client, Connection, RemoteError, open_async_client
from nonod import protocol as p

from .conftest import NOBODY, DaemonThread, as_user, hello, raw_client, session_env, start_daemon

_UPGRADE = (
    b"GET /nonod HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: nono.v1\r\n\r\n"
)


def _frame(text: str) -> bytes:
    """A masked text frame (mask 0: the payload goes as is), small messages only."""
    data = text.encode()
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data


async def _read_to_eof(sock: trio.socket.SocketType) -> bytes:
    received = b""
    while chunk := await sock.recv(65536):
        received += chunk
    return received


async def _handshaken(path: Path) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX)
    await sock.connect(str(path))
    await sock.send(_UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await sock.recv(1)
    assert b" 101 " in head
    return sock


# Real clocks in the two tests below: under trio's autojump clock a whole daemon's periodic
# tasks (heartbeat, reseal) advance time without bound while it waits on the world, and a
# test of the same shape once spun for minutes (test_control_socket.py).
async def test_a_client_that_never_says_hello_is_told_and_closed(short_tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        handle = await start_daemon(nursery, short_tmp,
                                    config="[daemon]\nhandshake_timeout = 0.5\n")
        started = trio.current_time()
        sock = await _handshaken(handle.socket)
        with trio.fail_after(30):
            rest = await _read_to_eof(sock)  # the daemon closes it: we never do
        sock.close()
        assert trio.current_time() - started >= 0.5
        assert b'"code":"protocol.hello_timeout"' in rest
        nursery.cancel_scope.cancel()


async def test_an_idle_connection_is_closed_after_idle_timeout(short_tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        handle = await start_daemon(nursery, short_tmp, config="[daemon]\nidle_timeout = 0.5\n")
        sock = await _handshaken(handle.socket)
        await sock.send(_frame(json.dumps(hello())))
        started = trio.current_time()
        with trio.fail_after(30):
            rest = await _read_to_eof(sock)
        sock.close()
        assert b'"type":"welcome"' in rest
        assert trio.current_time() - started >= 0.5
        assert b"\x03\xe9idle timeout" in rest  # close frame: code 1001, reason
        nursery.cancel_scope.cancel()


def test_the_blocking_client_reconnects_after_an_idle_close(short_tmp: Path) -> None:
    handle = DaemonThread(short_tmp, config="[daemon]\nidle_timeout = 0.5\n").start()
    try:
        with Client(handle.socket, autostart=False) as nono:
            assert nono.status().sessions_live == 0
            first = nono._conn
            assert select.select([first.sock], [], [], 30)[0]  # the daemon's close frame
            assert nono.status().sessions_live == 0
            assert nono._conn is not first
    finally:
        handle.stop()


async def test_the_async_client_reconnects_after_an_idle_close(
    short_tmp: Path, nursery: trio.Nursery
) -> None:
    handle = await start_daemon(nursery, short_tmp, config="[daemon]\nidle_timeout = 0.2\n")
    async with open_async_client(handle.socket, autostart=False) as nono:
        assert (await nono.status()).sessions_live == 0
        first = nono._ws
        with pytest.raises(ConnectionClosed):
            await first.get_message()  # the daemon closes it: nothing else would end this
        assert (await nono.status()).sessions_live == 0
        assert nono._ws is not first


def test_over_the_global_cap_the_client_is_told_too_many_connections(short_tmp: Path) -> None:
    handle = DaemonThread(short_tmp, config="[daemon]\nmax_connections = 2\n").start()
    try:
        with handle.connect(), handle.connect():
            with pytest.raises(RemoteError) as info:
                handle.connect()
            assert info.value.remote_code == "daemon.too_many_connections"
            assert "too many connections to nonod (2 open, max_connections = 2)" in str(
                info.value)
    finally:
        handle.stop()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")
def test_one_user_at_the_per_uid_cap_does_not_lock_out_another(short_tmp: Path) -> None:
    import grp

    group = grp.getgrgid(NOBODY).gr_name
    handle = DaemonThread(short_tmp, system=True, config=(
        f'[daemon]\nsocket_group = "{group}"\nmax_connections_per_uid = 2\n')).start()
    try:
        with handle.connect(), handle.connect():
            with pytest.raises(RemoteError) as info:
                handle.connect()
            assert "too many connections from uid 0 (2 open" in str(info.value)
            other = raw_client(handle.socket, [hello()], prefix=as_user(NOBODY))
            assert json.loads(other[0])["type"] == "welcome", other
    finally:
        handle.stop()


def _dropped(conn: Connection, timeout: float = 60) -> bool:
    """True once the daemon has closed ``conn`` (POLLRDHUP: no need to read what it sent)."""
    poller = select.poll()
    poller.register(conn.sock, select.POLLRDHUP)
    return bool(poller.poll(timeout * 1000))


_PRODUCER = "while :; do head -c 65536 /dev/zero | tr '\\0' x; sleep 0.05; done"


def test_an_attached_client_that_stops_reading_is_dropped_and_frees_the_session(
    short_tmp: Path,
) -> None:
    handle = DaemonThread(short_tmp, config="[daemon]\nsend_timeout = 1\n").start()
    try:
        with handle.connect() as conn:
            launched = conn.request(p.Launch(
                argv=("sh", "-c", _PRODUCER), cwd=str(short_tmp), env=session_env(short_tmp),
                options=p.LaunchOptions(allow_cwd=True), detach=True,
                term=p.TermSize(rows=24, cols=80)))
            assert isinstance(launched, p.Launched)
            session = launched.session.id
            stuck = handle.connect()
            follower = handle.connect()
            try:
                assert stuck.request(p.Attach(session=session)) == p.Attached(session=session)
                follower.send(p.Logs(session=session, follow=True))
                assert _dropped(stuck) and _dropped(follower)  # neither read a byte since
            finally:
                stuck.close()
                follower.close()
            with handle.connect() as again:  # the session is no longer busy
                assert again.request(p.Attach(session=session)) == p.Attached(session=session)
            stopped = conn.request(p.Stop(session=session, force=True))
            assert isinstance(stopped, p.Exited)
    finally:
        handle.stop()


def test_a_suspended_attach_with_nothing_to_read_is_dropped_too(short_tmp: Path) -> None:
    """No output, so no send ever blocks: the daemon's pings go unanswered instead."""
    handle = DaemonThread(short_tmp, config="[daemon]\nsend_timeout = 0.5\n").start()
    try:
        with handle.connect() as conn:
            launched = conn.request(p.Launch(
                argv=("cat",), cwd=str(short_tmp), env=session_env(short_tmp),
                options=p.LaunchOptions(allow_cwd=True), detach=True,
                term=p.TermSize(rows=24, cols=80)))
            assert isinstance(launched, p.Launched)
            session = launched.session.id
            with handle.connect() as stuck:
                assert stuck.request(p.Attach(session=session)) == p.Attached(session=session)
                assert _dropped(stuck)  # it reads nothing from here on, pings included
            with handle.connect() as again:
                assert again.request(p.Attach(session=session)) == p.Attached(session=session)
            assert isinstance(conn.request(p.Stop(session=session, force=True)), p.Exited)
    finally:
        handle.stop()
