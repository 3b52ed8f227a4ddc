"""Ended sessions' cgroups removed in batches (``_removals``), against the real kernel (v1
or v2): the groups of sessions that end together go in one worker job, in order; a group a
process stays in is tried again and what is left in it killed."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from nonod.policy import ResolvedPolicy
from nonod.sessions import _removals
from nonod.sessions._limits import SessionCgroups
from nonod.sessions._removals import GroupRemovals

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
              pytest.mark.root]


async def test_groups_ending_together_go_in_one_job_and_a_process_left_is_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cgroups = SessionCgroups.open(tmp_path)
    if cgroups.backend is None:
        cgroups.close()
        pytest.skip(cgroups.why)
    batches: list[list[str]] = []  # each worker job's groups, in the order tried
    remove_all = _removals._remove_all

    def seen(batch: list[Any], left: list[Any]) -> None:
        batches.append([os.path.basename(queued.group.path) for queued in batch])
        remove_all(batch, left)

    monkeypatch.setattr(_removals, "_remove_all", seen)
    policy = ResolvedPolicy(name="fake", grants=(), denials=())
    staying: subprocess.Popen[bytes] | None = None
    try:
        groups = []
        for name in ("s1", "s2", "s3"):
            group, _ = await cgroups.make(name, policy)
            assert group is not None
            groups.append(group)
        staying = subprocess.Popen(["sleep", "60"])
        for path in groups[1].procs:
            Path(path).write_text(str(staying.pid))
        async with trio.open_nursery() as nursery:
            removals = GroupRemovals(nursery)
            for group in groups:
                removals.add(group)
            assert removals.pending() == 3
            await removals.drained()
            assert removals.pending() == 0
            nursery.cancel_scope.cancel()
        # One job for the three, in order; the busy one again in the next ones (the first
        # of those killed what stayed; it leaves the group once it has exited).
        assert batches[0] == ["s1", "s2", "s3"]
        assert len(batches) >= 2 and all(batch == ["s2"] for batch in batches[1:])
        assert staying.wait(10) == -signal.SIGKILL
        for group in groups:
            assert not any(os.path.exists(os.path.dirname(p)) for p in group.procs)
    finally:
        if staying is not None and staying.poll() is None:
            staying.kill()
        cgroups.close()


@pytest.fixture
def cgroups(tmp_path: Path) -> Iterator[SessionCgroups]:
    opened = SessionCgroups.open(tmp_path)
    try:
        if opened.backend is None:
            pytest.skip(opened.why)
        yield opened
    finally:
        opened.close()


async def test_an_ended_oom_watchs_eventfd_is_closed_by_the_removal_not_on_the_loop(
        cgroups: SessionCgroups) -> None:
    # Closing a v1 OOM eventfd takes the kernel up to a millisecond and more: the watch's end
    # (on the session's end's path) leaves it open, and the group's removal, in its worker
    # thread, closes it before removing the group.
    from nonod.sessions._oomwatch import OomWatches

    group, _ = await cgroups.make("s1", ResolvedPolicy(name="fake", grants=(), denials=()))
    assert group is not None
    async with trio.open_nursery() as nursery:
        watches = OomWatches(nursery)
        end = watches.watch(group, lambda: None)
        if end is None:
            pytest.skip("no OOM eventfd (cgroup v2, or no memory hierarchy)")
        (efd,) = watches._watches
        end()
        assert os.readlink(f"/proc/self/fd/{efd}") == "anon_inode:[eventfd]"  # still open
        closing = tuple(watches.closing())
        assert closing == (efd,) and watches.closing() == []
        removals = GroupRemovals(nursery)
        removals.add(group, close=closing)
        await removals.drained()
        gone = not os.path.exists(f"/proc/self/fd/{efd}")  # (or its number reused)
        assert gone or os.readlink(f"/proc/self/fd/{efd}") != "anon_inode:[eventfd]"
        watches.close()
        nursery.cancel_scope.cancel()


async def test_a_group_added_once_the_nursery_is_closed_is_not_queued(tmp_path: Path) -> None:
    """A refused launch's group goes to the queue (``ProgramStarter._remove_refused``), which
    removes it in place when the queue cannot take it: at the daemon's exit, its nursery
    closed. ``add`` then raises and queues nothing (the group had stayed queued, and been
    removed twice)."""
    cgroups = SessionCgroups.open(tmp_path)
    if cgroups.backend is None:
        cgroups.close()
        pytest.skip(cgroups.why)
    try:
        group, _ = await cgroups.make("s1", ResolvedPolicy(name="fake", grants=(), denials=()))
        assert group is not None
        async with trio.open_nursery() as nursery:
            removals = GroupRemovals(nursery)
        with pytest.raises(RuntimeError):
            removals.add(group)
        assert removals.pending() == 0
        assert os.path.isdir(group.path)
        assert group.remove(kill=True)
    finally:
        cgroups.close()


async def test_a_group_left_by_a_batch_the_daemons_exit_cut_short_is_given_up_on(
        cgroups: SessionCgroups, monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon's exit cancels the removals' task while a batch runs in its worker thread
    # (waited for); a group that batch could not remove (a process still in it) goes back to
    # the queue, where ``give_up`` finds it, kills what is in it and closes its files. It was
    # dropped: its control files stayed open for the process's life.
    import threading

    inside, release = threading.Event(), threading.Event()
    remove_all = _removals._remove_all

    def held(batch: list[Any], left: list[Any]) -> None:
        inside.set()
        release.wait(10)
        remove_all(batch, left)

    monkeypatch.setattr(_removals, "_remove_all", held)
    group, _ = await cgroups.make("s1", ResolvedPolicy(name="fake", grants=(), denials=()))
    assert group is not None
    staying = subprocess.Popen(["sleep", "60"])
    try:
        for path in group.procs:
            Path(path).write_text(str(staying.pid))
        async with trio.open_nursery() as nursery:
            removals = GroupRemovals(nursery)
            removals.add(group)
            while not inside.is_set():
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
            release.set()
        assert removals.pending() == 1  # back in the queue, not lost
        removals.give_up()
        assert staying.wait(10) == -signal.SIGKILL
        assert removals.pending() == 0
    finally:
        if staying.poll() is None:
            staying.kill()
