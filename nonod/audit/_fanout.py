"""Live fan-out: every written record, to any number of subscribers, never waiting for them.

:meth:`AuditHub.publish` is synchronous. It offers the record to each matching subscriber's
bounded memory channel with ``send_nowait``. A subscriber whose buffer is full
(``trio.WouldBlock``) is marked lagged and dropped on the spot: its channel is closed, it can
still read what was buffered, then one :class:`Dropped` notice, then end of channel. It never
misses records silently (a dropped subscriber resubscribes and reads the gap from the file),
and it never slows the session: publishing costs the same whether a subscriber reads or not.

Records reach the hub only after they are on disk (the writer publishes after its write).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final, final

import msgspec
import trio

from ._errors import AuditError
from ._events import EVENT_KINDS, SEAL_KIND, Record

DEFAULT_BUFFER: Final = 256
_KNOWN_KINDS: Final = EVENT_KINDS | {SEAL_KIND}


class LiveRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A record as subscribers get it: the stored line and the session it belongs to."""

    session: str
    record: Record


class Dropped(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dropped"):
    """The last thing a dropped subscriber reads: it fell ``buffer`` records behind.

    ``delivered`` records reached its channel before that; the next record for it was the
    one that did not fit. ``last_seq`` per session is in the records it did read.
    """

    reason: str
    buffer: int
    delivered: int


@final
@dataclass(frozen=True)
class SubscriptionStatistics:
    buffered: int
    delivered: int
    lagged: bool
    open: bool


@final
@dataclass(frozen=True)
class HubStatistics:
    subscribers: int
    published: int
    dropped: int


@final
class Subscription:
    """The receiving side of one subscriber. Iterate it, or call :meth:`receive`.

    Yields :class:`LiveRecord` items in the order they were written, then (only if the
    subscriber fell behind) one :class:`Dropped`. It ends when the subscriber is dropped, when
    it followed one session and that session was sealed, or when the hub closes.
    """

    def __init__(self, *, session: str | None, kinds: frozenset[str] | None,
                 visible: Callable[[str], bool] | None, buffer: int) -> None:
        self.session = session
        self.kinds = kinds
        self.buffer = buffer
        self.lagged = False
        self._visible = visible
        self._send, self._receive = trio.open_memory_channel[LiveRecord](buffer)
        self._delivered = 0
        self._dropped: Dropped | None = None
        self._open = True

    # -- the hub's side (synchronous, never blocks)
    def _wants(self, item: LiveRecord, kind: str) -> bool:
        if self.session is not None and item.session != self.session:
            return False
        if self.kinds is not None and kind not in self.kinds:
            return False
        return self._visible is None or self._visible(item.session)

    def _offer(self, item: LiveRecord, kind: str) -> bool:
        """Deliver if wanted; False when this subscriber is gone (dropped or closed)."""
        if not self._open:
            return False
        if not self._wants(item, kind):
            return True
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.lagged = True
            self._dropped = Dropped(reason="lagged", buffer=self.buffer,
                                    delivered=self._delivered)
            self._end()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The subscriber closed its side: it left, nothing to tell it.
            self._end()
            return False
        self._delivered += 1
        return True

    def _end(self) -> None:
        self._open = False
        self._send.close()

    # -- the subscriber's side
    def receive_nowait(self) -> LiveRecord | Dropped:
        """The next item, or ``trio.WouldBlock``; ``trio.EndOfChannel`` after the last."""
        try:
            return self._receive.receive_nowait()
        except trio.EndOfChannel:
            return self._notice()

    async def receive(self) -> LiveRecord | Dropped:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            return self._notice()

    async def receive_batch(self, max_items: int = DEFAULT_BUFFER
                            ) -> list[LiveRecord | Dropped]:
        """Wait for at least one item, then take whatever else is already buffered (up to
        ``max_items``) without waiting again. A reader that forwards items over a socket
        keeps up with bursts this way: one wake-up drains the buffer, where ``receive``
        takes one item per scheduling round. Raises ``trio.EndOfChannel`` after the last."""
        items: list[LiveRecord | Dropped] = [await self.receive()]
        while len(items) < max_items and not isinstance(items[-1], Dropped):
            try:
                items.append(self.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return items

    def _notice(self) -> Dropped:
        dropped, self._dropped = self._dropped, None
        if dropped is None:
            raise trio.EndOfChannel
        return dropped

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveRecord | Dropped:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def end(self) -> None:
        """End it from the publishing side, as a seal does: what is buffered is still
        received, then ``trio.EndOfChannel``. For a follower of one session that ended
        without a seal published (a launch refused before its program existed, whose
        records were never announced)."""
        self._end()

    def close(self) -> None:
        """Unsubscribe: the hub forgets this subscriber at its next publish or subscribe."""
        self._receive.close()
        self._end()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            buffered=self._receive.statistics().current_buffer_used,
            delivered=self._delivered, lagged=self.lagged, open=self._open,
        )


@final
class AuditHub:
    """Where writers publish and subscribers subscribe. One per daemon; pass it around."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self._published = 0
        self._dropped = 0
        self._closed = False

    def subscribe(
        self,
        session: str | None = None,
        kinds: Collection[str] | None = None,
        buffer: int = DEFAULT_BUFFER,
        visible: Callable[[str], bool] | None = None,
    ) -> Subscription:
        """A new subscriber, receiving records published from now on.

        ``session`` limits it to one session (and ends it when that session is sealed),
        ``kinds`` to some event kinds (``network``, ``fs_denied``, ``seal``...), ``visible``
        to sessions for which it returns True (the control server passes the caller's
        permission check). ``buffer`` records may wait unread before it is dropped.
        """
        if buffer < 1:
            raise AuditError(f"a subscriber's buffer must hold at least one record, not {buffer}")
        wanted: frozenset[str] | None = None
        if kinds is not None:
            wanted = frozenset(kinds)
            unknown = sorted(wanted - _KNOWN_KINDS)
            if unknown:
                raise AuditError(f"unknown event kind: {', '.join(unknown)}",
                                 hint="kinds are " + ", ".join(sorted(_KNOWN_KINDS)))
        subscription = Subscription(session=session, kinds=wanted, visible=visible,
                                    buffer=buffer)
        if self._closed:
            subscription._end()
        else:
            # Those that left go now, not at the next publish: on a quiet daemon a user's
            # connections, each subscribing and closing, would otherwise pile them up.
            self._subscribers = [s for s in self._subscribers if s._open]
            self._subscribers.append(subscription)
        return subscription

    def publish(self, item: LiveRecord) -> None:
        """Offer ``item`` to every subscriber that wants it. Never blocks, never raises for a
        subscriber's sake."""
        if self._closed:
            return
        self._published += 1
        if not self._subscribers:
            return
        kind = item.record.kind
        gone = False
        for subscription in self._subscribers:
            if not subscription._offer(item, kind):
                gone = True
                if subscription.lagged:
                    self._dropped += 1
        if kind == SEAL_KIND:
            for subscription in self._subscribers:
                if subscription.session == item.session:
                    subscription._end()
                    gone = True
        if gone:
            self._subscribers = [s for s in self._subscribers if s._open]

    def close(self) -> None:
        """End every subscription (daemon shutdown). Later publishes are ignored."""
        self._closed = True
        for subscription in self._subscribers:
            subscription._end()
        self._subscribers = []

    def statistics(self) -> HubStatistics:
        return HubStatistics(subscribers=len(self._subscribers), published=self._published,
                             dropped=self._dropped)
