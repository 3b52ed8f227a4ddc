"""A fake nonod for the tests: listens on a Unix socket and counts what clients send it.

    python3 fakeserver.py SOCKET

Binds and listens on SOCKET, prints ``READY`` and accepts connections until its stdin is
closed. Then it takes what is still queued, reads what each connection sent and prints
``CONNECTIONS <n> BYTES <m>``. Stdlib only: the tests run it as another user.
"""

import os
import select
import socket
import sys


def drain(conn: socket.socket) -> int:
    conn.setblocking(False)
    total = 0
    while True:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, ConnectionError):
            return total
        if not data:
            return total
        total += len(data)


def main() -> int:
    os.umask(0o000)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sys.argv[1])
    listener.listen(16)
    print("READY", flush=True)
    conns: list[socket.socket] = []
    while True:
        ready = select.select([listener, sys.stdin], [], [])[0]
        if listener in ready:
            conns.append(listener.accept()[0])
        if sys.stdin in ready and not sys.stdin.buffer.read1(4096):
            break
    listener.setblocking(False)
    while True:
        try:
            conns.append(listener.accept()[0])
        except BlockingIOError:
            break
    received = sum(drain(conn) for conn in conns)
    print("CONNECTIONS", len(conns), "BYTES", received, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
