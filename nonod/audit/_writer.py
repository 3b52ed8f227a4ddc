"""Writing audit files: one :class:`AuditWriter` per session, one :class:`Ledger` per daemon.

(Just over 600 lines, and one module on purpose: the session file, its seal and the ledger
line the seal appends are one write protocol sharing the same private-file primitives; after a
crash, :func:`append_daemon_lost` closes a file with the writer's own rules.)

Layout under the daemon's state directory::

    <state>/ledger.ndjson                      0600  one line per sealed session, chained
    <state>/sessions/<id>/                     0700
    <state>/sessions/<id>/audit.ndjson         0600  the session's chained lines, then a seal
    <state>/sessions/<id>/audit.ndjson.bundle  0600  the seal's signature (with a signer)

A session's life::

    writer = await AuditWriter.create(state_dir, session_id, hub=hub, ledger=ledger)
    await session_nursery.start(writer.run)      # fsync every `fsync_interval` seconds
    writer.append(SessionStarted(...))           # written, then published; never waits
    ...
    writer.append(SessionEnded(...))
    await writer.seal()                          # seal line, fsync, ledger, signature

``append`` is synchronous: it writes one line to the file (an ``O_APPEND`` write of a few
hundred bytes, which lands in the page cache) and only then publishes it to the hub, so a
subscriber never sees a record that is not in the file. Durability comes from ``fsync``,
which runs in a worker thread: at most ``fsync_interval`` seconds after the first unsynced
record, as soon as ``fsync_every`` records are pending, and at the seal. After a crash the
file verifies up to its last complete line; :func:`append_daemon_lost` then closes it.

A launch's writer holds its records back from the hub until the launch has a program
(``create(hold_live=True)``, then :meth:`AuditWriter.announce`): a launch refused after its
file exists (dropped at its gate, refused by the engine) is never announced to followers,
and the records of one that runs reach them all, in the order written.

What an append pays is kept small, since a proxied request waits for it: the event is
encoded once and those bytes are hashed and written; the line goes out in one ``write``.
The two hashes only the seal needs (the SHA-256 of the whole file, the Merkle tree over the
line hashes) are brought up to date in batches when the writer syncs (at most ``FOLD_AT``
lines behind), off that path.
"""

from __future__ import annotations

import collections
import fcntl
import functools
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, final, get_args

import trio

from .._soon import Started
from ._chain import FOLD_AT, Chain, UtcClock, utc_timestamp
from ._errors import AuditClosed, AuditError, AuditLedgerError, AuditNotFound, AuditWriteError
from ._events import EndReason, Event, Record, Seal, SessionEnded, SessionSealed
from ._fanout import AuditHub, LiveRecord
from ._sign import SIDECAR_SUFFIX, Signer, session_statement
from ._verify import (
    AUDIT_FILE,
    LEDGER_FILE,
    LedgerView,
    Scan,
    check_session_id,
    scan_ledger,
    scan_session,
)

if TYPE_CHECKING:
    from ._syncer import AuditSyncer

DEFAULT_FSYNC_INTERVAL: Final = 1.0
DEFAULT_FSYNC_EVERY: Final = 1000
_EVENT_TYPES: Final = get_args(Event)
_PRIVATE: Final = object()

Clock = Callable[[], str]


# ------------------------------------------------------------------- blocking file helpers


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_session_dir(directory: Path) -> None:
    """A session directory's fsync, then its parent's: the directory was made for this
    session, and its own entry in ``sessions/`` is durable only once that is synced too (on
    ext4 without a journal, a crash could otherwise lose the whole directory, sealed file and
    all)."""
    _fsync_dir(directory)
    _fsync_dir(directory.parent)


def _private_dir(directory: Path) -> None:
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def _create_file(path: Path, *, sync_dir: bool = True) -> int:
    _private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o600)
    try:
        if sync_dir:
            _fsync_session_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_existing_file(path: Path, session: str) -> tuple[int, Scan, bytes]:
    """Open, verify what is there (a broken chain raises), cut a partial last line off."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        data = _read_fd(fd)
        scan = scan_session(data, str(path), session, allow_incomplete=True)
        if scan.torn_bytes and scan.seal is None:
            os.ftruncate(fd, scan.valid_length)
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, scan, data[:scan.valid_length]


def _write_private_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _check_fsync_settings(interval: float, every: int) -> None:
    if not interval >= 0:
        raise AuditError(f"fsync_interval must be >= 0 seconds, not {interval}")
    if every < 1:
        raise AuditError(f"fsync_every must be >= 1 event, not {every}")


def session_dir(state_dir: Path, session: str) -> Path:
    return Path(state_dir) / "sessions" / check_session_id(session)


# ---------------------------------------------------------------------------------- ledger


class FirstFailed(Exception):
    """What ``Ledger.record``'s ``first`` raised (its ``__cause__``): nothing was appended."""


