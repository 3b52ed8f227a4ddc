"""nonoctl's WebSocket client codec against wsproto's server side (the library under
trio-websocket, which nonod serves with): what one sends, the other reads."""

from __future__ import annotations

import pytest
import wsproto
import wsproto.events as ev

from nonoctl import _ws


def _pair(**codec: int) -> tuple[_ws.ClientCodec, wsproto.WSConnection]:
    client = _ws.ClientCodec(max_message=codec.get("max_message", 1 << 20))
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(client.request("localhost", "/nonod", "nono.v1"))
    (request,) = list(server.events())
    assert isinstance(request, ev.Request)
    assert request.subprotocols == ["nono.v1"] and request.extensions == []
    client.receive_data(server.send(ev.AcceptConnection(subprotocol="nono.v1")))
    assert client.read_upgrade()
    return client, server


def test_messages_both_ways_fragmented_and_large() -> None:
    client, server = _pair()
    big = "é" * 70_000  # a 64-bit length, multibyte UTF-8
    server.receive_data(client.text(big) + client.text("small"))
    texts = [e.data for e in server.events() if isinstance(e, ev.TextMessage)]
    assert "".join(texts) == big + "small"
    data = (server.send(ev.TextMessage(data="ab", message_finished=False))
            + server.send(ev.TextMessage(data="cd")) + server.send(ev.Ping(payload=b"x")))
    client.receive_data(data[:3])
    assert list(client.events()) == []
    client.receive_data(data[3:])
    assert list(client.events()) == [_ws.Text("abcd"), _ws.Ping(b"x")]
    server.receive_data(client.pong(b"x"))
    assert [type(e) for e in server.events()] == [ev.Pong]


def test_close_is_answered_once() -> None:
    client, server = _pair()
    client.receive_data(server.send(ev.CloseConnection(code=1001, reason="bye")))
    assert list(client.events()) == [_ws.Close(1001, "bye")]
    server.receive_data(client.close(1001))
    assert [type(e) for e in server.events()] == [ev.CloseConnection]
    assert client.close() == b""


@pytest.mark.parametrize("frame", [
    b"\x81\x82abcd\x00\x00",            # masked by the server
    b"\xc1\x01x",                       # a reserved bit (an extension nobody agreed to)
    b"\x81\x02\xc3\x28",                # not UTF-8
    b"\x80\x01x",                       # a continuation outside a message
    b"\x09\x01x",                       # a fragmented ping
    b"\x83\x00",                        # an unknown opcode
])
def test_protocol_violations_end_the_conversation(frame: bytes) -> None:
    client, _ = _pair()
    client.receive_data(frame)
    with pytest.raises(_ws.ProtocolError):
        list(client.events())


def test_an_oversized_message_is_refused_before_it_is_buffered() -> None:
    client, server = _pair(max_message=1000)
    client.receive_data(server.send(ev.TextMessage(data="x" * 1001))[:10])
    with pytest.raises(_ws.ProtocolError, match="oversized"):
        list(client.events())


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
])
def test_a_wrong_accept_key_is_refused(answer: bytes) -> None:
    client = _ws.ClientCodec(max_message=1000)
    client.request("localhost", "/nonod", "nono.v1")
    client.receive_data(answer)
    with pytest.raises(_ws.ProtocolError, match="Accept"):
        client.read_upgrade()


def test_a_rejection_carries_its_status_and_body() -> None:
    client = _ws.ClientCodec(max_message=1000)
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(client.request("localhost", "/nonod", "nono.v1"))
    list(server.events())
    answer = server.send(ev.RejectConnection(status_code=403, has_body=True,
                                             headers=[(b"content-length", b"6")]))
    client.receive_data(answer)
    assert not client.read_upgrade()  # the body is still to come
    client.receive_data(server.send(ev.RejectData(data=b"denied")))
    with pytest.raises(_ws.Rejected) as caught:
        client.read_upgrade()
    assert (caught.value.status, caught.value.body) == (403, b"denied")
