"""The next session's directory and audit file, made ahead (``nonod.sessions._slot``): a
launch takes them with two renames and wakes no worker thread for them; the audit contract
(first records durable before the program, the file sealed and verifying at the end) holds
for a file made ahead as for one made at the launch; a slot is never taken for a session by
any reader of ``sessions/``, and one left by a daemon that died goes at the next start.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio

from nonod.audit import list_sessions, verify_session_file
from nonod.policy import Denial, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import ExitStatus, LaunchRequest
from nonod.sessions import CallerReads, Process, SessionPlan
from nonod.sessions._records import read_records
from nonod.sessions._slot import SLOT_DIR, SLOT_FILE, clear_slot, make_slot

from .test_registry import ME, Harness, _audited_registry


def _slot_file(harness: Harness) -> Path:
    return harness.state_dir / "sessions" / SLOT_DIR / SLOT_FILE


async def _run_one(harness: Harness, plan: SessionPlan | None = None) -> str:
    with trio.fail_after(10):
        session = await harness.registry.launch(plan or harness.plan())
        harness.registry.launch_answered()  # as the control server does, once it replied
        harness.launcher.launched[-1].finish(ExitStatus(code=0))
        await session.wait_exited()
    return session.id


async def test_a_launch_takes_the_directory_and_audit_file_made_ahead(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    harness = await _audited_registry(nursery, tmp_path)
    await _run_one(harness)  # the first makes its own; once it is answered, the next is made
    assert await harness.registry._slot.made()
    ahead = os.stat(_slot_file(harness)).st_ino

    second = await _run_one(harness)

    audit = harness.state_dir / "sessions" / second / "audit.ndjson"
    assert os.stat(audit).st_ino == ahead  # the very file made ahead, renamed
    assert oct(os.stat(audit.parent).st_mode & 0o777) == "0o700"
    assert oct(os.stat(audit).st_mode & 0o777) == "0o600"
    events = [json.loads(line)["event"]["type"] for line in audit.read_text().splitlines()]
    assert events[0] == "session_started"
    assert verify_session_file(audit).sealed
    assert not (audit.parent / SLOT_FILE).exists()
    assert await harness.registry._slot.made()  # and the next one is there again
    with trio.fail_after(10):
        await harness.registry.shutdown()


class _Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


async def test_with_a_slot_and_masks_made_in_the_resolution_no_thread_makes_the_file(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The launch's worker threads: the gate's pair and the seal's, none for the audit file
    # or its directory (the slot) nor for the secret masks (made in the resolution's thread);
    # and since nothing of it waits, no task of its own either.
    harness = await _audited_registry(nursery, tmp_path)
    await _run_one(harness)
    assert await harness.registry._slot.made()
    hops: list[str] = []
    real = trio.to_thread.run_sync

    async def run_sync(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__qualname__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)
    plan = harness.plan()
    reads = CallerReads(workdir=plan.request.cwd, env={}, owner=ME, system=False,
                        trust=False, masks=harness.registry.secret_masks(ME, None))
    reads.read(plan.policy, None)  # as the resolution's thread does
    plan = dataclasses.replace(plan, caller_reads=reads)
    spawned = _Spawned()
    trio.lowlevel.add_instrument(spawned)
    try:
        with trio.fail_after(10):
            session = await harness.registry.launch(plan)
    finally:
        trio.lowlevel.remove_instrument(spawned)

    assert [hop for hop in hops if "make" in hop or "private_dir" in hop] == []
    assert [name for name in spawned.names if "_together" in name] == []
    harness.launcher.launched[-1].finish(ExitStatus(code=0))
    with trio.fail_after(10):
        await session.wait_exited()
        await harness.registry.shutdown()


async def test_masks_made_for_other_secret_files_are_made_again_at_the_start(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The resolution's thread made the masks of a policy naming no secret file; the launch's
    # policy names one (the plan changed after the resolution): that file is masked all the
    # same.
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    harness = await _audited_registry(nursery, tmp_path)
    plan = harness.plan()
    reads = CallerReads(workdir=plan.request.cwd, env={}, owner=ME, system=False,
                        trust=False, masks=harness.registry.secret_masks(ME, None))
    reads.read(plan.policy, None)
    naming = ResolvedPolicy(name="fake", grants=(), denials=(), network=NetworkPolicy(
        env_credentials=((f"file://{secret}", "TOKEN"),)))
    launched: list[tuple[Denial, ...]] = []
    real_launch = harness.launcher.launch

    async def launch(policy: ResolvedPolicy, request: LaunchRequest, **kw: Any) -> Process:
        launched.append(policy.denials)
        return await real_launch(policy, request, **kw)

    monkeypatch.setattr(harness.launcher, "launch", launch)
    await _run_one(harness, dataclasses.replace(plan, policy=naming, caller_reads=reads))

    assert str(secret) in {denial.path for denial in launched[0]}
    with trio.fail_after(10):
        await harness.registry.shutdown()


async def test_a_slot_is_no_session_and_one_left_behind_goes_at_the_next_start(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    sessions = tmp_path / "state" / "sessions"
    sessions.mkdir(parents=True)
    os.close(make_slot(sessions))  # what a daemon that died leaves
    assert list_sessions(tmp_path / "state") == []
    assert read_records(sessions) == []

    harness = await _audited_registry(nursery, tmp_path)

    assert not (sessions / SLOT_DIR).exists()
    assert harness.registry.statistics() == (0, 0)
    with trio.fail_after(10):
        await harness.registry.shutdown()


def test_clearing_a_slot_never_removes_a_file_with_records(tmp_path: Path) -> None:
    os.close(make_slot(tmp_path))
    (tmp_path / SLOT_DIR / SLOT_FILE).write_text('{"seq": 1}\n')

    clear_slot(tmp_path)

    assert (tmp_path / SLOT_DIR / SLOT_FILE).read_text() == '{"seq": 1}\n'


async def test_a_slot_that_cannot_be_made_leaves_the_launch_to_make_its_own(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    harness = await _audited_registry(nursery, tmp_path)
    sessions = harness.state_dir / "sessions"
    (sessions / SLOT_DIR).mkdir()
    (sessions / SLOT_DIR / SLOT_FILE).write_text("kept\n")  # never removed: no slot made
    await _run_one(harness)
    assert not await harness.registry._slot.made()

    second = await _run_one(harness)

    assert verify_session_file(sessions / second / "audit.ndjson").sealed
    assert (sessions / SLOT_DIR / SLOT_FILE).read_text() == "kept\n"
    with trio.fail_after(10):
        await harness.registry.shutdown()


async def _slot_appears(harness: Harness) -> None:
    """Wait (up to the caller's deadline) for the slot's file: made in a worker thread."""
    while not _slot_file(harness).exists():
        await trio.sleep(0.01)


async def test_a_refill_while_every_worker_thread_is_taken_is_made_once_one_is_free(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # review22: a refill that found trio's default thread limiter full left a job never
    # started (``Started`` starts such a job at its first wait, and nothing waits for a
    # slot): no slot was made again for the daemon's life, whatever the launches after.
    harness = await _audited_registry(nursery, tmp_path)
    limiter = trio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens - limiter.borrowed_tokens))]
    for holder in holders:
        limiter.acquire_on_behalf_of_nowait(holder)
    try:
        harness.registry.launch_answered()  # a launch answered while the threads are busy
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)
    await _run_one(harness)  # the next launch, answered once threads are free again

    with trio.fail_after(5):
        await _slot_appears(harness)
    ahead = os.stat(_slot_file(harness)).st_ino
    second = await _run_one(harness)
    audit = harness.state_dir / "sessions" / second / "audit.ndjson"
    assert os.stat(audit).st_ino == ahead
    assert verify_session_file(audit).sealed
    with trio.fail_after(10):
        await harness.registry.shutdown()


class _Died(BaseException):
    """The daemon's death at that point (nothing after it runs)."""


class _DiesAfterOneRename:
    """``os`` for ``nonod.sessions._slot``, whose process dies right after its first rename."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)
        raise _Died


async def test_a_daemon_that_dies_between_the_claims_two_renames_leaves_nothing_behind(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # review22: the claim renamed the slot's directory to the session's id first, then its
    # file; a daemon that died between the two left sessions/<id>/audit.next: no session
    # (no record, no audit file), never removed by the next start, retention or prune.
    from nonod.sessions import _slot

    harness = await _audited_registry(nursery, tmp_path)
    first = await _run_one(harness)
    assert await harness.registry._slot.made()
    job = harness.registry._slot._job
    assert job is not None
    made = job.finished()
    assert isinstance(made, outcome.Value)
    sessions = harness.state_dir / "sessions"
    monkeypatch.setattr(_slot, "os", _DiesAfterOneRename())
    with pytest.raises(_Died):
        harness.registry._slot.claim(sessions / "0123abcd")
    monkeypatch.undo()
    os.close(made.value)
    with trio.fail_after(10):
        await harness.registry.shutdown()

    await _audited_registry(nursery, tmp_path)  # the next start

    assert sorted(os.listdir(sessions)) == [first]


async def test_two_launches_racing_for_one_slot_one_takes_it_the_other_makes_its_own(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # review22, held: the claim is synchronous on the event loop (the job is dropped before
    # the renames), so of two launches started together exactly one gets the slot's file.
    harness = await _audited_registry(nursery, tmp_path)
    await _run_one(harness)
    assert await harness.registry._slot.made()
    ahead = os.stat(_slot_file(harness)).st_ino
    started: list[Any] = []

    async def launch() -> None:
        started.append(await harness.registry.launch(harness.plan()))

    with trio.fail_after(10):
        async with trio.open_nursery() as both:
            both.start_soon(launch)
            both.start_soon(launch)
    for fake in harness.launcher.launched[-2:]:
        fake.finish(ExitStatus(code=0))
    with trio.fail_after(10):
        for session in started:
            await session.wait_exited()
    files = [harness.state_dir / "sessions" / s.id / "audit.ndjson" for s in started]
    assert sorted(os.stat(f).st_ino == ahead for f in files) == [False, True]
    assert all(verify_session_file(f).sealed for f in files)
    with trio.fail_after(10):
        await harness.registry.shutdown()


async def test_a_claimed_slots_directories_are_fsynced_from_the_claim_and_the_gate_waits(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim's renames done, the session's directory and sessions/ are fsynced from then
    # on, before the first records are written (they need nothing of them); the gate waits
    # for them: no program before they return, none if they fail.
    import threading

    from nonod.audit import _writer
    from nonod.sessions import _audit

    harness = await _audited_registry(nursery, tmp_path)
    await _run_one(harness)  # the first makes its own file; the next one takes the slot
    assert await harness.registry._slot.made()
    order: list[str] = []
    release = threading.Event()
    real_fsync_dirs, real_open = _writer._fsync_session_dir, _audit.SessionAudit.open

    def fsync_dirs(directory: Path) -> None:
        order.append("directories")
        release.wait(20)
        real_fsync_dirs(directory)

    def open_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        order.append("first records")
        return real_open(self, *args, **kwargs)

    class Recorded(_writer.Started):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if str(kwargs.get("name", "")).startswith("audit directory fsync"):
                order.append("directories asked")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_writer, "_fsync_session_dir", fsync_dirs)
    monkeypatch.setattr(_writer, "Started", Recorded)
    monkeypatch.setattr(_audit.SessionAudit, "open", open_records)
    launched = len(harness.launcher.launched)
    started: list[Any] = []

    async def launch() -> None:
        started.append(await harness.registry.launch(harness.plan()))

    async with trio.open_nursery() as waiting:
        waiting.start_soon(launch)
        with trio.fail_after(10):
            while not {"first records", "directories"} <= set(order):
                await trio.sleep(0.01)
            await trio.sleep(0.2)  # (the gate would let the launch go by now)
        # asked for at the claim, before the records (the thread itself may run its first
        # line after them on a loaded host: the order asserted is the request's)
        assert order.index("directories asked") < order.index("first records")
        assert len(harness.launcher.launched) == launched  # the gate waits for them
        release.set()
    assert len(harness.launcher.launched) == launched + 1
    harness.launcher.launched[-1].finish(ExitStatus(code=0))
    with trio.fail_after(10):
        await started[0].wait_exited()
    audit = harness.state_dir / "sessions" / started[0].id / "audit.ndjson"
    assert verify_session_file(audit).sealed
    with trio.fail_after(10):
        await harness.registry.shutdown()


async def test_a_claimed_slots_failed_directory_fsync_refuses_the_launch(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nonod.audit import AuditError, _writer

    harness = await _audited_registry(nursery, tmp_path)
    await _run_one(harness)
    assert await harness.registry._slot.made()

    def fsync_dirs(directory: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_writer, "_fsync_session_dir", fsync_dirs)
    launched = len(harness.launcher.launched)
    with trio.fail_after(10), pytest.raises(AuditError, match="Input/output error"):
        await harness.registry.launch(harness.plan())
    assert len(harness.launcher.launched) == launched
    assert harness.registry.live_sessions() == []
    with trio.fail_after(10):
        await harness.registry.shutdown()
