"""A stdlib-only WebSocket client for nonod, runnable by any uid with the system python.

    python3 rawclient.py SOCKET < messages.jsonl

Connects, does the WebSocket handshake, then for each line on stdin sends it as one text
frame and prints the reply (one line of JSON). Prints ``CONNECT-ERROR <ERRNO>`` if it cannot
connect and ``CLOSED <code>`` when the daemon closes the connection. The tests run it as other
users and inside other namespaces, where the project's own dependencies are not importable.
"""

import errno
import os
import socket
import struct
import sys

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def frame(payload: bytes, opcode: int = 1) -> bytes:
    header = bytearray([0x80 | opcode])
    size = len(payload)
    if size < 126:
        header.append(0x80 | size)
    elif size < 65536:
        header.append(0x80 | 126)
        header += struct.pack("!H", size)
    else:
        header.append(0x80 | 127)
        header += struct.pack("!Q", size)
    mask = os.urandom(4)
    header += mask
    return bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    first, second = read_exact(sock, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", read_exact(sock, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", read_exact(sock, 8))[0]
    return first & 0x0F, read_exact(sock, size)


HANDSHAKE = (
    "GET /nonod HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + "\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nono.v1\r\n\r\n"
).encode()


def upgrade(sock: socket.socket) -> bytes:
    """Send the WebSocket handshake; the daemon's answer (b"" if it closed first)."""
    sock.sendall(HANDSHAKE)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            return b""
        head += chunk
    return head


def welcomed(path: str) -> tuple[socket.socket, bytes]:
    """A connection to ``path`` that has said hello, and the daemon's answer to it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    upgrade(sock)
    sock.sendall(frame(b'{"type": "hello", "protocol": 1}'))
    return sock, read_frame(sock)[1]


def main() -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    try:
        sock.connect(sys.argv[1])
    except OSError as exc:
        print("CONNECT-ERROR", errno.errorcode.get(exc.errno or 0, str(exc)), flush=True)
        return 0
    head = upgrade(sock)
    if not head:
        print("CLOSED handshake", flush=True)
        return 0
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        print("REJECTED", head.split(b"\r\n", 1)[0].decode(), flush=True)
        return 0
    lines = [line.strip() for line in sys.stdin if line.strip()] or [""]
    for line in lines:
        if line:
            sock.sendall(frame(line.encode()))
        while True:
            try:
                opcode, payload = read_frame(sock)
            except (EOFError, OSError):
                print("CLOSED eof", flush=True)
                return 0
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
                print("CLOSED", code, flush=True)
                return 0
            if opcode == 1:
                print(payload.decode(), flush=True)
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