@final
class _FairTurns:
    """One holder at a time; those waiting are served one owner after the other (round
    robin), each owner's in the order they came. On the system daemon the ledger's appends
    are its users' seals: first come first served, one user's sessions ending together (each
    seal a file fsync, a ledger line and its fsync) put every one of them ahead of another
    user's, whose session then ended seconds later."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: dict[object, collections.deque[trio.Event]] = {}

    @asynccontextmanager
    async def hold(self, owner: object) -> AsyncIterator[None]:
        if self._held:
            turn = trio.Event()
            self._waiting.setdefault(owner, collections.deque()).append(turn)
            try:
                await turn.wait()
            except BaseException:
                if turn.is_set():
                    self._pass_on()  # handed over as it was cancelled: to the next
                else:
                    queue = self._waiting[owner]
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[owner]
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        if not self._waiting:
            self._held = False
            return
        owner, queue = next(iter(self._waiting.items()))
        del self._waiting[owner]
        turn = queue.popleft()
        if queue:
            self._waiting[owner] = queue  # behind the other owners
        turn.set()


@final
class Ledger:
    """``<state>/ledger.ndjson``: a chain with one line per sealed session.

    Each line's event is a :class:`SessionSealed` (session id, event count, Merkle root, seal
    hash, SHA-256 of the whole file), chained like a session file (with its own domain tag),
    so the ledger pins every finished session and the order they finished in. Open it once per
    daemon with :meth:`open` (it takes an exclusive ``flock``); appends are serialised.
    """

    def __init__(self, token: object, *, path: Path, fd: int, view: LedgerView,
                 clock: Clock) -> None:
        if token is not _PRIVATE:
            raise TypeError("use `await Ledger.open(state_dir)`")
        self.path = path
        #: Bytes of a partial last line cut off when the ledger was opened (a crash mid-append).
        self.repaired_bytes = view.torn_bytes
        self._fd = fd
        self._chain = Chain.for_ledger()
        self._chain.seq = view.count
        self._chain.head = bytes.fromhex(view.head)
        self._sessions = {sid: line for sid, (line, _) in view.entries.items()}
        #: Each listed session's seal hash (32 bytes): what the daemon itself recorded, for
        #: checks that must not trust the file on disk (``seal_hash_of``).
        self._seals = {sid: bytes.fromhex(entry.seal_hash)
                       for sid, (_, entry) in view.entries.items()}
        self._listeners: list[Callable[[], None]] = []
        self._clock = clock
        #: Appends one at a time, owners served in turn (:class:`_FairTurns`).
        self._turns = _FairTurns()

    @classmethod
    async def open(cls, state_dir: Path, *, clock: Clock = utc_timestamp) -> Ledger:
        """Open (or create) the ledger, verifying every line; a broken one raises
        ``AuditLedgerError`` naming the line, and the daemon should refuse to continue it."""
        path = Path(state_dir) / LEDGER_FILE

        def _open() -> tuple[int, LedgerView]:
            Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError as exc:
                    raise AuditError(f"{path} is in use by another daemon") from exc
                data = _read_fd(fd)
                view = scan_ledger(data, str(path), allow_torn=True)
                if view.torn_bytes:
                    os.ftruncate(fd, len(data) - view.torn_bytes)
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            return fd, view

        try:
            fd, view = await trio.to_thread.run_sync(_open)
        except OSError as exc:
            raise AuditError(f"cannot open the ledger {path}: {exc.strerror}") from exc
        return cls(_PRIVATE, path=path, fd=fd, view=view, clock=clock)

    def __contains__(self, session: object) -> bool:
        return session in self._sessions

    def line_of(self, session: str) -> int | None:
        return self._sessions.get(session)

    def on_recorded(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (in trio, must not raise) after each line appended from now on."""
        self._listeners.append(fn)

    def seal_hash_of(self, session: str) -> str | None:
        """The seal hash this ledger lists ``session`` with (hex), as read when it was opened
        or appended since; None when it is not listed (yet)."""
        seal = self._seals.get(session)
        return seal.hex() if seal is not None else None

    @property
    def count(self) -> int:
        return self._chain.seq

    @property
    def head(self) -> str:
        return self._chain.head.hex()

    async def record(self, entry: SessionSealed, *,
                     first: Callable[[], None] | None = None,
                     then: Callable[[], None] | None = None,
                     owner: object = None) -> int:
        """Append ``entry`` and fsync; return its line number.

        ``first`` (blocking) runs before, in the same worker thread: a sealed file's own
        fsync, which must be done before its ledger line is written. If it raises, the
        ledger is left as it was and the error is raised as :class:`FirstFailed`. ``then``
        (blocking, must not raise) runs in that thread too, once the line is durable.
        Appends waiting for one another are served ``owner`` after ``owner`` (the session's
        uid on the system daemon), so one owner's many never wait ahead of another's one."""
        async with self._turns.hold(owner):
            if self._fd < 0:
                raise AuditClosed("the ledger is closed")
            if entry.session in self._sessions:
                raise AuditError(f"session {entry.session} is already in the ledger")
            fd = self._fd

            def _append() -> int:
                if first is not None:
                    try:
                        first()
                    except BaseException as exc:
                        raise FirstFailed() from exc
                # In the worker thread, under the lock: the chain is only appended to here.
                appended = self._chain.append(entry, self._clock())
                _write_all(fd, appended.line)
                os.fsync(fd)
                if then is not None:
                    then()
                return appended.seq

            try:
                seq = await trio.to_thread.run_sync(_append)
            except OSError as exc:
                os.close(self._fd)
                self._fd = -1
                raise AuditWriteError(f"cannot append to the ledger: {exc.strerror}") from exc
            self._sessions[entry.session] = seq
            self._seals[entry.session] = bytes.fromhex(entry.seal_hash)
            for listener in self._listeners:
                listener()
            return seq

    async def aclose(self) -> None:
        async with self._turns.hold(None):
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# ---------------------------------------------------------------------------------- writer


