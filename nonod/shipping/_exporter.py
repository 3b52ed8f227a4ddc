"""The exporter: every sink gets every record of every session, in order, at least once.

One task per sink (a *lane*). A lane walks the session files (:class:`SessionReader`), sends
what its cursor (:class:`Cursor`) has not acknowledged in batches, and advances the cursor
after each batch the sink accepted. A record sink (syslog, OTLP) gets each session's records
as they are written; a sealed-only sink (the envelope) gets each session once, when it is
sealed. A failed batch is retried after a capped, jittered backoff; nothing moves on until it
is accepted, so a session's records leave in order.

The audit hub only wakes lanes up (a record was written); the files are the source of truth,
so a lane that was asleep, a daemon that restarted or a hub subscription that was dropped
loses nothing. Lanes also look every ``poll_interval`` seconds.

Backlog: when a sink has more than ``max_backlog_bytes`` of records it has not acknowledged,
the lane reports :class:`BacklogChanged` (``full=True``) once, and again (``full=False``)
when it is back under the limit. Nothing is dropped: the files stay, and retention keeps a
session until every sink has it (:meth:`Exporter.undelivered`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, final

import structlog
import trio

from ._backoff import Backoff
from ._cursor import Cursor
from ._errors import ExportError, SinkError
from ._source import SEAL_KIND, SessionReader, ShipRecord

if TYPE_CHECKING:
    from ..audit._fanout import AuditHub
    from ..audit._writer import Ledger

log = structlog.get_logger("nonod.shipping")


class Sink(Protocol):
    """Where records go. ``deliver`` returns once the receiver has them, or raises
    :class:`SinkError`. A ``sealed_only`` sink gets a whole sealed session per call."""

    name: str
    sealed_only: bool

    async def deliver(self, records: Sequence[ShipRecord]) -> None: ...


@final
@dataclass(frozen=True)
class LaneSettings:
    batch: int = 500
    max_backlog_bytes: int = 256 * 1024 * 1024
    retry_min: float = 0.5
    retry_max: float = 60.0
    poll_interval: float = 5.0
    #: Seconds to let records gather after a wake-up before the next pass: a busy session
    #: then costs one read, fsync and delivery per linger, not one per record.
    linger: float = 0.2


@final
@dataclass(frozen=True)
class BacklogChanged:
    """A sink's backlog went over (``full``) or back under its limit."""

    sink: str
    full: bool
    pending_bytes: int
    pending_sessions: int
    limit: int


@final
@dataclass
class LaneStatistics:
    delivered_records: int = 0
    delivered_batches: int = 0
    failures: int = 0
    pending_bytes: int = 0
    pending_sessions: int = 0
    backlog_full: bool = False
    last_error: str | None = None


@final
@dataclass
class _Lane:
    sink: Sink
    settings: LaneSettings
    cursor: Cursor
    reader: SessionReader
    backoff: Backoff
    stats: LaneStatistics = field(default_factory=LaneStatistics)
    wake: trio.Event = field(default_factory=trio.Event)
    #: Sessions whose file does not verify (or cannot be read): skipped, logged once.
    broken: dict[str, str] = field(default_factory=dict)


