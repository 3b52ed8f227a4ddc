"""The writer: files and modes, write-before-broadcast, fsync timing, recovery, no secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from nonod.audit import (
    AuditClosed,
    AuditError,
    AuditIncomplete,
    AuditVerifyError,
    Network,
    Seal,
    SessionEnded,
    SessionStarted,
    read_records,
    redact_argv,
    render_record,
    verify_session_file,
)
from nonod.audit._chain import FOLD_AT
from nonod.audit._fanout import AuditHub, LiveRecord
from nonod.audit._syncer import AuditSyncer
from nonod.audit._writer import AuditWriter, Ledger, append_daemon_lost

from ._support import DIGEST, SESSION, fixed_clock, session_events, write_session

REPO = Path(__file__).resolve().parents[2]


async def test_files_and_modes(state_dir: Path) -> None:
    ledger = await Ledger.open(state_dir)
    path = await write_session(state_dir, ledger=ledger)
    await ledger.aclose()
    assert path == state_dir / "sessions" / SESSION / "audit.ndjson"
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert (state_dir / "ledger.ndjson").stat().st_mode & 0o777 == 0o600
    assert verify_session_file(path, ledger=state_dir / "ledger.ndjson").ledger_line == 1


async def test_the_issue_example_produces_exactly_those_events(state_dir: Path) -> None:
    path = await write_session(state_dir)
    kinds = [r.kind for r in read_records(path)]
    assert kinds == ["session_started", "enforcement", "trust_verified", "network",
                     "credential_injected", "network", "fs_denied", "signal", "session_ended",
                     "seal"]
    records = read_records(path)
    network = [r.event for r in records if isinstance(r.event, Network)]
    assert [(n.host, n.decision) for n in network] == [("api.github.com", "allow"),
                                                       ("evil.com", "deny")]
    ended = records[-2].event
    assert isinstance(ended, SessionEnded) and ended.exit_code == 3


async def test_create_refuses_an_existing_file_and_bad_ids(state_dir: Path) -> None:
    await write_session(state_dir)
    with pytest.raises(AuditError, match="already has an audit file"):
        await AuditWriter.create(state_dir, SESSION)
    with pytest.raises(AuditError, match="not a session id"):
        await AuditWriter.create(state_dir, "../escape")
    with pytest.raises(TypeError):
        AuditWriter(object(), session="x", path=state_dir, fd=-1, chain=None,  # type: ignore[arg-type]
                    digest=None, hub=None, ledger=None, signer=None,  # type: ignore[arg-type]
                    fsync_interval=1, fsync_every=1, clock=fixed_clock())


async def test_no_appends_after_seal(state_dir: Path) -> None:
    writer = await AuditWriter.create(state_dir, SESSION)
    writer.append(session_events()[0])
    await writer.seal()
    with pytest.raises(AuditClosed):
        writer.append(session_events()[1])
    with pytest.raises(AuditClosed):
        await writer.seal()
    with pytest.raises(TypeError, match="not an audit event"):
        writer.append(Seal(session=SESSION, count=0, head=DIGEST, merkle_root=DIGEST))  # type: ignore[arg-type]


async def test_closing_a_sealed_writer_does_not_pass_through_the_event_loop(
    state_dir: Path,
) -> None:
    """Every session's end seals its file, then closes the writer (``SessionAudit.close``):
    the close has nothing left to do and returns at once (it took two trips through the
    loop, the lock's and a checkpoint's, per session)."""
    writer = await AuditWriter.create(state_dir, SESSION)
    writer.append(session_events()[0])
    await writer.seal()
    with trio.testing.assert_no_checkpoints():
        await writer.aclose()
        await writer.aclose()
    assert writer.statistics().sealed


async def test_written_before_broadcast(state_dir: Path) -> None:
    """The hub's filter runs synchronously inside publish: each time it runs, the line it is
    about to deliver must already be in the file."""
    hub = AuditHub()
    path = state_dir / "sessions" / SESSION / "audit.ndjson"
    lines_at_publish: list[int] = []

    def visible(session: str) -> bool:
        lines_at_publish.append(path.read_bytes().count(b"\n"))
        return True

    subscription = hub.subscribe(session=SESSION, visible=visible, buffer=100)
    writer = await AuditWriter.create(state_dir, SESSION, hub=hub)
    for event in session_events():
        writer.append(event)
    await writer.seal()
    assert lines_at_publish == list(range(1, len(session_events()) + 2))
    received = []
    async for item in subscription:
        assert isinstance(item, LiveRecord)
        received.append(item.record)
    assert received == read_records(path)


async def test_bytes_written_are_the_bytes_published(state_dir: Path) -> None:
    """With the default clock: each record a subscriber gets, encoded as the control server
    encodes it, is the file's line byte for byte, and the file verifies."""
    hub = AuditHub()
    subscription = hub.subscribe(session=SESSION, buffer=100)
    writer = await AuditWriter.create(state_dir, SESSION, hub=hub)
    for event in session_events():
        writer.append(event)
    seal = await writer.seal()
    encoder = msgspec.json.Encoder(order="sorted")
    published = []
    async for item in subscription:
        assert isinstance(item, LiveRecord)
        published.append(encoder.encode(item.record) + b"\n")
    assert b"".join(published) == writer.path.read_bytes()
    result = verify_session_file(writer.path)
    assert result.count == len(session_events()) and result.merkle_root == seal.merkle_root


