"""The daemon's audit syncer: live sessions' timed fsyncs batched, on time, fail closed.

Trio time (``autojump_clock``); ``fsync_every`` with the syncer: tests/audit/test_writer.py's
``test_fsync_after_n_events``; ``writer.sync()`` waits for an fsync in flight (it needs the
writer's lock, which the syncer holds until its worker thread returned), so the counts read
after it are settled.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from nonod.audit import AuditWriteError, read_records
from nonod.audit._syncer import AuditSyncer
from nonod.audit._writer import AuditWriter

from ._support import session_events


async def _writer(state_dir: Path, session: str, syncer: AuditSyncer, *,
                  every: int = 100) -> AuditWriter:
    return await AuditWriter.create(state_dir, session, fsync_interval=5.0, fsync_every=every,
                                    syncer=syncer)


async def test_files_pending_are_synced_together_when_the_first_is_due(
        state_dir: Path, autojump_clock: trio.abc.Clock) -> None:
    """One worker thread for every file with records pending, at the earliest due time;
    then the syncer's task ends by itself (the nursery closes)."""
    events = session_events()
    async with trio.open_nursery() as nursery:
        syncer = AuditSyncer(nursery)
        a = await _writer(state_dir, "a1", syncer)
        b = await _writer(state_dir, "b2", syncer)
        idle = await _writer(state_dir, "c3", syncer)
        t0 = trio.current_time()
        a.append(events[0])
        await trio.sleep(2)
        b.append(events[0])
        b.append(events[1])
        await trio.sleep(2.9)
        assert (a.statistics().fsyncs, b.statistics().fsyncs) == (0, 0)
        assert syncer.batches == 0
        await trio.sleep(0.2)
        await a.sync()
        await b.sync()
        for writer in (a, b):
            stats = writer.statistics()
            assert stats.pending == 0 and stats.fsyncs == 1
            assert stats.last_fsync_at == pytest.approx(t0 + 5.0)
        assert (syncer.batches, syncer.files) == (1, 2)
        assert idle.statistics().fsyncs == 0

        # Later records: the interval runs from the first unsynced one again.
        t1 = trio.current_time()
        a.append(events[1])
        await trio.sleep(5.1)
        await a.sync()
        assert a.statistics().last_fsync_at == pytest.approx(t1 + 5.0)
        assert (syncer.batches, syncer.files) == (2, 3)
        for writer in (a, b, idle):
            await writer.seal()
    assert len(read_records(a.path)) == 3


async def test_records_written_while_the_gate_syncs_are_handed_over(
        state_dir: Path, autojump_clock: trio.abc.Clock) -> None:
    """A launch's gate (``sync_started``) holds the writer while its fsync runs; what is
    written meanwhile goes to the syncer once the gate is waited for."""
    events = session_events()
    async with trio.open_nursery() as nursery:
        syncer = AuditSyncer(nursery)
        writer = await _writer(state_dir, "a1", syncer)
        writer.append(events[0])
        gate = writer.sync_started()
        t0 = trio.current_time()
        writer.append(events[1])  # the enforcement record, say
        await gate()
        assert writer.statistics().fsyncs == 1
        assert writer.statistics().pending == 1
        await trio.sleep(5.1)
        await writer.sync()
        stats = writer.statistics()
        assert stats.pending == 0 and stats.fsyncs == 2
        assert stats.last_fsync_at == pytest.approx(t0 + 5.0)
        assert syncer.batches == 1
        await writer.seal()


async def test_a_failed_fsync_breaks_that_file_only(state_dir: Path,
                                                    autojump_clock: trio.abc.Clock) -> None:
    """Fail closed: the file whose fsync failed is broken (no more writes) and its owner is
    told (the daemon stops that session); the other file in the batch is synced."""
    events = session_events()
    failed: list[AuditWriteError] = []
    async with trio.open_nursery() as nursery:
        syncer = AuditSyncer(nursery)
        bad = await _writer(state_dir, "a1", syncer)
        good = await _writer(state_dir, "b2", syncer)
        bad.on_sync_failed = failed.append
        bad.append(events[0])
        good.append(events[0])
        # The bad file's descriptor now names a pipe: the kernel refuses its fsync (EINVAL).
        read_end, write_end = os.pipe()
        os.dup2(read_end, bad._fd)
        os.close(read_end)
        os.close(write_end)
        await trio.sleep(5.1)
        await good.sync()
        await bad.sync()
        assert good.statistics().fsyncs == 1 and not good.statistics().broken
        assert bad.statistics().broken and bad.statistics().fsyncs == 0
        assert len(failed) == 1 and "cannot sync" in failed[0].message
        with pytest.raises(AuditWriteError):
            bad.append(events[1])
        await bad.aclose()
        await good.seal()


async def test_the_syncer_ends_when_the_last_file_pending_is_sealed(
        state_dir: Path, autojump_clock: trio.abc.Clock) -> None:
    """A daemon closing its sessions does not wait for a file's fsync time that will not
    come: the seal forgets the file and the syncer's task ends at once."""
    async with trio.open_nursery() as nursery:
        syncer = AuditSyncer(nursery)
        writer = await AuditWriter.create(state_dir, "a1", fsync_interval=3600.0,
                                          syncer=syncer)
        t0 = trio.current_time()
        writer.append(session_events()[0])  # due in an hour
        await trio.sleep(1)  # the syncer waits for that
        await writer.seal()
    assert trio.current_time() - t0 < 60
    assert syncer.batches == 0


async def test_work_after_the_next_sync_runs_in_the_batch_thread_once(
        state_dir: Path, autojump_clock: trio.abc.Clock) -> None:
    """``after_next_sync`` (the daemon writes a session's running record so) runs in the
    timed batch's worker thread once that file's fsync returned, and only then: not again
    at the next fsync, and not at all when the file is sealed first."""
    import threading

    events = session_events()
    ran: list[tuple[int, bool]] = []
    async with trio.open_nursery() as nursery:
        syncer = AuditSyncer(nursery)
        # (The seal's wait for its worker thread lets the autojump clock run to the next
        # due fsync: no other file has one yet.)
        sealed_first = await _writer(state_dir, "b2", syncer)
        sealed_first.after_next_sync(lambda: ran.append((0, False)))
        sealed_first.append(events[0])
        await sealed_first.seal()
        assert ran == []
        writer = await _writer(state_dir, "a1", syncer)
        writer.after_next_sync(lambda: ran.append((threading.get_ident(),
                                                   writer.statistics().pending == 0)))
        writer.append(events[0])
        await trio.sleep(5.1)
        await writer.sync()
        assert [(ident != threading.get_ident(), settled) for ident, settled in ran] == [
            (True, True)]
        writer.append(events[1])
        await trio.sleep(5.1)
        await writer.sync()
        assert writer.statistics().fsyncs == 2 and len(ran) == 1
        await writer.seal()
