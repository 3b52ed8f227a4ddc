"""The one way a session's producers (output, lifecycle events) feed a subscriber.

The producer never waits for a subscriber: each gets a bounded channel, and one whose backlog
is full is dropped: its channel is closed (the reader sees the end of the channel) and
``lagged`` is set, so that the reader can say why its stream ended (``end_of_output`` with
reason ``lagged``) rather than hold the session or the daemon back.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class LaggingFeed(Generic[T]):
    """A bounded channel to one subscriber, closed (``lagged``) if it falls behind."""

    def __init__(self, backlog: int) -> None:
        self._send, self.channel = trio.open_memory_channel[T](backlog)
        self.lagged = False
        #: False once nothing more can be offered (lagged, ended or closed): the producer may
        #: forget it.
        self.open = True

    def offer(self, item: T) -> bool:
        """Queue ``item`` without waiting; False once this feed is gone (lagged or closed)."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.lagged = True
            self.open = False
            self._send.close()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.open = False
            return False
        return True

    def end(self) -> None:
        """No more items: the reader sees the end of the channel after the queued ones."""
        self.open = False
        self._send.close()

    def close(self) -> None:
        """The reader is done (both ends closed)."""
        self.open = False
        self.channel.close()
        self._send.close()
