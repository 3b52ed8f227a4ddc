"""The bound on what the daemon's end of a program's proxy connection buffers."""

from __future__ import annotations

import _socket
import socket
from typing import Final

import trio

#: What the daemon's end of a program's connection may buffer each way (``SO_SNDBUF`` and
#: ``SO_RCVBUF``; the kernel counts twice that). That end is on the loopback of the session's
#: network namespace (or the host's), where this is no limit on speed; left to the kernel's
#: tuning, a tunnel whose program stopped reading (or outran an upstream that does not read)
#: kept up to ``tcp_wmem``'s maximum (4 MiB) or ``tcp_rmem``'s (6 MiB by default, often more)
#: there, for each of the session's connections, out of the host's TCP memory.
CLIENT_BUFFER: Final = 256 * 1024


def bound_buffers(sock: trio.socket.SocketType | _socket.socket) -> bool:
    """Give a proxy listener's connections :data:`CLIENT_BUFFER` each way (the kernel copies
    the listener's into each connection it completes from then on), or one connection;
    whether both were set."""
    bounded = True
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, CLIENT_BUFFER)
        except OSError:
            bounded = False
    return bounded