@final
@dataclass(frozen=True)
class WriterStatistics:
    events: int
    pending: int  # written but not yet fsynced
    fsyncs: int
    last_fsync_at: float | None  # trio.current_time() when the last fsync started
    sealed: bool
    broken: bool


@final
class AuditWriter:
    """Appends one session's events to its file, then publishes them. See the module doc."""

    def __init__(self, token: object, *, session: str, path: Path, fd: int, chain: Chain,
                 digest: hashlib._Hash, hub: AuditHub | None, ledger: Ledger | None,
                 signer: Signer | None, fsync_interval: float, fsync_every: int,
                 clock: Clock | None, discarded_bytes: int = 0,
                 syncer: AuditSyncer | None = None, hold_live: bool = False) -> None:
        if token is not _PRIVATE:
            raise TypeError("use `await AuditWriter.create(...)` or `open_existing(...)`")
        self.session = session
        self.path = path
        #: Bytes of a partial last line cut off by :meth:`open_existing`.
        self.discarded_bytes = discarded_bytes
        self._fd = fd
        self._chain = chain
        self._digest = digest
        self._unhashed: list[bytes] = []  # written, not yet in ``_digest``
        self._hub = hub
        #: Written, not yet published (``hold_live``): the launch has no program yet. None:
        #: each record is published as it is written.
        self._held: list[LiveRecord] | None = [] if hold_live and hub is not None else None
        self._ledger = ledger
        self._signer = signer
        self._interval = fsync_interval
        self._every = fsync_every
        #: ``utc_timestamp`` by default, through a per-writer cache of the date and time.
        self._clock: Clock = UtcClock() if clock is None else clock
        #: Bytes in the file: what was there when it was opened, and every line since.
        self._size = os.fstat(fd).st_size
        self._pending = 0
        self._first_pending_at = 0.0
        self._fsyncs = 0
        self._last_fsync_at: float | None = None
        self._closed = False
        self._sealed = False
        self._broken = False
        #: The file's directory entry is not fsynced yet (``create(defer_dir_sync=True)``):
        #: the next fsync of the file does it too.
        self._dir_unsynced = False
        #: The directories' fsync begun at ``create(made=...)``, for :meth:`sync_started`.
        self._dir_sync: Started[None] | None = None
        self._lock = trio.Lock()
        self._wake = trio.Event()
        #: Does the timed fsyncs instead of :meth:`run` (``create(syncer=...)``).
        self._syncer = syncer
        #: Runs after the file's next fsync, in its thread (:meth:`after_next_sync`).
        self._after_sync: Callable[[], None] | None = None
        #: Called (on the event loop) when the syncer's fsync of this file failed: the file is
        #: broken from then on; whoever owns the session stops it.
        self.on_sync_failed: Callable[[AuditWriteError], None] | None = None
        #: Whose session this is, for the ledger's turns (``Ledger.record``); None: shared.
        self.owner: int | None = None

    # -- opening
    @classmethod
    async def create(
        cls,
        state_dir: Path,
        session: str,
        *,
        hub: AuditHub | None = None,
        ledger: Ledger | None = None,
        signer: Signer | None = None,
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
        fsync_every: int = DEFAULT_FSYNC_EVERY,
        clock: Clock | None = None,
        defer_dir_sync: bool = False,
        first: Callable[[], None] | None = None,
        syncer: AuditSyncer | None = None,
        made: int | None = None,
        hold_live: bool = False,
    ) -> AuditWriter:
        """Start ``<state>/sessions/<session>/audit.ndjson``; it must not exist yet. Its
        directory is fsynced now (its entry durable), or with ``defer_dir_sync`` at the
        writer's first sync, in the same worker thread as the file's fsync. ``first``
        (blocking) runs in the worker thread that makes the file, before it; what it raises
        is raised as it is, and no file is made. With ``syncer`` the timed fsyncs are the
        syncer's (``nonod.audit._syncer``): no :meth:`run` task is needed.

        ``made``: the file is there already, empty, made ahead (``nonod.sessions._slot``),
        and this is its descriptor (``O_APPEND``), which the writer takes (closed if
        ``first`` fails). With ``defer_dir_sync`` the directories' fsync (the file's entry
        and the directory's own) begins now, in a worker thread: both entries exist (the
        slot's renames are done) and it needs nothing of the records; the first
        :meth:`sync_started` waits for it with the file's.

        ``hold_live``: what is written is kept from the hub until :meth:`announce` (a
        launch's first records, until its program exists); dropped if the writer is closed
        or sealed first."""
        _check_fsync_settings(fsync_interval, fsync_every)
        path = session_dir(state_dir, session) / AUDIT_FILE

        def make() -> int | BaseException:
            if first is not None:
                try:
                    first()
                except BaseException as exc:  # noqa: BLE001 - the caller's, raised below
                    if made is not None:
                        os.close(made)
                    return exc
            if made is not None:
                return made
            return _create_file(path, sync_dir=not defer_dir_sync)

        try:
            result = make() if made is not None and first is None \
                else await trio.to_thread.run_sync(make)
        except FileExistsError as exc:
            raise AuditError(f"session {session} already has an audit file",
                             hint="AuditWriter.open_existing continues one") from exc
        except OSError as exc:
            raise AuditWriteError(f"cannot create {path}: {exc.strerror}") from exc
        if isinstance(result, BaseException):
            raise result
        fd = result
        writer = cls(_PRIVATE, session=session, path=path, fd=fd,
                     chain=Chain.for_session(session), digest=hashlib.sha256(), hub=hub,
                     ledger=ledger, signer=signer, fsync_interval=fsync_interval,
                     fsync_every=fsync_every, clock=clock, syncer=syncer,
                     hold_live=hold_live)
        writer._dir_unsynced = defer_dir_sync
        if made is not None and defer_dir_sync:
            writer._dir_sync = Started(functools.partial(_fsync_session_dir, path.parent),
                                       name=f"audit directory fsync {session}")
        return writer

    @classmethod
    async def open_existing(
        cls,
        state_dir: Path,
        session: str,
        *,
        hub: AuditHub | None = None,
        ledger: Ledger | None = None,
        signer: Signer | None = None,
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
        fsync_every: int = DEFAULT_FSYNC_EVERY,
        clock: Clock | None = None,
    ) -> AuditWriter:
        """Continue an unsealed file after a daemon restart.

        The existing lines are verified first: a broken chain raises ``AuditVerifyError`` and
        nothing is appended to it. A partial last line (the daemon died mid-write) is cut off;
        :attr:`discarded_bytes` says how much. A sealed file raises :class:`AuditClosed`.
        """
        _check_fsync_settings(fsync_interval, fsync_every)
        path = session_dir(state_dir, session) / AUDIT_FILE
        fd, scan, kept = await _load_existing(path, session)
        if scan.seal is not None:
            os.close(fd)
            raise AuditClosed(f"session {session}'s audit file is already sealed")
        return cls(_PRIVATE, session=session, path=path, fd=fd, chain=scan.chain(),
                   digest=hashlib.sha256(kept), hub=hub, ledger=ledger, signer=signer,
                   fsync_interval=fsync_interval, fsync_every=fsync_every, clock=clock,
                   discarded_bytes=scan.torn_bytes)

    @property
    def size(self) -> int:
        """Bytes in the file, the lines written so far included."""
        return self._size

    @property
    def broken(self) -> bool:
        """A write or fsync failed: the file misses records (see ``append_closing``)."""
        return self._broken

    # -- writing
    def append(self, event: Event) -> Record:
        """Write ``event`` as the next line, then publish it. Never waits.

        Raises :class:`AuditClosed` after :meth:`seal` or :meth:`aclose`, and
        :class:`AuditWriteError` if the line could not be written (then and afterwards: a
        session that cannot be audited should be stopped).
        """
        if not isinstance(event, _EVENT_TYPES):
            raise TypeError(f"not an audit event: {type(event).__name__}")
        return self._write(event)

    def _write(self, event: Event | Seal) -> Record:
        if self._closed:
            raise AuditClosed(f"session {self.session}'s audit file is closed")
        if self._broken:
            raise AuditWriteError(f"an earlier write to {self.path} failed")
        appended = self._chain.append(event, self._clock())
        line = appended.line
        try:
            # One write(2) of a few hundred bytes to an O_APPEND file; a short write (a full
            # disk, a signal) gets the rest written after it.
            written = os.write(self._fd, line)
            if written != len(line):
                _write_all(self._fd, line[written:])
        except OSError as exc:
            self._broken = True
            raise AuditWriteError(f"cannot write to {self.path}: {exc.strerror}") from exc
        self._size += len(line)
        # The file digest and the Merkle tree are brought up to date when the writer syncs
        # (``_catch_up``), off the path of the append that a proxied request waits for.
        unhashed = self._unhashed
        unhashed.append(line)
        if len(unhashed) >= FOLD_AT:
            self._catch_up()
        self._pending += 1
        if self._pending == 1:
            self._first_pending_at = trio.current_time()
            if self._syncer is None:
                self._wake.set()
            elif not self._lock.locked():  # else its holder hands it over (``_unlocked``)
                self._syncer.due(self, self._first_pending_at + self._interval)
        elif self._pending >= self._every:
            if self._syncer is None:
                self._wake.set()
            elif not self._lock.locked():
                self._syncer.due(self, trio.current_time())
        record = Record(seq=appended.seq, ts=appended.ts, prev=appended.prev_hex,
                        hash=appended.hash_hex, event=event)
        if self._hub is not None:
            if self._held is None:
                self._hub.publish(LiveRecord(session=self.session, record=record))
            else:
                self._held.append(LiveRecord(session=self.session, record=record))
        return record

    def announce(self) -> None:
        """Publish the records held back (``create(hold_live=True)``), in the order they
        were written, and each later one as it is written. Synchronous, like ``append``;
        nothing to do for a writer that holds nothing back."""
        held, self._held = self._held, None
        if held and self._hub is not None and not self._closed:
            for item in held:
                self._hub.publish(item)

    # -- durability
    async def _wait_wake(self) -> None:
        self._wake = trio.Event()
        await self._wake.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Fsync pending records on time. Runs until the writer is sealed or closed (or is
        cancelled with its session); an fsync failure raises ``AuditWriteError``."""
        task_status.started()
        while not self._closed:
            if self._pending == 0:
                await self._wait_wake()
                continue
            if self._pending < self._every:
                deadline = self._first_pending_at + self._interval
                with trio.move_on_at(deadline):
                    await self._wait_wake()
                if (not self._closed and self._pending < self._every
                        and trio.current_time() < deadline):
                    continue
            if not self._closed:
                await self.sync()

    async def sync(self) -> None:
        """Fsync now (in a worker thread) if anything is pending."""
        try:
            async with self._lock:
                if self._fd < 0 or self._pending == 0:
                    await trio.lowlevel.checkpoint()
                    return
                await self._fsync_locked()
        finally:
            self._unlocked()

    def _unlocked(self) -> None:
        """The lock was given back: records written meanwhile go to the syncer."""
        if self._syncer is not None and self._pending and not self._closed \
                and not self._broken and not self._lock.locked():
            due = (trio.current_time() if self._pending >= self._every
                   else self._first_pending_at + self._interval)
            self._syncer.due(self, due)

    def _begin_timed_sync(self) -> Callable[[], None] | None:
        """For the syncer: take the lock and return this file's fsync, or None (nothing
        pending, closed, broken, or its lock held: its holder syncs or hands it over)."""
        if self._fd < 0 or self._pending == 0 or self._closed or self._broken:
            return None
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            return None
        self._catch_up()
        self._pending = 0
        self._last_fsync_at = trio.current_time()
        return self._fsync_blocking()

    def _end_timed_sync(self, outcome: Exception | bool | None) -> None:
        """For the syncer: its fsync of this file returned (True), raised, or did not run
        (None: the records stay pending)."""
        self._lock.release()
        if outcome is True:
            self._fsyncs += 1
        elif outcome is None:  # the daemon is going down: aclose or seal syncs them
            self._pending = max(self._pending, 1)
            return
        else:
            self._broken = True
            why = getattr(outcome, "strerror", None) or str(outcome)
            failed = AuditWriteError(f"cannot sync {self.path}: {why}")
            if self.on_sync_failed is not None:
                self.on_sync_failed(failed)
            return
        self._unlocked()

    def sync_started(self, *, beside: Callable[[], None] | None = None
                     ) -> Callable[[], Awaitable[None]]:
        """Start the fsync of the pending records in a worker thread now, without waiting,
        and return the wait for it (raising AuditWriteError as :meth:`sync` does): for a
        caller with other work to do meanwhile. The calling task must await that wait (once
        or more: later calls give the same result) before the writer syncs, seals or closes
        again, whatever else happens: the writer is locked until then. A directory whose
        fsync was deferred (``create(defer_dir_sync=True)``) is fsynced at the same time, in
        a second worker thread, then ``beside`` (blocking, the caller's work: what it raises
        the wait raises) runs there (in a thread of its own without such a directory); the
        wait is for all of it, and for the directories' fsync begun at ``create(made=...)``
        (whose failure it raises as the file's)."""
        self._lock.acquire_nowait()  # trio.WouldBlock if a sync runs: none does at the start
        self._catch_up()
        self._pending = 0
        self._last_fsync_at = trio.current_time()
        jobs: list[Started[None]] = []
        early, self._dir_sync = self._dir_sync, None
        if early is not None:  # begun at ``create(made=...)``: waited for with the file's
            jobs.append(early)
        directory = self.path.parent if self._dir_unsynced and early is None else None
        self._dir_unsynced = False
        file_sync = self._fsync_blocking()
        name = f"audit fsync {self.session}"
        if directory is not None or beside is not None:  # beside the file's fsync
            # One thread woken from the event loop; the file's starts the directory's.
            second = (f"audit directory fsync {self.session}" if directory is not None
                      else f"audit record beside {self.session}")
            jobs.extend(Started.pair(file_sync, functools.partial(_dir_then, directory, beside),
                                     names=(name, second)))
        else:
            jobs.append(Started(file_sync, name=name))
        settled: list[AuditWriteError | None] = []

        async def wait() -> None:
            if not settled:
                try:
                    failed = [exc for exc in [await _failure(job) for job in jobs] if exc]
                    if failed:
                        raise failed[0]
                except Exception as exc:  # noqa: BLE001 - an fsync's failure, kept for each wait
                    self._broken = True
                    why = getattr(exc, "strerror", None) or str(exc)
                    settled.append(AuditWriteError(f"cannot sync {self.path}: {why}"))
                else:
                    self._fsyncs += 1
                    settled.append(None)
                finally:
                    self._lock.release()
                    self._unlocked()
            if settled[0] is not None:
                raise settled[0]

        return wait

    def after_next_sync(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (blocking, must not raise) in the worker thread of the file's next
        fsync, once it has returned: timed (the syncer's batch, or :meth:`run`'s), asked for
        (:meth:`sync`) or the launch's gate. Not at all if that fsync fails, nor at the seal
        or a close (dropped then). Call it before appending a record, so that one is due."""
        self._after_sync = fn

    def _fsync_blocking(self) -> Callable[[], None]:
        """The file's fsync (and its directory's, the first time when it was deferred), to
        run in a worker thread; then what :meth:`after_next_sync` asked for."""
        fd, directory = self._fd, self.path.parent if self._dir_unsynced else None
        self._dir_unsynced = False
        after, self._after_sync = self._after_sync, None

        def fsync() -> None:
            os.fsync(fd)
            if directory is not None:
                _fsync_session_dir(directory)
            if after is not None:
                after()

        return fsync

    def _catch_up(self) -> None:
        """Hash the lines written since the last call into the file digest, and fold the
        Merkle tree's queue."""
        if self._unhashed:
            self._digest.update(b"".join(self._unhashed))
            self._unhashed.clear()
        self._chain.merkle.fold()

    async def _fsync_locked(self) -> None:
        self._catch_up()
        self._pending = 0
        self._last_fsync_at = trio.current_time()
        try:
            await trio.to_thread.run_sync(self._fsync_blocking())
        except OSError as exc:
            self._broken = True
            raise AuditWriteError(f"cannot sync {self.path}: {exc.strerror}") from exc
        self._fsyncs += 1

    # -- closing
    async def seal(self, *, then: Callable[[], None] | None = None) -> Seal:
        """Close the session's record for good.

        In order: (1) write the seal line (count, chain head, Merkle root) and publish it;
        (2) fsync and close the file; (3) add the session to the ledger (fsynced); (4) with a
        signer, sign the statement for the sealed file and write ``audit.ndjson.bundle``;
        (5) ``then`` (blocking, must not raise; the daemon writes the session's final record
        there), in the worker thread of the step before when there is one. Steps (2) and
        (3) share one worker thread. Call it from the session's shielded, time-bounded
        cleanup."""
        chain = self._chain
        seal = Seal(session=self.session, count=chain.seq, head=chain.head.hex(),
                    merkle_root=chain.merkle.root().hex())
        record = self._write(seal)
        self._held = None  # never announced: nor is its end
        self._closed = True
        self._after_sync = None  # whatever it was for, the seal's ``then`` supersedes
        self._forget()
        self._sealed = True
        self._wake.set()
        async with self._lock:
            self._catch_up()
            file_sha256 = self._digest.hexdigest()
            fd = self._fd
            sync = self._fsync_blocking()
            self._fd = -1
            self._pending = 0
            self._last_fsync_at = trio.current_time()

            def sync_and_close() -> None:
                try:
                    sync()
                finally:
                    os.close(fd)

            last = then if self._signer is None else None  # else after the signature

            def sync_close_then() -> None:
                sync_and_close()
                if last is not None:
                    last()

            # One worker thread for both: the file's fsync, then its ledger line (appended
            # and fsynced only once the seal is durable).
            try:
                if self._ledger is not None:
                    await self._ledger.record(SessionSealed(
                        session=self.session, count=seal.count, merkle_root=seal.merkle_root,
                        seal_hash=record.hash, file_sha256=file_sha256), first=sync_and_close,
                        then=last, owner=self.owner)
                else:
                    await trio.to_thread.run_sync(sync_close_then)
            except FirstFailed as failed:
                exc = failed.__cause__
                self._broken = True
                raise AuditWriteError(f"cannot sync {self.path}: "
                                      f"{getattr(exc, 'strerror', None) or exc}") from exc
            except OSError as exc:
                self._broken = True
                raise AuditWriteError(f"cannot sync {self.path}: {exc.strerror}") from exc
            self._fsyncs += 1
        if self._signer is not None:
            await sign_sealed(self.path, self._signer, seal, record.hash, file_sha256)
            if then is not None:
                await trio.to_thread.run_sync(then)
        return seal

    async def aclose(self) -> None:
        """Fsync and close without sealing (the file stays incomplete). Idempotent: a
        writer already closed (sealed, as every session's end does before it closes it) and
        not locked returns at once, without passing through the event loop. Records held
        back from the hub (``hold_live``) are never published."""
        self._closed = True
        self._held = None
        self._after_sync = None
        self._forget()
        self._wake.set()
        if self._fd < 0 and not self._lock.locked():
            return
        async with self._lock:
            if self._fd < 0:
                await trio.lowlevel.checkpoint()
                return
            try:
                if not self._broken and self._pending:
                    await self._fsync_locked()
            finally:
                os.close(self._fd)
                self._fd = -1

    def _release(self) -> None:
        """Close the descriptor without syncing (a failure path; the file stays unsealed)."""
        self._closed = True
        self._held = None
        self._forget()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _forget(self) -> None:
        if self._syncer is not None:
            self._syncer.forget(self)

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            events=self._chain.seq, pending=self._pending, fsyncs=self._fsyncs,
            last_fsync_at=self._last_fsync_at, sealed=self._sealed, broken=self._broken,
        )


