"""Live fan-out: many subscribers, filters, and a stuck one that never slows anybody."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from nonod.audit import AuditError, Network, Record, Seal, read_records
from nonod.audit._fanout import AuditHub, Dropped, HubStatistics, LiveRecord, Subscription
from nonod.audit._writer import AuditWriter

from ._support import SESSION, session_events

N_EVENTS = 10_000


def _record(seq: int, event: Network | Seal | None = None) -> Record:
    return Record(seq=seq, ts="2025-06-01T12:00:00.000000Z", prev="00" * 32, hash="11" * 32,
                  event=event or Network(mode="connect", decision="allow", host=f"h{seq}",
                                         port=443))


async def test_twenty_subscribers_one_stuck(state_dir: Path) -> None:
    """A session writing 10 000 events through the writer: 19 readers see all of them in
    order, the one that never reads is dropped after its buffer fills. Appending cannot wait:
    it is synchronous, and the stuck subscriber costs it nothing but a failed send_nowait."""
    hub = AuditHub()
    readers = [hub.subscribe(session=SESSION, buffer=256) for _ in range(19)]
    stuck = hub.subscribe(session=SESSION, buffer=256)
    writer = await AuditWriter.create(state_dir, SESSION, hub=hub)
    received: list[list[int]] = [[] for _ in readers]

    async def drain(index: int) -> None:
        async for item in readers[index]:
            assert isinstance(item, LiveRecord), item
            received[index].append(item.record.seq)

    async with trio.open_nursery() as nursery:
        for index in range(len(readers)):
            nursery.start_soon(drain, index)
        for i in range(N_EVENTS):
            writer.append(Network(mode="connect", decision="allow", host=f"h{i}.example",
                                  port=443))
            await trio.lowlevel.checkpoint()  # the session's other work: readers run here
        await writer.seal()

    expected = list(range(1, N_EVENTS + 2))  # the events and the seal
    assert all(seqs == expected for seqs in received)
    assert stuck.lagged
    items = []
    while True:
        try:
            items.append(stuck.receive_nowait())
        except trio.EndOfChannel:
            break
    assert len(items) == 257
    assert [i.record.seq for i in items[:256] if isinstance(i, LiveRecord)] == \
        list(range(1, 257))
    assert items[-1] == Dropped(reason="lagged", buffer=256, delivered=256)
    assert hub.statistics().dropped == 1
    assert len(read_records(writer.path)) == N_EVENTS + 1


def test_publishing_never_waits_even_without_a_checkpoint() -> None:
    """Publish 10 000 records in one synchronous loop: subscribers with room get them all,
    in order; a buffer that fills is dropped at once (no await anywhere)."""
    hub = AuditHub()
    roomy = [hub.subscribe(buffer=N_EVENTS) for _ in range(19)]
    small = hub.subscribe(buffer=10)
    for seq in range(1, N_EVENTS + 1):
        hub.publish(LiveRecord(session=SESSION, record=_record(seq)))
    for sub in roomy:
        seqs = []
        while True:
            try:
                item = sub.receive_nowait()
            except trio.WouldBlock:
                break
            assert isinstance(item, LiveRecord)
            seqs.append(item.record.seq)
        assert seqs == list(range(1, N_EVENTS + 1))
        assert not sub.lagged
    assert small.lagged and small.statistics().delivered == 10
    assert hub.statistics().subscribers == 19


async def test_a_dropped_subscriber_reads_the_buffer_then_the_notice() -> None:
    hub = AuditHub()
    sub = hub.subscribe(buffer=2)
    for seq in (1, 2, 3, 4):
        hub.publish(LiveRecord(session="a", record=_record(seq)))
    got = [item async for item in sub]
    assert [g.record.seq for g in got if isinstance(g, LiveRecord)] == [1, 2]
    assert got[-1] == Dropped(reason="lagged", buffer=2, delivered=2)
    with pytest.raises(trio.EndOfChannel):
        await sub.receive()


async def test_filters_by_session_kind_and_visibility() -> None:
    hub = AuditHub()
    only_b = hub.subscribe(session="b")
    only_network = hub.subscribe(kinds={"network"})
    only_mine = hub.subscribe(visible=lambda session: session.startswith("mine"))
    events = session_events()
    for seq, (session, event) in enumerate(
            [("a", events[0]), ("b", events[3]), ("mine-1", events[6]), ("b", events[5])],
            start=1):
        hub.publish(LiveRecord(session=session,
                               record=Record(seq=seq, ts="2025-06-01T12:00:00.000000Z",
                                             prev="00" * 32, hash="11" * 32, event=event)))

    def drain(sub: Subscription) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while True:
            try:
                item = sub.receive_nowait()
            except trio.WouldBlock:
                return out
            assert isinstance(item, LiveRecord)
            out.append((item.session, item.record.kind))

    assert drain(only_b) == [("b", "network"), ("b", "network")]
    assert drain(only_network) == [("b", "network"), ("b", "network")]
    assert drain(only_mine) == [("mine-1", "fs_denied")]
    with pytest.raises(AuditError, match="unknown event kind: exfil"):
        hub.subscribe(kinds={"network", "exfil"})
    with pytest.raises(AuditError, match="at least one"):
        hub.subscribe(buffer=0)


async def test_seal_ends_a_session_stream_and_close_ends_all() -> None:
    hub = AuditHub()
    follow = hub.subscribe(session="a")
    everything = hub.subscribe()
    seal = Seal(session="a", count=1, head="11" * 32, merkle_root="22" * 32)
    hub.publish(LiveRecord(session="a", record=_record(1)))
    hub.publish(LiveRecord(session="a", record=_record(2, seal)))
    kinds = [item.record.kind async for item in follow if isinstance(item, LiveRecord)]
    assert kinds == ["network", "seal"]
    assert hub.statistics().subscribers == 1
    hub.close()
    assert len([item async for item in everything]) == 2  # no Dropped: it was not lagging
    late = hub.subscribe()
    with pytest.raises(trio.EndOfChannel):
        late.receive_nowait()


async def test_a_subscriber_that_leaves_is_forgotten() -> None:
    hub = AuditHub()
    sub = hub.subscribe()
    await sub.aclose()
    hub.publish(LiveRecord(session="a", record=_record(1)))
    assert hub.statistics().subscribers == 0
    assert hub.statistics().dropped == 0


async def test_a_reader_blocked_on_receive_is_woken() -> None:
    hub = AuditHub()
    sub = hub.subscribe()
    got: list[int] = []

    async def reader() -> None:
        item = await sub.receive()
        assert isinstance(item, LiveRecord)
        got.append(item.record.seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        hub.publish(LiveRecord(session="a", record=_record(7)))
    assert got == [7]


async def test_receive_batch_drains_a_burst_in_one_wakeup() -> None:
    hub = AuditHub()
    sub = hub.subscribe(buffer=8)
    for seq in range(1, 6):
        hub.publish(LiveRecord(session="a", record=_record(seq)))
    batch = await sub.receive_batch()
    assert [i.record.seq for i in batch if isinstance(i, LiveRecord)] == [1, 2, 3, 4, 5]
    for seq in range(6, 16):  # 10 more than fit: dropped after 8
        hub.publish(LiveRecord(session="a", record=_record(seq)))
    batch = await sub.receive_batch(max_items=100)
    assert len(batch) == 9 and batch[-1] == Dropped(reason="lagged", buffer=8, delivered=13)
    with pytest.raises(trio.EndOfChannel):
        await sub.receive_batch()


def test_publishing_with_no_subscriber_still_counts() -> None:
    hub = AuditHub()
    for seq in range(1, 4):
        hub.publish(LiveRecord(session=SESSION, record=_record(seq)))
    late = hub.subscribe(buffer=10)
    hub.publish(LiveRecord(session=SESSION, record=_record(4)))
    assert hub.statistics() == HubStatistics(subscribers=1, published=4, dropped=0)
    item = late.receive_nowait()
    assert isinstance(item, LiveRecord) and item.record.seq == 4


def _buffered(sub: Subscription) -> list[int]:
    seqs: list[int] = []
    while True:
        try:
            item = sub.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return seqs
        assert isinstance(item, LiveRecord), item
        seqs.append(item.record.seq)


async def test_a_held_writer_publishes_its_records_at_announce_in_order(
        state_dir: Path) -> None:
    """A launch's writer (``hold_live``): what it writes is in the file at once and reaches
    subscribers only at ``announce`` (its program exists), then each record as written."""
    hub = AuditHub()
    sub = hub.subscribe(session=SESSION)
    writer = await AuditWriter.create(state_dir, SESSION, hub=hub, hold_live=True)
    first = session_events()[:2]
    for event in first:
        writer.append(event)
    assert _buffered(sub) == []
    assert len(read_records(writer.path)) == 2  # written, only not announced
    writer.announce()
    writer.append(Network(mode="connect", decision="allow", host="h.example", port=443))
    await writer.seal()
    assert _buffered(sub) == [1, 2, 3, 4]
    writer.announce()  # once is enough; again, nothing
    assert hub.statistics().published == 4


@pytest.mark.parametrize("end", ["aclose", "seal"])
async def test_a_held_writer_closed_unannounced_publishes_nothing(
        state_dir: Path, end: str) -> None:
    """A launch refused after its file was made: its followers never hear of it."""
    hub = AuditHub()
    sub = hub.subscribe()
    writer = await AuditWriter.create(state_dir, SESSION, hub=hub, hold_live=True)
    for event in session_events()[:2]:
        writer.append(event)
    await (writer.aclose() if end == "aclose" else writer.seal())
    writer.announce()  # too late: nothing
    assert _buffered(sub) == []
    assert hub.statistics().published == 0