async def test_digest_and_merkle_root_over_many_batches(state_dir: Path) -> None:
    """More lines than one batch of the deferred file digest and Merkle fold, with syncs in
    between: the ledger's file digest and the seal's root still match the file."""
    ledger = await Ledger.open(state_dir)
    writer = await AuditWriter.create(state_dir, SESSION, ledger=ledger)
    writer.append(session_events()[0])
    for i in range(2 * FOLD_AT + 10):
        writer.append(Network(mode="connect", decision="allow", host=f"h{i}.example",
                              port=443, stage="open" if i % 2 else "close"))
        if i in (7, FOLD_AT + 1):
            await writer.sync()
    seal = await writer.seal()
    await ledger.aclose()
    result = verify_session_file(writer.path, ledger=state_dir / "ledger.ndjson")
    assert result.count == 2 * FOLD_AT + 11 and result.merkle_root == seal.merkle_root
    assert result.ledger_line == 1


async def test_fsync_interval_is_honoured(state_dir: Path, autojump_clock: trio.abc.Clock
                                          ) -> None:
    """The periodic fsync starts exactly ``fsync_interval`` seconds after the first unsynced
    record (trio time; ``last_fsync_at`` is when it started). ``writer.sync()`` waits for an
    fsync in flight in its worker thread, so the counts below are settled."""
    writer = await AuditWriter.create(state_dir, SESSION, fsync_interval=5.0, fsync_every=100)
    events = session_events()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        t0 = trio.current_time()
        writer.append(events[0])
        await trio.sleep(4.9)
        stats = writer.statistics()
        assert stats.fsyncs == 0 and stats.pending == 1 and stats.last_fsync_at is None
        await trio.sleep(0.2)
        await writer.sync()
        stats = writer.statistics()
        assert stats.pending == 0 and stats.fsyncs == 1
        assert stats.last_fsync_at == pytest.approx(t0 + 5.0)

        # Nothing pending: no fsync however long we wait.
        await trio.sleep(60)
        await writer.sync()
        assert writer.statistics().fsyncs == 1

        # The interval runs from the first unsynced record, not the last.
        t1 = trio.current_time()
        writer.append(events[1])
        await trio.sleep(3)
        writer.append(events[2])
        await trio.sleep(2.5)
        await writer.sync()
        stats = writer.statistics()
        assert stats.pending == 0 and stats.fsyncs == 2
        assert stats.last_fsync_at == pytest.approx(t1 + 5.0)

        sealed_at = trio.current_time()
        await writer.seal()
        stats = writer.statistics()
        assert stats.sealed and stats.fsyncs == 3
        assert stats.last_fsync_at == pytest.approx(sealed_at)
    # run() returned by itself once the writer was sealed.


