"""Lifecycle events (a session started, a session exited; an approval opened or closed) and
the feeds that deliver them to subscribers (``nonoctl events``); a feed that falls behind
is closed as lagged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from ..approvals import Pending
from ._contracts import Caller
from ._feed import LaggingFeed
from ._records import SessionRecord

EVENT_BACKLOG: Final = 256


@dataclass(frozen=True)
class LifecycleEvent:
    """A session started or exited: ``record`` is a copy taken at that moment."""

    kind: str
    record: SessionRecord


@dataclass(frozen=True)
class ApprovalNotice:
    """An approval was opened (``approval_pending``) or closed (``approval_closed``)."""

    kind: str
    approval: Pending


FeedEvent = LifecycleEvent | ApprovalNotice


@final
class EventFeed(LaggingFeed[FeedEvent]):
    """Lifecycle events for one subscriber (those it may see; of one session, or all); closed
    (``lagged``) if it falls behind (``_feed``)."""

    def __init__(self, caller: Caller, session_id: str | None) -> None:
        super().__init__(EVENT_BACKLOG)
        self.caller = caller
        self.session_id = session_id

    def _offer(self, event: FeedEvent) -> bool:
        if isinstance(event, ApprovalNotice):
            owner, session_id = event.approval.owner_uid, event.approval.session_id
        else:
            owner, session_id = event.record.owner_uid, event.record.id
        if not self.caller.may_see(owner):
            return True
        if self.session_id is not None and session_id != self.session_id:
            return True
        return self.offer(event)