def _dir_then(directory: Path | None, then: Callable[[], None] | None) -> None:
    if directory is not None:
        _fsync_session_dir(directory)
    if then is not None:
        then()


async def _failure(job: Started[None]) -> Exception | None:
    """What ``job`` raised (None: it returned); awaited to its end either way."""
    try:
        await job.result()
    except Exception as exc:  # noqa: BLE001 - the caller's to report
        return exc
    return None


async def sign_sealed(path: Path, signer: Signer, seal: Seal, seal_hash: str,
                      file_sha256: str) -> Path:
    """Sign a sealed file's statement and write the sidecar next to it."""
    statement = session_statement(seal, seal_hash, file_sha256)
    sidecar = await trio.to_thread.run_sync(signer.sign_statement, statement)
    target = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        await trio.to_thread.run_sync(_write_private_atomic, target, sidecar)
    except OSError as exc:
        raise AuditWriteError(f"cannot write {target}: {exc.strerror}") from exc
    return target


async def _load_existing(path: Path, session: str) -> tuple[int, Scan, bytes]:
    try:
        return await trio.to_thread.run_sync(_open_existing_file, path, session)
    except FileNotFoundError as exc:
        raise AuditNotFound(f"no audit file at {path}") from exc
    except OSError as exc:
        raise AuditWriteError(f"cannot open {path}: {exc.strerror}") from exc


