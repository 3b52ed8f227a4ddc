"""How many control connections the daemon serves, and to whom.

Two caps, both read from ``[daemon]`` on every accept: ``max_connections`` for everyone
together and ``max_connections_per_uid`` for each uid (``SO_PEERCRED``), so that one user of
a system daemon cannot take every slot. A few users together could still hold every shared
slot (two, at the default caps), so on the system daemon a uid is admitted over
``max_connections`` while it holds fewer than :data:`RESERVED_PER_UID` connections (until
twice the cap are open in all), and root up to its own per-uid cap: users who hoard slots
lock neither another user nor the administrator out. A user daemon serves one uid, whose cap
is ``max_connections``. A connection over a cap is told why (a typed
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
#: Connections each uid is admitted up to even when ``max_connections`` are open.
RESERVED_PER_UID: Final = 4


class TooManyConnections(NonoError):
    code = "daemon.too_many_connections"


@final
class ConnectionCounter:
    """Connections being served, in total and per uid."""

    def __init__(self, *, shared: bool = False) -> None:
        #: Several uids share the daemon (the system daemon): each has its reserve.
        self._shared = shared
        self.total = 0
        self._by_uid: Counter[int] = Counter()
        self.refusing = 0

    def admit(self, uid: int, *, total_cap: int, per_uid_cap: int) -> TooManyConnections | None:
        """Count a new connection from ``uid`` in, or say why it is refused."""
        if self.total >= total_cap and not self._reserved(uid, total_cap):
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

    def _reserved(self, uid: int, total_cap: int) -> bool:
        """May ``uid`` have one more connection over the shared cap? Root may (its own cap
        still holds); anyone else within its small reserve, while the reserves together
        stay under a second ``total_cap``."""
        if not self._shared:
            return False  # one uid: the shared cap is its cap
        if uid == 0:
            return True
        return self._by_uid[uid] < RESERVED_PER_UID and self.total < 2 * total_cap

    def release(self, uid: int) -> None:
        self.total -= 1
        self._by_uid[uid] -= 1
        if self._by_uid[uid] <= 0:
            del self._by_uid[uid]
