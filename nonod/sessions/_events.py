"""Lifecycle events (a session started, a session exited) and the feeds that deliver them
to subscribers (``nonoctl events``); a feed that falls behind is closed as lagged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from ._contracts import Caller
from ._feed import LaggingFeed
from ._records import SessionRecord

EVENT_BACKLOG: Final = 256


@dataclass(frozen=True)
class LifecycleEvent:
    """A session started or exited: ``record`` is a copy taken at that moment."""

    kind: str
    record: SessionRecord


@final
class EventFeed(LaggingFeed[LifecycleEvent]):
    """Lifecycle events for one subscriber (those it may see; of one session, or all); closed
    (``lagged``) if it falls behind (``_feed``)."""

    def __init__(self, caller: Caller, session_id: str | None) -> None:
        super().__init__(EVENT_BACKLOG)
        self.caller = caller
        self.session_id = session_id

    def _offer(self, event: LifecycleEvent) -> bool:
        if not self.caller.may_see(event.record.owner_uid):
            return True
        if self.session_id is not None and event.record.id != self.session_id:
            return True
        return self.offer(event)