@final
class Exporter:
    """Runs every lane; ``run`` until cancelled. Build it with the sinks, then
    ``await nursery.start(exporter.run)``."""

    def __init__(self, state_dir: Path, sinks: Sequence[tuple[Sink, LaneSettings]], *,
                 hub: AuditHub | None = None,
                 on_backlog: Callable[[BacklogChanged], None] | None = None,
                 ledger: Ledger | None = None) -> None:
        self.state_dir = state_dir
        self._hub = hub
        #: The daemon's ledger: a sealed-only sink (the envelope, signed with the daemon's
        #: key) ships a session only as the ledger in memory recorded its seal.
        self._ledger = ledger
        if ledger is not None:  # a session's ledger line follows its seal: look again then
            ledger.on_recorded(self.wake)
        self._on_backlog = on_backlog
        names = [sink.name for sink, _ in sinks]
        if len(set(names)) != len(names):
            raise ExportError(f"two sinks have the same name: {sorted(names)}")
        self._lanes = [
            _Lane(sink=sink, settings=settings, cursor=Cursor.load(state_dir, sink.name),
                  reader=SessionReader(state_dir),
                  backoff=Backoff(settings.retry_min, settings.retry_max))
            for sink, settings in sinks
        ]

    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes]

    def statistics(self) -> dict[str, LaneStatistics]:
        return {lane.sink.name: lane.stats for lane in self._lanes}

    def undelivered(self, sessions: Sequence[str] | None = None) -> set[str]:
        """Those of ``sessions`` (default: every session file, a directory listing) that some
        sink has not fully acknowledged. Retention keeps them."""
        if sessions is None:
            sessions = self._lanes[0].reader.sessions() if self._lanes else []
        return {s for s in sessions for lane in self._lanes if not lane.cursor.done(s)}

    def wake(self) -> None:
        for lane in self._lanes:
            lane.wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            if self._hub is not None:
                nursery.start_soon(self._follow_hub, self._hub)
            for lane in self._lanes:
                nursery.start_soon(self._run_lane, lane)
            task_status.started()

    async def _follow_hub(self, hub: AuditHub) -> None:
        while True:
            subscription = hub.subscribe(buffer=1024)
            async for _ in subscription:
                self.wake()
            if not subscription.lagged:
                return  # the hub closed
            self.wake()  # dropped for lagging: the files have it all; subscribe again

    async def _run_lane(self, lane: _Lane) -> None:
        name = lane.sink.name
        while True:
            lane.wake = trio.Event()
            try:
                await self._pass(lane)
            except ExportError as exc:
                lane.stats.failures += 1
                lane.stats.last_error = exc.message
                delay = lane.backoff.next()
                event = "audit export failed" if isinstance(exc, SinkError) else \
                    "audit export cannot go on"
                log.warning(event, sink=name, error=exc.message, retry_in=round(delay, 3))
                await self._check_backlog(lane)
                await trio.sleep(delay)
                continue
            lane.backoff.reset()
            if not lane.broken:
                lane.stats.last_error = None
            await self._check_backlog(lane)
            with trio.move_on_after(lane.settings.poll_interval):
                await lane.wake.wait()
                await trio.sleep(lane.settings.linger)

    async def _pass(self, lane: _Lane) -> None:
        """Send everything that is there now; raises on the first failure."""
        reader, cursor = lane.reader, lane.cursor
        sessions = await trio.to_thread.run_sync(reader.sessions)
        gone = set(cursor.sessions()) - set(sessions)
        if gone:
            for session in gone:
                reader.forget(session)
            await trio.to_thread.run_sync(cursor.forget, gone)
        for session in sessions:
            if not cursor.done(session):
                await self._ship_session(lane, session)

    async def _ship_session(self, lane: _Lane, session: str) -> None:
        reader, cursor = lane.reader, lane.cursor
        while True:
            if lane.sink.sealed_only:
                if not await trio.to_thread.run_sync(reader.sealed, session):
                    return
                after, limit = 0, None
            else:
                after, limit = cursor.position(session).seq, lane.settings.batch
            try:
                records = await trio.to_thread.run_sync(reader.read, session, after, limit)
            except ExportError as exc:
                # One bad file must not hold back every other session: skip it, say so once.
                if lane.broken.get(session) != exc.message:
                    log.error("audit export skips a session whose file does not verify",
                              sink=lane.sink.name, session=session, error=exc.message)
                lane.broken[session] = lane.stats.last_error = exc.message
                return
            if lane.sink.sealed_only and records and not self._as_sealed(lane, session,
                                                                         records[-1]):
                return
            lane.broken.pop(session, None)
            if not records:
                return
            await self._deliver(lane, session, records)
            if records[-1].kind == SEAL_KIND or lane.sink.sealed_only:
                return

    def _as_sealed(self, lane: _Lane, session: str, seal: ShipRecord) -> bool:
        """Whether the seal read from the file is the one the daemon recorded in its ledger.
        The file's chain checks out whoever rewrote it (every hash recomputed): the ledger
        held in memory is what tells, and a sink that signs what it ships must not sign such
        a file with the daemon's key. Not listed yet (its ledger line follows the seal's
        fsync): the next pass."""
        if self._ledger is None:
            return True
        listed = self._ledger.seal_hash_of(session)
        if listed is None:
            return False
        if listed != seal.hash:
            message = (f"session {session}'s file does not match the ledger (seal hash "
                       "differs): it was rewritten after it was sealed; not shipping it")
            if lane.broken.get(session) != message:
                log.error("audit export skips a session whose file does not match the ledger",
                          sink=lane.sink.name, session=session)
            lane.broken[session] = lane.stats.last_error = message
            return False
        return True

    async def _deliver(self, lane: _Lane, session: str, records: list[ShipRecord]) -> None:
        if not records:
            return
        await lane.sink.deliver(records)
        last = records[-1]
        await trio.to_thread.run_sync(
            lambda: lane.cursor.advance(session, last.seq, done=last.kind == SEAL_KIND))
        lane.reader.acknowledge(last)
        lane.stats.delivered_records += len(records)
        lane.stats.delivered_batches += 1

    async def _check_backlog(self, lane: _Lane) -> None:
        def measure() -> tuple[int, int]:
            pending = [lane.reader.pending_bytes(s) for s in lane.reader.sessions()
                       if not lane.cursor.done(s)]
            return sum(pending), sum(1 for p in pending if p)

        try:
            pending_bytes, pending_sessions = await trio.to_thread.run_sync(measure)
        except ExportError:
            return
        stats, limit = lane.stats, lane.settings.max_backlog_bytes
        stats.pending_bytes, stats.pending_sessions = pending_bytes, pending_sessions
        full = pending_bytes > limit
        if full == stats.backlog_full:
            return
        stats.backlog_full = full
        change = BacklogChanged(sink=lane.sink.name, full=full, pending_bytes=pending_bytes,
                                pending_sessions=pending_sessions, limit=limit)
        if full:
            log.error("audit export backlog full: the sink is not keeping up; nothing is "
                      "dropped, sessions stay on disk until it has them",
                      sink=change.sink, pending_bytes=pending_bytes,
                      pending_sessions=pending_sessions, limit=limit)
        else:
            log.info("audit export backlog back under its limit", sink=change.sink,
                     pending_bytes=pending_bytes)
        if self._on_backlog is not None:
            self._on_backlog(change)
