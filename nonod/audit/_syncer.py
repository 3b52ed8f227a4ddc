"""Group commit of live sessions' audit files: :class:`AuditSyncer`.

Without it each :class:`~nonod.audit._writer.AuditWriter` runs a task of its own
(``writer.run``) that wakes ``fsync_interval`` seconds after its file's first unsynced record
and hands one fsync to a worker thread. A daemon with many live sessions pays that per
session: a task, a timer that expires, a hop to a worker thread and back.

A writer created with a syncer (``AuditWriter.create(syncer=...)``) needs no task: it tells
the syncer when its pending records must be durable (``fsync_interval`` after the first, or
at once when ``fsync_every`` are pending). At the earliest such time the syncer takes every
file with records pending, the ones due then and the others (early is allowed: the promise
is "at most ``fsync_interval`` after the first unsynced record"), and fsyncs them one after
the other in one worker thread. A file whose fsync fails is marked broken and its writer's
``on_sync_failed`` is called (the daemon stops that session: fail closed); the others are
not affected.

The syncer's task runs in the nursery it was given only while some file has records
pending, and ends by itself when none has: a daemon's session nursery can close once its
sessions are sealed.

Not for the gate of a launch (``AuditWriter.sync_started``, its own worker thread at once)
nor for the seal (the seal's own thread): those are waited for by a launch or a session's
end and must not queue behind other files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, final

import trio

if TYPE_CHECKING:
    from ._writer import AuditWriter


@final
class AuditSyncer:
    """The timed fsyncs of every writer created with it, batched (see the module doc)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        #: Writers with records pending, each with the time they must be durable by.
        self._due: dict[AuditWriter, float] = {}
        self._next = math.inf
        self._wake = trio.Event()
        self._running = False
        #: Worker-thread hand-overs so far, and the files they synced (for tests and benches).
        self.batches = 0
        self.files = 0

    def due(self, writer: AuditWriter, at: float) -> None:
        """``writer`` has records pending that must be durable by ``at`` (trio time)."""
        before = self._due.get(writer)
        if before is not None and before <= at:
            return
        self._due[writer] = at
        if at < self._next:
            self._next = at
            self._wake.set()
        if not self._running:
            self._running = True
            self._nursery.start_soon(self._run, name="audit syncer")

    def forget(self, writer: AuditWriter) -> None:
        """``writer`` syncs no more through the syncer (sealed or closed). The task looks
        again at what is due (and ends if nothing is: a closing daemon does not wait for a
        file's time that will not come)."""
        if self._due.pop(writer, None) is not None:
            self._wake.set()

    async def _run(self) -> None:
        try:
            while self._due:
                self._next = min(self._due.values())
                if self._next > trio.current_time():
                    self._wake = trio.Event()
                    with trio.move_on_at(self._next):
                        await self._wake.wait()
                    continue
                await self._sync_all()
        finally:
            self._running = False
            self._next = math.inf

    async def _sync_all(self) -> None:
        writers = list(self._due)
        self._due.clear()
        self._next = math.inf
        batch: list[tuple[AuditWriter, Callable[[], None]]] = []
        for writer in writers:
            job = writer._begin_timed_sync()
            if job is not None:
                batch.append((writer, job))
        if not batch:
            return
        #: Each file's outcome: None until its fsync returned, then True or what it raised.
        outcomes: list[Exception | bool | None] = [None] * len(batch)

        def sync_each() -> None:
            for i, (_, job) in enumerate(batch):
                try:
                    job()
                except Exception as exc:  # noqa: BLE001 - that file's failure, reported below
                    outcomes[i] = exc
                else:
                    outcomes[i] = True

        self.batches += 1
        self.files += len(batch)
        try:
            await trio.to_thread.run_sync(sync_each)
        finally:
            # Whatever happened here (the daemon cancelled before the thread ran): every
            # lock taken is given back, and a file not synced stays pending.
            for (writer, _), outcome in zip(batch, outcomes, strict=True):
                writer._end_timed_sync(outcome)