async def _check_listed_file(path: Path, session: str, ledger: Ledger) -> None:
    """A session the ledger lists must have its seal; :class:`AuditLedgerError` otherwise
    (the file is only read)."""

    def check() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise AuditNotFound(f"no audit file at {path}") from exc
        except OSError as exc:
            raise AuditWriteError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            data = _read_fd(fd)
        finally:
            os.close(fd)
        scan = scan_session(data, str(path), session, allow_incomplete=True)
        if scan.seal is None:
            raise AuditLedgerError(
                str(ledger.path), ledger.line_of(session),
                f"lists session {session} as sealed, but its file has no final record: lines "
                "were cut off after the seal; the file is left as it is")

    await trio.to_thread.run_sync(check)


async def append_daemon_lost(
    state_dir: Path,
    session: str,
    *,
    ledger: Ledger | None = None,
    hub: AuditHub | None = None,
    signer: Signer | None = None,
    clock: Clock | None = None,
) -> Seal | None:
    """Close the file of a session that was running when the daemon died.

    An unsealed file gets a ``session_ended`` with reason ``daemon_lost`` and a seal (and its
    ledger entry and signature); the seal is returned. A file sealed before the daemon died
    but missing from the ledger (it died in between) gets its ledger entry; None is returned.
    A broken chain raises ``AuditVerifyError`` and the file is left as it is, for inspection.
    """
    detail = f"the daemon died while the session ran; recorded by daemon pid {os.getpid()}"
    return await append_closing(state_dir, session, reason="daemon_lost", detail=detail,
                                ledger=ledger, hub=hub, signer=signer, clock=clock)


