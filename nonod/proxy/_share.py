"""One uid's share of the connections every session's proxy holds in the system daemon.

Each connection a proxy serves may hold an upstream connection, a socket of the daemon's in
the host's network namespace that takes one of the host's ephemeral ports
(``net.ipv4.ip_local_port_range``). Towards one address and port no more connections than
that range holds can exist at once, whatever program makes them, and a proxy serves up to
256 connections for each of a user's sessions: one user's sessions holding idle tunnels to
one host could leave every other program of the host unable to connect there. So the
connections of one uid's sessions, all proxies together, are bounded by a share of the
range (:func:`uid_share_cap`), and by a share of the daemon's descriptor table where that is
the smaller; a connection over it is refused like one over the session's own cap (503).
Used from trio's thread and the pump thread alike.
"""

from __future__ import annotations

import threading
from typing import Final, final

_PORT_RANGE: Final = "/proc/sys/net/ipv4/ip_local_port_range"
#: The range the kernel uses when the file cannot be read.
_DEFAULT_PORTS: Final = 60999 - 32768 + 1


def ephemeral_ports() -> int:
    """How many ports ``ip_local_port_range`` holds."""
    try:
        with open(_PORT_RANGE, encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return _DEFAULT_PORTS
    return max(1, high - low + 1)


#: A connection costs the daemon two descriptors (client, upstream), and a tunnel copying in
#: bulk two pipes more: one uid's connections keep to half of the descriptors sessions'
#: traffic may use (``nonod._descriptors``) at this many per connection.
_DESCRIPTORS_PER_CONNECTION: Final = 6


def uid_share_cap() -> int:
    """The connections one uid's sessions may hold at once: an eighth of the ephemeral
    ports, at least 256 (one session's own cap); and, where the daemon's descriptor table is
    smaller than that makes room for, at most what half of the table's part for sessions'
    traffic holds (every user's sessions share that part: one user's tunnels filled it,
    and every other user's proxy connections were refused; the twenty-ninth pass)."""
    from .._descriptors import watermark

    ports = max(256, ephemeral_ports() // 8)
    return max(1, min(ports, watermark() // (2 * _DESCRIPTORS_PER_CONNECTION)))


@final
class UidShare:
    """How many proxy connections each uid holds, against one cap for every uid."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self, uid: int) -> bool:
        """Count one more connection of ``uid``; False (nothing counted) at its cap."""
        with self._lock:
            held = self._held.get(uid, 0)
            if held >= self.cap:
                return False
            self._held[uid] = held + 1
            return True

    def give(self, uid: int) -> None:
        """One connection ``take`` counted has closed."""
        with self._lock:
            left = self._held.get(uid, 0) - 1
            if left > 0:
                self._held[uid] = left
            else:
                self._held.pop(uid, None)
