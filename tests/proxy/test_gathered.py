"""``_intercept._Gathered`` reads every TLS record that has arrived, within the size asked:
it relies on ``trio.SSLStream``'s private ``_ssl_object`` and ``_incoming``. These tests fail
loudly if a trio release renames them or stops keeping received bytes there (the timing test
of the red-team pass would only grow slower), and check that what one read gathers is
bounded by the size asked however many records are waiting."""

from __future__ import annotations

import ssl

import trio
import trustme

from nonod.proxy._intercept import _Gathered

RECORDS = 300


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("gathered.test").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def _one_byte_records(client: trio.SSLStream[trio.SocketStream], count: int) -> None:
    """``count`` one-byte records, all in one write on the wire."""
    obj, outgoing = client._ssl_object, client._outgoing
    for _ in range(count):
        obj.write(b"x")
    await client.transport_stream.send_all(outgoing.read())


async def _pair() -> tuple[_Gathered, trio.SSLStream[trio.SocketStream]]:
    server_ctx, client_ctx = _contexts()
    a, b = trio.socket.socketpair()
    server = trio.SSLStream(trio.SocketStream(a), server_ctx, server_side=True)
    client = trio.SSLStream(trio.SocketStream(b), client_ctx, server_hostname="gathered.test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return _Gathered(server), client  # type: ignore[arg-type]


async def _read_until(stream: _Gathered, total: int, max_bytes: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(len(await stream.receive_some(max_bytes)))
    return sizes


async def test_one_read_takes_every_record_that_has_arrived() -> None:
    gathered, client = await _pair()
    await _one_byte_records(client, RECORDS)
    # The first read may come before every byte is in: a second takes the rest.
    assert len(await _read_until(gathered, RECORDS, 65536)) <= 2


async def test_what_one_read_gathers_is_bounded_by_the_size_asked() -> None:
    gathered, client = await _pair()
    await _one_byte_records(client, RECORDS)
    sizes = await _read_until(gathered, RECORDS, 7)
    assert max(sizes) <= 7 and sum(sizes) == RECORDS, sizes
