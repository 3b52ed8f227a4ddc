"""How many control connections the daemon serves, and to whom.

Two caps, both read from ``[daemon]`` on every accept: ``max_connections`` for everyone
together and ``max_connections_per_uid`` for each uid (``SO_PEERCRED``), so that one user of
a system daemon cannot take every slot. A connection over either cap is told why (a typed
``daemon.too_many_connections`` error) when a refusal slot is free, and simply closed when
even those are taken: refusing must not cost more than serving.
"""

from __future__ import annotations

from collections import Counter
from typing import Final, final

from ..errors import NonoError

#: Refused connections answered at once; more are closed without a word.
REFUSAL_SLOTS: Final = 16
#: Longest a refused connection may take to be told why.
REFUSAL_TIMEOUT: Final = 1.0


class TooManyConnections(NonoError):
    code = "daemon.too_many_connections"


@final
class ConnectionCounter:
    """Connections being served, in total and per uid."""

    def __init__(self) -> None:
        self.total = 0
        self._by_uid: Counter[int] = Counter()
        self.refusing = 0

    def admit(self, uid: int, *, total_cap: int, per_uid_cap: int) -> TooManyConnections | None:
        """Count a new connection from ``uid`` in, or say why it is refused."""
        if self.total >= total_cap:
            return TooManyConnections(
                f"too many connections to nonod ({self.total} open, max_connections = "
                f"{total_cap})",
                hint="close idle clients, or raise daemon.max_connections",
            )
        if self._by_uid[uid] >= per_uid_cap:
            return TooManyConnections(
                f"too many connections from uid {uid} ({self._by_uid[uid]} open, "
                f"max_connections_per_uid = {per_uid_cap})",
                hint="close idle clients of this user, or raise daemon.max_connections_per_uid",
            )
        self.total += 1
        self._by_uid[uid] += 1
        return None

    def release(self, uid: int) -> None:
        self.total -= 1
        self._by_uid[uid] -= 1
        if self._by_uid[uid] <= 0:
            del self._by_uid[uid]