async def append_closing(
    state_dir: Path,
    session: str,
    *,
    reason: EndReason,
    detail: str,
    ledger: Ledger | None = None,
    hub: AuditHub | None = None,
    signer: Signer | None = None,
    clock: Clock | None = None,
) -> Seal | None:
    """Seal the unsealed file of a session that is over, after the fact: a ``session_ended``
    (``reason``, ``detail``) and a seal, as :func:`append_daemon_lost` describes. Also how a
    file whose writes failed (a full disk) is sealed as truncated once they work again."""
    path = session_dir(state_dir, session) / AUDIT_FILE
    if ledger is not None and session in ledger:
        # Listed: its seal was durable before its line was written. Read, never changed: a
        # file without its seal lost lines since, and the repair would write over the proof.
        await _check_listed_file(path, session, ledger)
        return None
    fd, scan, kept = await _load_existing(path, session)
    if scan.seal is not None:
        os.close(fd)
        if ledger is not None and scan.seal_hash is not None:
            await ledger.record(SessionSealed(
                session=session, count=scan.seal.count, merkle_root=scan.seal.merkle_root,
                seal_hash=scan.seal_hash, file_sha256=scan.file_sha256))
        return None
    writer = AuditWriter(_PRIVATE, session=session, path=path, fd=fd, chain=scan.chain(),
                         digest=hashlib.sha256(kept), hub=hub, ledger=ledger, signer=signer,
                         fsync_interval=DEFAULT_FSYNC_INTERVAL,
                         fsync_every=DEFAULT_FSYNC_EVERY, clock=clock,
                         discarded_bytes=scan.torn_bytes)
    if scan.torn_bytes:
        detail += f"; a partial last line ({scan.torn_bytes} bytes) was discarded"
    try:
        writer.append(SessionEnded(reason=reason, detail=detail))
        return await writer.seal()
    finally:
        writer._release()