@pytest.mark.parametrize("shared", [False, True], ids=["own task", "daemon's syncer"])
async def test_fsync_after_n_events(state_dir: Path, autojump_clock: trio.abc.Clock,
                                    shared: bool) -> None:
    async with trio.open_nursery() as nursery:
        syncer = AuditSyncer(nursery) if shared else None
        writer = await AuditWriter.create(state_dir, SESSION, fsync_interval=3600,
                                          fsync_every=3, syncer=syncer)
        if syncer is None:
            await nursery.start(writer.run)
        for event in session_events()[:2]:
            writer.append(event)
        await trio.sleep(1)
        assert writer.statistics().pending == 2
        t1 = trio.current_time()
        writer.append(session_events()[2])
        await trio.testing.wait_all_tasks_blocked()
        await writer.sync()  # waits for an fsync in flight
        stats = writer.statistics()
        assert stats.pending == 0 and stats.fsyncs == 1
        assert stats.last_fsync_at == pytest.approx(t1)
        await writer.aclose()


# -------------------------------------------------------------------------------- recovery


async def test_daemon_lost_recovery_of_a_torn_file(state_dir: Path) -> None:
    events = session_events()[:5]
    path = await write_session(state_dir, events, seal=False)
    with open(path, "ab") as f:
        f.write(b'{"event":{"type":"network","mode":"conn')  # died mid-write
    with pytest.raises(AuditIncomplete):
        verify_session_file(path)
    partial = verify_session_file(path, allow_incomplete=True)
    assert partial.count == 5 and partial.torn_bytes > 0

    ledger = await Ledger.open(state_dir)
    seal = await append_daemon_lost(state_dir, SESSION, ledger=ledger)
    assert seal is not None and seal.count == 6
    result = verify_session_file(path, ledger=ledger.path)
    assert result.sealed and result.ledger_line == 1
    ended = read_records(path)[-2].event
    assert isinstance(ended, SessionEnded)
    assert ended.reason == "daemon_lost" and ended.exit_code is None
    assert "partial last line" in ended.detail

    # A second start finds the file sealed and listed: nothing to do.
    assert await append_daemon_lost(state_dir, SESSION, ledger=ledger) is None
    assert ledger.count == 1
    await ledger.aclose()


async def test_sealed_but_not_in_the_ledger_is_added(state_dir: Path) -> None:
    path = await write_session(state_dir)  # sealed, then "died" before the ledger line
    ledger = await Ledger.open(state_dir)
    assert await append_daemon_lost(state_dir, SESSION, ledger=ledger) is None
    assert verify_session_file(path, ledger=ledger.path).ledger_line == 1
    await ledger.aclose()


async def test_open_existing_continues_the_chain(state_dir: Path) -> None:
    events = session_events()
    path = await write_session(state_dir, events[:4], seal=False)
    writer = await AuditWriter.open_existing(state_dir, SESSION)
    for event in events[4:]:
        writer.append(event)
    await writer.seal()
    result = verify_session_file(path)
    assert result.count == len(events)
    with pytest.raises(AuditClosed, match="already sealed"):
        await AuditWriter.open_existing(state_dir, SESSION)


async def test_recovery_refuses_a_tampered_file(state_dir: Path) -> None:
    path = await write_session(state_dir, session_events()[:5], seal=False)
    data = path.read_bytes().replace(b"evil.com", b"evil.org", 1)
    data = data.replace(b"api.github.com", b"api.gitlab.com", 1)
    path.write_bytes(data)
    with pytest.raises(AuditVerifyError) as info:
        await append_daemon_lost(state_dir, SESSION)
    assert info.value.line == 4
    assert path.read_bytes() == data  # left alone for inspection


_KILLED_DAEMON = textwrap.dedent("""
    import os, signal, sys, trio
    from pathlib import Path
    from nonod.audit._writer import AuditWriter
    from nonod.audit import Network, SessionStarted

    async def main():
        state = Path(sys.argv[1])
        writer = await AuditWriter.create(state, "k1113", fsync_every=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            writer.append(SessionStarted(session="k1113", argv=("bot",), cwd="/", uid=0,
                                         policy_digest="ab" * 32))
            for i in range(50):
                writer.append(Network(mode="connect", decision="allow", host=f"h{i}",
                                      port=443))
                await trio.sleep(0)
            while writer.statistics().pending:
                await trio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)

    trio.run(main)
""")


