"""Lifecycle events (a session started, a session exited) and the feeds that deliver them
to subscribers (``nonoctl events``); a feed that falls behind is closed as lagged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

import trio

from ._contracts import Caller
from ._records import SessionRecord

EVENT_BACKLOG: Final = 256


@dataclass(frozen=True)
class LifecycleEvent:
    """A session started or exited: ``record`` is a copy taken at that moment."""

    kind: str
    record: SessionRecord


@final
class EventFeed:
    """Lifecycle events for one subscriber; closed (``lagged``) if it falls behind."""

    def __init__(self, caller: Caller, session_id: str | None) -> None:
        self.caller = caller
        self.session_id = session_id
        self._send, self.channel = trio.open_memory_channel[LifecycleEvent](EVENT_BACKLOG)
        self.lagged = False

    def _offer(self, event: LifecycleEvent) -> bool:
        if not self.caller.may_see(event.record.owner_uid):
            return True
        if self.session_id is not None and event.record.id != self.session_id:
            return True
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.lagged = True
            self._send.close()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        self.channel.close()
        self._send.close()
