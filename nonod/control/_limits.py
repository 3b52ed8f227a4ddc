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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, final

import trio

from .._quiet import QuietWarning
from ..errors import NonoError

#: Refused connections answered at once; more are closed without a word.
REFUSAL_SLOTS: Final = 16
#: Longest a refused connection may take to be told why.
REFUSAL_TIMEOUT: Final = 1.0
#: Connections each uid is admitted up to even when ``max_connections`` are open.
RESERVED_PER_UID: Final = 4
#: Unread request bytes one uid may have in the system daemon, in ``max_message_bytes``.
RECEIVE_BUDGET_MESSAGES: Final = 4
#: Longest a read waits for room in its uid's budget before its connection is broken.
BUDGET_WAIT: Final = 2.0
#: Launches of one uid the system daemon works on at once; the uid's further ones wait.
LAUNCHES_PER_UID: Final = 4
#: New connections one uid may open on the system daemon at once, and per second after that.
NEW_CONNECTIONS_BURST: Final = 128
NEW_CONNECTIONS_PER_SECOND: Final = 64.0
#: New connections of one uid that may wait for their turn at once; more are closed.
NEW_CONNECTIONS_WAITING: Final = 32


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


@final
class ConnectionRate:
    """New connections per uid on the system daemon: a bucket of
    :data:`NEW_CONNECTIONS_BURST` tokens refilled at :data:`NEW_CONNECTIONS_PER_SECOND`.

    Serving a connection costs the daemon's one event loop its peer check and WebSocket
    handshake before the peer can be told anything, and a connection that closes at once
    costs it as much; the caps on connections held bound nothing here. One member of the
    socket group connecting and closing in a loop (1,100 a second from 4 processes) made
    another user's launch take 0.5 to 2 s instead of 0.3. A connection over its uid's rate
    waits for the token it is due (at most :data:`NEW_CONNECTIONS_WAITING` of a uid's wait,
    each less than a second), and is served then: a client that connects one connection
    after another is slowed to the rate, never refused. Beyond those, its new connections are
    closed unread, which costs an ``accept`` and a ``close``. Root is not counted; a user
    daemon has one caller and no rate.
    """

    def __init__(self, burst: int = NEW_CONNECTIONS_BURST,
                 per_second: float = NEW_CONNECTIONS_PER_SECOND, *,
                 waiting: int = NEW_CONNECTIONS_WAITING, spare_root: bool = True) -> None:
        self._burst = float(burst)
        self._per_second = per_second
        #: Connections of one uid that may wait for a token (0: none wait, the rest close).
        self._waiting = waiting
        self._spare_root = spare_root
        #: Each uid's tokens (below zero: owed to waiting connections) and when counted.
        self._buckets: dict[int, tuple[float, float]] = {}

    def delay(self, uid: int, now: float) -> float | None:
        """Seconds a new connection of ``uid`` must wait for its token (0: none; the token
        is taken, or promised), or None when too many of the uid's already wait."""
        if uid == 0 and self._spare_root:
            return 0.0
        if len(self._buckets) > 1024:
            self._forget_full(now)
        tokens, then = self._buckets.get(uid, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._per_second) - 1.0
        if tokens < -self._waiting:
            self._buckets[uid] = (tokens + 1.0, now)
            return None
        self._buckets[uid] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / self._per_second

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (they would start full again anyway)."""
        for uid, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self._per_second >= self._burst:
                del self._buckets[uid]


class OverBudget(Exception):
    """A uid's unread request bytes stayed at their budget: the read is refused."""


@final
class ReceiveBudget:
    """Bytes read from each uid's connections that have not yet been taken as requests.

    What has arrived of an unfinished message stays in the daemon's memory until the message
    is complete; without a bound per uid, one user's connections, each holding all but the
    last byte of a ``max_message_bytes`` message, held that much memory each. What a read
    brings is charged (:meth:`charge`); a request taken or a closed connection gives it back
    (:meth:`release`). A read waits while its uid holds its whole budget
    (:meth:`wait_for_room`), and one that waits :data:`BUDGET_WAIT` seconds breaks its
    connection, which gives back what it held: a uid that fills its budget loses its own
    connections, never another uid's room.
    """

    def __init__(self, per_uid: Callable[[], int]) -> None:
        self._per_uid = per_uid
        self._held: Counter[int] = Counter()
        self._freed = trio.Event()
        self._closing = QuietWarning("closing a control connection: its user's unfinished "
                                     "requests fill its budget")

    def held(self, uid: int) -> int:
        return self._held[uid]

    async def wait_for_room(self, uid: int) -> None:
        """Return once ``uid`` holds less than its budget; OverBudget if it still holds it
        all after :data:`BUDGET_WAIT`. (The read that follows takes what it gets: the budget
        may be overrun by one read per connection of the uid.)"""
        if self._held[uid] < self._per_uid():
            return
        with trio.move_on_after(BUDGET_WAIT):
            while self._held[uid] >= self._per_uid():
                await self._freed.wait()
            return
        reason = f"uid {uid} has {self._held[uid]} bytes of unfinished requests in the daemon"
        self._closing.warn(reason=reason)
        raise OverBudget(reason)

    def charge(self, uid: int, count: int) -> None:
        self._held[uid] += count

    def release(self, uid: int, count: int) -> None:
        if count <= 0:
            return
        self._held[uid] -= count
        if self._held[uid] <= 0:
            del self._held[uid]
        self._freed.set()
        self._freed = trio.Event()


@final
class LaunchShares:
    """Launches the system daemon works on at once, per uid.

    Every launch goes through one fork server, which takes plans one at a time, and through
    work the daemon shares (records, audit files, cgroups). Without a share, one member of
    the socket group launching on many connections at once put all of them in that queue
    ahead of everyone else's: another user's launch waited behind the whole storm (measured:
    5 s instead of 0.3 s behind 20 of them). A uid's launch now waits for one of its own
    :data:`LAUNCHES_PER_UID` turns (first come, first served), so another user's launch has
    at most that many of each other user's ahead of it. A user daemon has one caller and no
    shares.
    """

    def __init__(self, per_uid: int = LAUNCHES_PER_UID) -> None:
        self._per_uid = per_uid
        self._turns: dict[int, trio.Semaphore] = {}
        self._waiting: Counter[int] = Counter()

    @asynccontextmanager
    async def turn(self, uid: int) -> AsyncIterator[None]:
        """Hold one of ``uid``'s turns while the block runs (waiting for one first)."""
        turns = self._turns.get(uid)
        if turns is None:
            turns = self._turns[uid] = trio.Semaphore(self._per_uid)
        self._waiting[uid] += 1
        try:
            async with turns:
                yield
        finally:
            self._waiting[uid] -= 1
            if not self._waiting[uid]:
                del self._waiting[uid], self._turns[uid]