def test_sigkill_mid_session_then_daemon_lost(state_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_DAEMON, str(state_dir)],
                          cwd=REPO, capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    path = state_dir / "sessions" / "k1113" / "audit.ndjson"
    with pytest.raises(AuditIncomplete):
        verify_session_file(path)
    assert verify_session_file(path, allow_incomplete=True).count == 51

    async def recover() -> None:
        ledger = await Ledger.open(state_dir)
        assert await append_daemon_lost(state_dir, "k1113", ledger=ledger) is not None
        await ledger.aclose()

    trio.run(recover)
    result = verify_session_file(path, ledger=state_dir / "ledger.ndjson")
    assert result.sealed and result.count == 52


# --------------------------------------------------------------------------------- secrets


async def test_no_secret_value_reaches_the_file(state_dir: Path) -> None:
    real = "ghp_R3alS3cretValue0123456789abcdef"
    phantom = os.urandom(32).hex()
    unlisted = "hunter2-unlisted"
    argv = ("python3", "bot.py", f"--github-token={real}", "--gemini-key", phantom,
            f"--password={unlisted}", f"https://bot:{unlisted}@git.example/x",
            f"--url=https://api.example/v1?key={phantom}")
    events = [
        SessionStarted(session=SESSION, argv=redact_argv(argv, [real, phantom]), cwd="/",
                       uid=1000, policy_digest=DIGEST),
        Network(mode="reverse", decision="allow", host="generativelanguage.googleapis.com",
                port=443, method="POST", path=f"/v1beta/models/x:generate?key={phantom}",
                status=200, route="gemini", auth="ok"),
        *session_events()[4:],
    ]
    path = await write_session(state_dir, events)
    data = path.read_bytes()
    for secret in (real, phantom, unlisted):
        assert secret.encode() not in data
        for record in read_records(path):
            assert secret not in render_record(SESSION, record, color=True)
    assert data.count(b"[REDACTED]") >= 5
    assert verify_session_file(path).sealed


async def test_bad_fsync_settings_create_nothing(state_dir: Path) -> None:
    with pytest.raises(AuditError, match="fsync_every"):
        await AuditWriter.create(state_dir, SESSION, fsync_every=0)
    with pytest.raises(AuditError, match="fsync_interval"):
        await AuditWriter.create(state_dir, SESSION, fsync_interval=float("nan"))
    assert not (state_dir / "sessions" / SESSION).exists()


async def test_the_first_sync_fsyncs_a_deferred_directory_beside_the_file(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``create(defer_dir_sync=True)``: the launch's gate (``sync_started``) fsyncs the file
    and its directory at the same time, in two worker threads (each fsync here waits for
    the other to have begun), and its wait is for both."""
    import threading

    from nonod.audit import _writer

    writer = await AuditWriter.create(state_dir, SESSION, defer_dir_sync=True)
    writer.append(session_events()[0])
    both = threading.Barrier(2, timeout=5)
    real_fsync = os.fsync
    calls = iter(range(1 << 30))

    def fsync(fd: int) -> None:
        if next(calls) < 2:  # the file's and the directory's (its parent's follows)
            both.wait()
        real_fsync(fd)

    monkeypatch.setattr(_writer.os, "fsync", fsync)
    with trio.fail_after(30):
        await writer.sync_started()()
    monkeypatch.undo()
    assert writer.statistics().fsyncs == 1
    await writer.seal()


@pytest.mark.parametrize("deferred", [False, True])
async def test_a_new_session_directorys_own_entry_is_synced(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch, deferred: bool) -> None:
    """The session's directory is made for its audit file: the file's entry is durable once
    that directory is fsynced, and the directory's own entry once ``sessions/`` is (a crash
    could otherwise lose the whole directory on a file system without a journal)."""
    from nonod.audit import _writer

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(_writer.os, "fsync", fsync)
    writer = await AuditWriter.create(state_dir, SESSION, defer_dir_sync=deferred)
    writer.append(session_events()[0])
    await writer.sync()
    monkeypatch.undo()
    sessions = state_dir / "sessions"
    assert str(sessions / SESSION) in synced and str(sessions) in synced
    await writer.seal()
