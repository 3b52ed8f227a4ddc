"""The client side of RFC 6455 WebSocket, as much as talking to nonod over its Unix socket needs.

``nonoctl``'s blocking client used wsproto (and through it h11): about 20 ms of every
command's start-up, more than the rest of the CLI's imports together. This module needs the
standard library only (not even ``typing`` at run time: ``nonoctl._lean`` uses it too). It
speaks to one peer, nonod's trio-websocket server: no extensions are offered (so none can be
agreed), every frame it sends is masked, every frame it receives must not be, and a message
that is not valid UTF-8 or a frame that breaks the protocol ends the conversation
(:class:`ProtocolError`).

    ws = ClientCodec(max_message=...)
    sock.sendall(ws.request(host, resource, subprotocol))
    ws.receive_data(sock.recv(...))          # until ws.read_upgrade() (or Rejected/ProtocolError)
    sock.sendall(ws.text("..."))
    ws.receive_data(sock.recv(...)); for event in ws.events(): ...
"""

from __future__ import annotations

import binascii
import os

TYPE_CHECKING = False  # no ``typing`` at run time (``_lean`` speaks through this codec)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Final

try:  # the builtin module: hashlib would load OpenSSL (2-3 ms) for one SHA-1
    from _sha1 import sha1  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import sha1

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD: Final = 16 * 1024  # the server's answer to the upgrade, headers included

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA


class ProtocolError(Exception):
    """The server broke the WebSocket protocol (or sent more than we accept)."""


class Rejected(Exception):
    """The server answered the upgrade with another status (``status``, ``body``)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"status {status}")
        self.status = status
        self.body = body


class _Event:
    """A value: equal to another of its kind with equal fields."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(repr(getattr(self, name)) for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Text(_Event):
    """A complete text message."""

    __slots__ = ("data",)

    def __init__(self, data: str) -> None:
        self.data = data


class Binary(_Event):
    """A complete binary message (nonod never sends one)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Ping(_Event):
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Close(_Event):
    """The server's close frame (``code`` 1005 when it gave none)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


Event = Text | Binary | Ping | Close


def _accept_for(key: bytes) -> bytes:
    # SHA-1 because RFC 6455 says so: a checksum of the handshake, not a security measure.
    return binascii.b2a_base64(sha1(key + _GUID).digest(), newline=False)  # noqa: S324


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    key = os.urandom(4)
    return bytes(head) + key + _mask(payload, key)


class ClientCodec:
    """Bytes in, events out; frames to send out. No I/O of its own."""

    def __init__(self, *, max_message: int) -> None:
        self._max = max_message
        self._buf = bytearray()
        self._key = b""
        self._subprotocol = ""
        self.accepted = False
        self._fragments: list[bytes] = []
        self._size = 0
        self._opcode = 0  # of the message being reassembled (0: none)
        self._closed = False

    # -- the upgrade
    def request(self, host: str, resource: str, subprotocol: str) -> bytes:
        self._key = binascii.b2a_base64(os.urandom(16), newline=False)
        self._subprotocol = subprotocol
        return (f"GET {resource} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n"
                "\r\n").encode("ascii")

    def read_upgrade(self) -> bool:
        """True once the server's answer to the upgrade is in and accepts it; raises
        :class:`Rejected` for another status, :class:`ProtocolError` for a bad answer."""
        if self.accepted:
            return True
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("the server's upgrade answer is too long")
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP answer: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"a malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        status = int(parts[1])
        if status != 101:
            length = int(headers.get("content-length", "0") or 0)
            if len(self._buf) - end - 4 < min(length, MAX_HEAD):
                return False  # the body is still coming
            raise Rejected(status, bytes(self._buf[end + 4:end + 4 + min(length, MAX_HEAD)]))
        if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in {
                t.strip().lower() for t in headers.get("connection", "").split(",")}:
            raise ProtocolError("the server did not upgrade to WebSocket")
        if headers.get("sec-websocket-accept", "").encode("ascii", "replace") != _accept_for(
                self._key):
            raise ProtocolError("the server's Sec-WebSocket-Accept does not match our key")
        if headers.get("sec-websocket-extensions"):
            raise ProtocolError("the server agreed to an extension we did not offer")
        if headers.get("sec-websocket-protocol", self._subprotocol) != self._subprotocol:
            raise ProtocolError("the server chose another subprotocol")
        del self._buf[:end + 4]
        self.accepted = True
        return True

    # -- frames out
    def text(self, data: str) -> bytes:
        return encode_frame(OP_TEXT, data.encode("utf-8"))

    def binary(self, data: bytes) -> bytes:
        return encode_frame(OP_BINARY, data)

    def pong(self, payload: bytes) -> bytes:
        return encode_frame(OP_PONG, payload)

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """A close frame (empty bytes once one was sent: a second one is not allowed)."""
        if self._closed:
            return b""
        self._closed = True
        payload = b"" if code == 1005 else code.to_bytes(2, "big") + reason.encode()[:123]
        return encode_frame(OP_CLOSE, payload)

    # -- bytes in
    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def events(self) -> Iterator[Event]:
        """The events complete in what was received (the upgrade's answer first)."""
        if not self.read_upgrade():
            return
        while True:
            frame = self._next_frame()
            if frame is None:
                return
            event = self._on_frame(*frame)
            if event is not None:
                yield event

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise ProtocolError("a frame with reserved bits set")
        if second & 0x80:
            raise ProtocolError("the server masked a frame")
        n, at = second & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, at = int.from_bytes(buf[2:10], "big"), 10
        if n > self._max:
            raise ProtocolError("the server sent an oversized frame")
        if len(buf) < at + n:
            return None
        payload = bytes(buf[at:at + n])
        del buf[:at + n]
        return bool(first & 0x80), first & 0x0F, payload

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode >= OP_CLOSE:
            if not fin or len(payload) > 125:
                raise ProtocolError("a fragmented or oversized control frame")
            if opcode == OP_PING:
                return Ping(payload)
            if opcode == OP_PONG:
                return None
            if opcode != OP_CLOSE:
                raise ProtocolError(f"an unknown control opcode {opcode:#x}")
            if len(payload) == 1:
                raise ProtocolError("a close frame with a one-byte payload")
            code = int.from_bytes(payload[:2], "big") if payload else 1005
            try:
                return Close(code, payload[2:].decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError("a close reason that is not UTF-8") from None
        if opcode == OP_CONTINUATION:
            if not self._opcode:
                raise ProtocolError("a continuation frame outside a message")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._opcode:
                raise ProtocolError("a new message inside a fragmented one")
            self._opcode = opcode
        else:
            raise ProtocolError(f"an unknown data opcode {opcode:#x}")
        self._size += len(payload)
        if self._size > self._max:
            raise ProtocolError("the server sent an oversized message")
        self._fragments.append(payload)
        if not fin:
            return None
        data = b"".join(self._fragments)
        kind = self._opcode
        self._fragments.clear()
        self._size = 0
        self._opcode = 0
        if kind == OP_BINARY:
            return Binary(data)
        try:
            return Text(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("a text message that is not UTF-8") from None
