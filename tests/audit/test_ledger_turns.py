"""The ledger's appends, served owner after owner: every seal takes the ledger's one turn
(the file's fsync, its line, the line's fsync), and first come first served let one user's
sessions ending together (a burst of 104 here) put every seal of theirs ahead of another
user's, whose session then ended 2 to 3 s later (docs/security-model.md, sixteenth pass).
A real ledger file, real fsyncs; only the order is looked at."""

from __future__ import annotations

import threading
from pathlib import Path

import trio
import trio.testing

from nonod.audit._events import SessionSealed
from nonod.audit._writer import Ledger

ZERO = "0" * 64


def _entry(session: str) -> SessionSealed:
    return SessionSealed(session=session, count=1, merkle_root=ZERO, seal_hash=ZERO,
                         file_sha256=ZERO)


async def test_one_owners_many_appends_do_not_wait_ahead_of_anothers(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path)
    lines: dict[str, int] = {}
    release = threading.Event()

    async def append(session: str, owner: int, hold: bool = False) -> None:
        lines[session] = await ledger.record(
            _entry(session), owner=owner, first=(lambda: release.wait(30)) if hold else None)

    try:
        async with trio.open_nursery() as nursery:
            # 1001's first append holds the turn (its file fsync stands still) while 39 more
            # of 1001's come to wait, and then one of 1000's.
            nursery.start_soon(append, "b0000000", 1001, True)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(1, 40):
                nursery.start_soon(append, f"b{i:07d}", 1001)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(append, "a0000000", 1000)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
    finally:
        await ledger.aclose()
    # Before: line 41, behind every one of 1001's. Now: 1001's holder, one more of 1001's
    # (ahead of 1000 in the rotation), then 1000's.
    assert lines["b0000000"] == 1
    assert lines["a0000000"] == 3, lines["a0000000"]
    assert sorted(lines.values()) == list(range(1, 42))  # every append, once, in the file


async def test_a_cancelled_wait_gives_its_turn_on(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ledger.record, _entry("c0000000"))
            with trio.move_on_after(0) as gone:  # waits behind it, then is cancelled
                await ledger.record(_entry("d0000000"), owner=7)
            assert gone.cancelled_caught
        assert await ledger.record(_entry("e0000000"), owner=7) == 2
    finally:
        await ledger.aclose()
