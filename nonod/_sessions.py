"""The session registry: every sandboxed program the daemon runs, live or ended.

Each session is one task tree. :meth:`Registry.launch` calls ``nursery.start(_run_session)``:
the launch happens before ``started()``, so a refused launch comes out of ``launch()`` as a
``NonoError`` in the requesting connection, and the registry never hears of it. After
``started()`` the session root owns everything: a watcher waiting for the program's exit, the
PTY pump and the output-log writer. It is the only place (with the per-connection handler) that
catches ``Exception``: a failure there ends that session, never the daemon.

Stopping is cancellation: :meth:`Session.request_stop` cancels the session's scope and the
root's cleanup runs shielded and bounded: SIGTERM, the grace period, SIGKILL, wait, record.

Records persist as ``<state_dir>/sessions/<id>/session.json`` (directories ``0700``), beside
the session's ``output.log``. A record still marked running when the daemon starts belongs to a
program that died with the previous daemon (the engine ties every session to the daemon's life
with ``PR_SET_PDEATHSIG``): it is recorded as ended, reason ``daemon_lost``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import os
import re
import secrets
import shutil
import signal as _signal
import struct
import termios
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, final

import msgspec
import structlog
import trio
from structlog.contextvars import bound_contextvars

from . import _services
from .audit import (
    AuditError,
    AuditKeyError,
    KeySigner,
    SessionEnded,
    SessionStarted,
    TrustFailed,
    TrustVerified,
    ViewGuarded,
    redact_argv,
)
from .audit import CredentialInjected as AuditCredentialInjected
from .audit import Enforcement as AuditEnforcement
from .audit import Event as AuditEvent
from .audit import Network as AuditNetwork
from .audit import SignalSent as AuditSignalSent
from .audit._fanout import AuditHub
from .audit._kernel import FsDeniedMonitor, Watch
from .audit._mask import masked
from .audit._writer import AuditWriter, Ledger
from .control import protocol as p
from .errors import NonoError, PolicyError
from .policy import ResolvedPolicy
from .sandbox import (
    EnforcementReport,
    ExitStatus,
    GuardReport,
    LaunchRequest,
    LayerReport,
    Sandboxed,
)

log = structlog.get_logger()

RECORD_VERSION: Final = 1
#: How long the PTY pump may keep reading after the program exited (grandchildren may hold it).
DRAIN_TIMEOUT: Final = 2.0
#: How long to wait for a process after SIGKILL before giving up on it (and saying so).
KILL_TIMEOUT: Final = 10.0
#: Output chunks a subscriber (``logs -f``, ``attach``) may have queued before it is dropped.
SUBSCRIBER_BACKLOG: Final = 512
EVENT_BACKLOG: Final = 256
_READ_CHUNK: Final = 64 * 1024


# --------------------------------------------------------------------------------- errors


class SessionError(NonoError):
    code = "session.error"


class SessionNotFound(SessionError):
    code = "session.not_found"


class SessionAmbiguous(SessionError):
    code = "session.ambiguous"


class NameTaken(SessionError):
    code = "session.name_taken"


class SessionBusy(SessionError):
    code = "session.busy"


class SessionLimit(SessionError):
    code = "session.limit"


class NotRunning(SessionError):
    code = "session.not_running"


class NoTerminal(SessionError):
    code = "session.no_tty"


class RootRefused(PolicyError):
    """A system daemon does not run sessions as root unless config and profile both allow it."""

    code = "policy.root_refused"


# ------------------------------------------------------------------------------ contracts


class Process(Protocol):
    """What the registry needs of a launched program (``nonod.sandbox.Sandboxed``)."""

    pid: int
    enforcement: EnforcementReport

    async def wait_exited(self) -> ExitStatus: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class LauncherLike(Protocol):
    """What the registry needs of the engine (``nonod.sandbox.Launcher``)."""

    async def launch(
        self,
        policy: ResolvedPolicy,
        request: LaunchRequest,
        *,
        stdio: tuple[int, int, int] = ...,
        controlling_tty: bool = ...,
    ) -> Process: ...


GetLauncher = Callable[[], Awaitable[LauncherLike]]


@dataclass(frozen=True)
class Caller:
    """A peer of the control socket, from ``SO_PEERCRED``."""

    uid: int
    gid: int
    pid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def may_see(self, owner_uid: int) -> bool:
        return self.is_root or self.uid == owner_uid


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start one session, decided by the connection handler."""

    policy: ResolvedPolicy
    request: LaunchRequest
    owner: Caller
    profile: str | None
    name: str | None
    detach: bool
    stdio: p.Stdio
    passed_fds: tuple[int, int, int] | None = None
    term: p.TermSize | None = None
    trust_override: bool = False
    #: ``launch --audit-sign-key``: overrides ``[audit] sign_key`` for this session.
    audit_sign_key: str | None = None


@dataclass(frozen=True)
class SessionLimits:
    """The ``[sessions]`` settings the registry reads at each use (they reload on SIGHUP)."""

    max_live: int = 1024
    stop_grace: float = 10.0
    shutdown_grace: float = 5.0
    allow_root: bool = False
    output_buffer_bytes: int = 256 * 1024
    log_max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class AuditSettings:
    """The ``[audit]`` settings the registry reads at each use (they reload on SIGHUP)."""

    enabled: bool = True
    fsync_interval: float = 1.0
    sign_key: str | None = None
    keep_days: float | None = None
    keep_sessions: int | None = None
    subscriber_buffer: int = 256


# -------------------------------------------------------------------------------- records


class SessionRecord(msgspec.Struct, kw_only=True):
    """What ``session.json`` holds. Never the environment: it may carry secrets."""

    version: int = RECORD_VERSION
    id: str
    name: str
    owner_uid: int
    owner_gid: int
    uid: int
    gid: int
    profile: str | None = None
    argv: tuple[str, ...] = ()
    cwd: str = "/"
    state: p.SessionState = "starting"
    pid: int | None = None
    detached: bool = False
    tty: bool = False
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: p.EndReason = ""
    policy_digest: str = ""
    enforcement: p.Enforcement | None = None
    daemon_pid: int = 0
    #: The key its audit record is signed with (a daemon_lost seal is signed with it too).
    audit_sign_key: str | None = None


_record_decoder = msgspec.json.Decoder(SessionRecord)
_record_encoder = msgspec.json.Encoder(order="sorted")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _enforcement(report: EnforcementReport) -> p.Enforcement:
    return p.Enforcement(
        fully_enforced=report.fully_enforced,
        summary=report.summary(),
        landlock_abi=report.landlock_abi,
        layers=tuple(
            p.Layer(name=lay.name, state=lay.state, reason=lay.reason, detail=lay.detail)
            for lay in report.layers
        ),
    )


# --------------------------------------------------------------------------------- output


@final
class Subscription:
    """A live feed of a session's output: ``(offset, bytes)`` items, in order.

    The session never waits for a subscriber: when its backlog is full the feed is closed and
    ``lagged`` is set.
    """

    def __init__(self, backlog: int) -> None:
        self._send, self.channel = trio.open_memory_channel[tuple[int, bytes]](backlog)
        self.lagged = False

    def _feed(self, offset: int, data: bytes) -> bool:
        try:
            self._send.send_nowait((offset, data))
        except trio.WouldBlock:
            self.lagged = True
            self._send.close()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _end(self) -> None:
        self._send.close()

    def close(self) -> None:
        self.channel.close()
        self._send.close()


@final
class SessionOutput:
    """A session's terminal output: a bounded ring in memory, a capped log file, live feeds.

    Bytes are appended to the ring and offered to subscribers synchronously; the log file is
    written by :meth:`run_writer` in a worker thread, in batches, so a slow disk never stalls
    the PTY pump. The writer's backlog is capped at the ring's size, which keeps "file, then
    ring" a gap-free history (see :meth:`history_parts`).
    """

    def __init__(self, *, capacity: int, log_path: Path | None, log_max: int) -> None:
        self.capacity = capacity
        self.log_path = log_path
        self._log_max = log_max
        self._ring = bytearray()
        self.total = 0
        self._subs: list[Subscription] = []
        self._pending = bytearray()
        self._logged = 0  # bytes in the file
        self._log_gap = False  # output was dropped from the file
        self._wakeup = trio.Event()
        self._ended = False

    # -- producer side (the PTY pump)
    def feed(self, data: bytes) -> None:
        offset = self.total
        self.total += len(data)
        self._ring += data
        if len(self._ring) > self.capacity:
            del self._ring[: len(self._ring) - self.capacity]
        self._subs = [sub for sub in self._subs if sub._feed(offset, data)]
        if self.log_path is not None and not self._log_gap:
            self._pending += data
            if len(self._pending) > self.capacity:
                self._log_gap = True  # the disk cannot keep up: the ring still has the tail
                self._pending.clear()
            self._wakeup.set()

    def end(self) -> None:
        """No more output: close every feed (their readers see end-of-channel)."""
        self._ended = True
        for sub in self._subs:
            sub._end()
        self._subs.clear()
        self._wakeup.set()

    # -- consumer side
    def subscribe(self, backlog: int = SUBSCRIBER_BACKLOG) -> tuple[bytes, int, Subscription]:
        """The ring's content, its starting offset, and a feed of everything after it."""
        sub = Subscription(backlog)
        if self._ended:
            sub._end()
        else:
            self._subs.append(sub)
        return bytes(self._ring), self.total - len(self._ring), sub

    def history_parts(self) -> tuple[int, bytes, int]:
        """``(bytes of the file that precede the ring, ring, ring start offset)``."""
        start = self.total - len(self._ring)
        in_file = min(start, self._logged)
        return in_file, bytes(self._ring), start

    @property
    def log_gap(self) -> bool:
        return self._log_gap

    async def run_writer(self) -> None:
        """Append pending output to the log file until :meth:`end`, then flush the rest."""
        if self.log_path is None:
            return
        fd = await trio.to_thread.run_sync(_open_log, self.log_path)
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                await self._flush(fd)
                if self._ended:
                    return
        finally:
            with trio.CancelScope(shield=True):
                await self._flush(fd)
                os.close(fd)

    async def _flush(self, fd: int) -> None:
        if not self._pending:
            return
        chunk = bytes(self._pending)
        self._pending.clear()
        room = self._log_max - self._logged
        if room <= 0:
            self._log_gap = True
            return
        if len(chunk) > room:
            chunk = chunk[:room]
            self._log_gap = True
        try:
            await trio.to_thread.run_sync(_write_all, fd, chunk)
        except OSError as exc:
            log.warning("output log write failed", path=str(self.log_path), error=str(exc))
            self._log_gap = True
            return
        self._logged += len(chunk)


def _open_log(path: Path) -> int:
    return os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_range(path: Path, start: int, end: int) -> bytes:
    if end <= start:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    except FileNotFoundError:
        return b""


def _tail_lines(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    end = len(data)
    # A trailing newline ends the last line; it does not start an empty one.
    cursor = end - 1 if data.endswith(b"\n") else end
    for _ in range(lines):
        cursor = data.rfind(b"\n", 0, cursor)
        if cursor < 0:
            return data
    return data[cursor + 1 :]


# -------------------------------------------------------------------------------- session


def _set_winsize(fd: int, term: p.TermSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", term.rows, term.cols, 0, 0))


@final
class Session:
    """One session: its record, and while it is live, its program, terminal and output."""

    def __init__(self, record: SessionRecord, *, directory: Path) -> None:
        self.record = record
        self.directory = directory
        self.output: SessionOutput | None = None
        self.process: Process | None = None
        #: The client attached to the terminal (one at a time), or None.
        self.attached_by: object | None = None
        self._exited = trio.Event()
        self._scope = trio.CancelScope()
        self._stop_reason: p.EndReason = ""
        self._stop_grace: float | None = None
        self._pty: trio.lowlevel.FdStream | None = None
        self._pty_fd = -1
        #: Proxy, credentials and inbound forwards around the program (see ``_services``).
        self.services: _services.Prepared | None = None
        #: The session's audit stream (None when auditing is off).
        self.audit: AuditWriter | None = None
        if record.state == "exited":
            self._exited.set()

    def audit_event(self, event: object) -> None:
        """Record one event (from the proxy, the inbound forwards...) in the audit stream."""
        if self.audit is None:
            return
        converted = _audit_event(event)
        if converted is not None:
            self.write_event(converted)

    def write_event(self, event: AuditEvent) -> None:
        """Append ``event`` to the audit stream, with what the program holds masked (a host
        or path it chose may carry its phantom token: see ``audit._mask``)."""
        if self.audit is None:
            return
        hidden = self.services.hidden if self.services is not None else {}
        self.audit.append(masked(event, hidden) if hidden else event)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def live(self) -> bool:
        return self.record.state != "exited"

    @property
    def log_path(self) -> Path:
        return self.directory / "output.log"

    def info(self) -> p.SessionInfo:
        r = self.record
        return p.SessionInfo(
            id=r.id, name=r.name, state=r.state, pid=r.pid, profile=r.profile, argv=r.argv,
            started_at=r.started_at, ended_at=r.ended_at, exit_code=r.exit_code,
            signal=r.signal, enforcement=r.enforcement,
        )

    def statistics(self) -> p.SessionDetail:
        """Everything ``inspect`` shows."""
        r = self.record
        return p.SessionDetail(
            id=r.id, name=r.name, state=r.state, pid=r.pid, profile=r.profile, argv=r.argv,
            started_at=r.started_at, ended_at=r.ended_at, exit_code=r.exit_code,
            signal=r.signal, enforcement=r.enforcement, uid=r.uid, gid=r.gid, cwd=r.cwd,
            detached=r.detached, tty=r.tty, attached=self.attached_by is not None,
            reason=r.reason,
            policy_digest=r.policy_digest,
            log_path=str(self.log_path) if r.tty else None,
            output_bytes=self.output.total if self.output is not None else 0,
        )

    def exited_reply(self) -> p.Exited:
        r = self.record
        return p.Exited(session=r.id, exit_code=r.exit_code, signal=r.signal,
                        reason=r.reason or "exited")

    async def wait_exited(self) -> p.Exited:
        """Wait until the session has ended and its record is final."""
        await self._exited.wait()
        return self.exited_reply()

    def request_stop(self, *, reason: p.EndReason, grace: float) -> None:
        """Stop the session: SIGTERM, ``grace`` seconds, then SIGKILL. Returns at once."""
        if not self.live:
            return
        if not self._stop_reason:
            self._stop_reason = reason
        # A second, harsher request (stop --force after stop) shortens the grace.
        if self._stop_grace is None or grace < self._stop_grace:
            self._stop_grace = grace
        self._scope.cancel()

    def send_signal(self, sig: int, *, reason: str = "user", sender: str = "client") -> None:
        if not self.live or self.process is None:
            raise NotRunning(f"session {self.id} is not running")
        self.process.send_signal(sig)
        self.audit_signal(sig, reason=reason, sender=sender)

    def audit_signal(self, sig: int, *, reason: str, sender: str = "daemon") -> None:
        """Record a signal the daemon sent to the program (after sending it)."""
        if self.audit is None:
            return
        try:
            name = _signal.Signals(sig).name
        except ValueError:
            name = ""
        self.audit.append(AuditSignalSent(signal=sig, name=name, reason=reason, sender=sender))

    def require_tty(self) -> None:
        if not self.live:
            raise NotRunning(f"session {self.id} has ended")
        if self._pty is None:
            raise NoTerminal(
                f"session {self.id} has no terminal of the daemon's",
                hint="only detached sessions (launch -d) can be attached",
            )

    async def write_input(self, data: bytes) -> None:
        self.require_tty()
        pty = self._pty
        if pty is None:  # for the type checker; require_tty checked it
            raise NoTerminal(f"session {self.id} has no terminal")
        try:
            await pty.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise NotRunning(f"session {self.id} has ended") from exc
        except OSError as exc:  # EIO: the program closed its side
            raise NotRunning(f"session {self.id} no longer reads its terminal") from exc

    def resize(self, term: p.TermSize) -> None:
        self.require_tty()
        with contextlib.suppress(OSError):
            _set_winsize(self._pty_fd, term)

    async def _pump(self, output: SessionOutput) -> None:
        """Copy the PTY's output into the session output until the terminal closes."""
        pty = self._pty
        if pty is None:
            return
        while True:
            try:
                data = await pty.receive_some(_READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                # EIO once every holder of the terminal's other side has closed it.
                return
            if not data:
                return
            output.feed(data)


# ------------------------------------------------------------------------------- registry

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@final
class EventFeed:
    """Lifecycle events for one subscriber; closed (``lagged``) if it falls behind."""

    def __init__(self, caller: Caller, session_id: str | None) -> None:
        self.caller = caller
        self.session_id = session_id
        self._send, self.channel = trio.open_memory_channel[p.SessionEvent](EVENT_BACKLOG)
        self.lagged = False

    def _offer(self, event: p.SessionEvent, owner_uid: int) -> bool:
        if not self.caller.may_see(owner_uid):
            return True
        if self.session_id is not None and event.session.id != self.session_id:
            return True
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.lagged = True
            self._send.close()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        self.channel.close()
        self._send.close()


@final
class Registry:
    """All sessions of this daemon. Create with :meth:`open` inside the daemon's nursery."""

    def __init__(
        self,
        *,
        nursery: trio.Nursery,
        get_launcher: GetLauncher,
        state_dir: Path,
        limits: Callable[[], SessionLimits],
        system: bool = False,
        network: Callable[[], _services.NetworkSettings] | None = None,
        audit: Callable[[], AuditSettings] | None = None,
        audit_hub: AuditHub | None = None,
        audit_ledger: Ledger | None = None,
        fs_denied: FsDeniedMonitor | None = None,
    ) -> None:
        self._fs_denied = fs_denied
        self._fs_watches: dict[str, Watch] = {}
        self._network = network or _services.NetworkSettings
        self._audit_settings = audit or AuditSettings
        self._audit_hub = audit_hub
        self._audit_ledger = audit_ledger
        self._nursery = nursery
        self._get_launcher = get_launcher
        self._state_dir = state_dir
        self._sessions_dir = state_dir / "sessions"
        self._limits = limits
        self._system = system
        self._sessions: dict[str, Session] = {}
        self._feeds: list[EventFeed] = []

    # -- startup
    async def load(self) -> list[str]:
        """Create the state directory and read earlier records; returns ids marked lost."""
        await trio.to_thread.run_sync(_make_private_dirs, self._state_dir, self._sessions_dir)
        records = await trio.to_thread.run_sync(_read_records, self._sessions_dir)
        lost: list[str] = []
        for record in records:
            if record.state != "exited":
                record.state = "exited"
                record.reason = "daemon_lost"
                record.signal = _signal.SIGKILL
                record.exit_code = None
                record.ended_at = _now()
                lost.append(record.id)
                log.warning("session was running when the daemon died; it died with it",
                            session=record.id, name=record.name, pid=record.pid)
            session = Session(record, directory=self._sessions_dir / record.id)
            self._sessions[record.id] = session
            if record.id in lost:
                await self._save(session)
                await self._close_lost_audit(record.id, record.audit_sign_key)
        return lost

    async def _close_lost_audit(self, session_id: str, sign_key: str | None = None) -> None:
        """Append session_ended (daemon_lost) and a seal to a lost session's audit file."""
        from .audit import AuditNotFound, Signer
        from .audit._writer import append_daemon_lost

        signer: Signer | None = None
        if sign_key is not None:
            try:
                signer = await _load_audit_signer(sign_key)
            except AuditError as exc:
                log.error("a lost session's audit file is sealed unsigned", session=session_id,
                          error=exc.message)
        try:
            await append_daemon_lost(self._state_dir, session_id, hub=self._audit_hub,
                                     ledger=self._audit_ledger, signer=signer)
        except AuditNotFound:
            pass  # auditing was off, or the daemon died before the file existed
        except AuditError:
            log.exception("could not close a lost session's audit file", session=session_id)

    # -- queries
    def statistics(self, caller: Caller | None = None) -> tuple[int, int]:
        """``(live sessions, known sessions)``: all of them, or those ``caller`` may see (a
        system daemon's user learns nothing of other users' sessions, not even how many)."""
        seen = [s for s in self._sessions.values()
                if caller is None or caller.may_see(s.record.owner_uid)]
        return sum(1 for s in seen if s.live), len(seen)

    def visible(self, caller: Caller, *, include_exited: bool) -> list[Session]:
        out = [
            s for s in self._sessions.values()
            if caller.may_see(s.record.owner_uid) and (include_exited or s.live)
        ]
        return sorted(out, key=lambda s: (s.record.started_at, s.id))

    def may_see_id(self, caller: Caller, session_id: str) -> bool:
        """May ``caller`` see session ``session_id`` (live or ended)?"""
        session = self._sessions.get(session_id)
        return session is not None and caller.may_see(session.record.owner_uid)

    @property
    def audit_hub(self) -> AuditHub | None:
        return self._audit_hub

    def audit_settings(self) -> AuditSettings:
        return self._audit_settings()

    def audit_path(self, session: Session) -> Path:
        from .audit import AUDIT_FILE

        return session.directory / AUDIT_FILE

    def find(self, ref: str, caller: Caller) -> Session:
        """A session by id, name or unique id prefix, among those ``caller`` may see."""
        mine = self.visible(caller, include_exited=True)
        for session in mine:
            if session.id == ref:
                return session
        named = [s for s in mine if s.name == ref]
        if named:
            live = [s for s in named if s.live]
            return live[-1] if live else named[-1]
        if len(ref) >= 2:
            prefixed = [s for s in mine if s.id.startswith(ref)]
            if len(prefixed) == 1:
                return prefixed[0]
            if len(prefixed) > 1:
                raise SessionAmbiguous(
                    f"{ref!r} matches {len(prefixed)} sessions",
                    hint="give more of the id, or the session's name",
                )
        raise SessionNotFound(f"no session {ref!r}", hint="`nonoctl ps --all` lists them")

    # -- events
    def subscribe_events(self, caller: Caller, session_id: str | None) -> EventFeed:
        feed = EventFeed(caller, session_id)
        self._feeds.append(feed)
        return feed

    def _emit(self, kind: str, session: Session) -> None:
        event = p.SessionEvent(kind=kind, session=session.info())
        self._feeds = [f for f in self._feeds if f._offer(event, session.record.owner_uid)]

    # -- launching
    def _check_launch(self, plan: LaunchPlan) -> None:
        limits = self._limits()
        live = [s for s in self._sessions.values() if s.live]
        if len(live) >= limits.max_live:
            raise SessionLimit(
                f"{len(live)} sessions are live, the limit is {limits.max_live}",
                hint="raise [sessions] max_live in nonod.toml, or stop sessions",
            )
        if plan.name is not None:
            for s in live:
                if s.name == plan.name and s.record.owner_uid == plan.owner.uid:
                    raise NameTaken(
                        f"a live session is already named {plan.name!r} ({s.id})",
                        hint="choose another --name, or stop that session first",
                    )
        runs_as = plan.request.uid if plan.request.uid is not None else os.geteuid()
        if self._system and runs_as == 0:
            profile_allows = bool(getattr(plan.policy, "allow_root", False))
            if not (limits.allow_root and profile_allows):
                raise RootRefused(
                    "the system daemon does not run sessions as root",
                    hint="run nonoctl as the user the program should run as; root sessions "
                    "need [sessions] allow_root = true and a profile that allows root",
                )

    def _new_id(self) -> str:
        while True:
            candidate = secrets.token_hex(4)
            if candidate not in self._sessions and not (self._sessions_dir / candidate).exists():
                return candidate

    def _new_name(self, plan: LaunchPlan) -> str:
        if plan.name is not None:
            return plan.name
        base = plan.profile or (Path(plan.request.argv[0]).name if plan.request.argv else "")
        base = _NAME_CHARS.sub("-", Path(base).name.removesuffix(".json")).strip("-.")[:40]
        base = base or "session"
        if not base[0].isalnum():
            base = "s" + base
        taken = {s.name for s in self._sessions.values()
                 if s.live and s.record.owner_uid == plan.owner.uid}
        while True:
            candidate = f"{base}-{secrets.token_hex(2)}"
            if candidate not in taken:
                return candidate

    async def launch(self, plan: LaunchPlan) -> Session:
        """Start a session; raise ``NonoError`` (nothing is recorded) if it cannot start."""
        self._check_launch(plan)
        session_id = self._new_id()
        request = plan.request
        record = SessionRecord(
            id=session_id,
            name=self._new_name(plan),
            owner_uid=plan.owner.uid,
            owner_gid=plan.owner.gid,
            uid=request.uid if request.uid is not None else os.geteuid(),
            gid=request.gid if request.gid is not None else os.getegid(),
            profile=plan.profile,
            argv=request.argv,
            cwd=request.cwd,
            detached=plan.detach,
            tty=plan.stdio == "pty",
            started_at=_now(),
            policy_digest=plan.policy.digest(),
            daemon_pid=os.getpid(),
        )
        session = Session(record, directory=self._sessions_dir / session_id)
        # Registered while starting, so the name is reserved and `ps` shows it.
        self._sessions[session_id] = session
        try:
            started: Session = await self._nursery.start(self._run_session, session, plan)
        except BaseException:
            del self._sessions[session_id]
            record.state = "exited"
            session._exited.set()  # nobody may wait for it (shutdown lists starting sessions)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, session.directory, True)
            raise
        return started

    async def _start_program(self, session: Session, plan: LaunchPlan) -> Process:
        limits = self._limits()
        await trio.to_thread.run_sync(_make_private_dirs, session.directory)
        launcher = await self._get_launcher()
        to_close: list[int] = []
        try:
            if plan.stdio == "passed":
                if plan.passed_fds is None:
                    raise NonoError("an attached launch needs three file descriptors")
                stdio = plan.passed_fds
            elif plan.stdio == "pty":
                master, slave = os.openpty()
                to_close.append(slave)
                if plan.term is not None:
                    _set_winsize(master, plan.term)
                session._pty_fd = master
                session._pty = trio.lowlevel.FdStream(master)
                session.output = SessionOutput(
                    capacity=limits.output_buffer_bytes,
                    log_path=session.log_path,
                    log_max=limits.log_max_bytes,
                )
                stdio = (slave, slave, slave)
            else:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                to_close.append(null)
                stdio = (null, null, null)
            prepared = await _services.prepare(
                plan.policy, plan.request, settings=self._network(),
                environ=dict(plan.request.env),
                listen_ports=plan.policy.network.listen_ports,
                user_config_dir=_user_config_dir(plan.request),
                trust_override=plan.trust_override,
            )
            if prepared.request is None:
                raise NonoError("session services produced no launch request")
            request = prepared.request
            if self._fs_denied is not None and self._fs_denied.active:
                request = msgspec.structs.replace(request, audit_tag=self._fs_denied.tag)
            proc = await launcher.launch(
                plan.policy, request, stdio=stdio,
                controlling_tty=plan.stdio == "pty",
            )
            self._watch_fs_denied(session, proc)
            session.services = prepared
        except BaseException:
            if session._pty is not None:
                with trio.CancelScope(shield=True):
                    await session._pty.aclose()
                session._pty = None
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        return proc

    def _watch_fs_denied(self, session: Session, proc: Process) -> None:
        """Route the session's filesystem denials to its audit stream; say in its
        enforcement report whether they are observed (observation never refuses a launch)."""
        monitor = self._fs_denied
        if monitor is None:
            return
        ses = proc.audit_session if isinstance(proc, Sandboxed) else 0
        if ses:
            def sink(event: AuditEvent) -> None:
                try:
                    session.write_event(event)
                except AuditError:
                    log.exception("could not record a filesystem denial")

            self._fs_watches[session.id] = monitor.watch(ses, sink)
            layer = LayerReport(name="fs_denied", state="applied",
                                detail=f"{monitor.status}, audit session {ses}")
        else:
            why = monitor.status
            if monitor.active:
                err = proc.audit_session_error if isinstance(proc, Sandboxed) else 0
                why = ("unavailable: the kernel refused the session's audit tag ("
                       + os.strerror(err or errno.EINVAL) + ")")
            layer = LayerReport(name="fs_denied", state="off", reason=why)
        proc.enforcement = msgspec.structs.replace(
            proc.enforcement, layers=(*proc.enforcement.layers, layer))

    async def _run_session(
        self,
        session: Session,
        plan: LaunchPlan,
        *,
        task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with bound_contextvars(session=session.id):
            # Fail closed: no audit record, no program (unless auditing is off).
            await self._create_audit(session, plan)
            try:
                proc = await self._start_program(session, plan)
            except BaseException:
                if session.audit is not None:
                    with trio.CancelScope(shield=True):
                        await session.audit.aclose()
                    session.audit = None
                raise
            session.process = proc
            if isinstance(proc, Sandboxed):
                proc.on_guard = functools.partial(_record_guard, session)
            record = session.record
            record.state = "running"
            record.pid = proc.pid
            record.enforcement = _enforcement(proc.enforcement)
            log.info("session started", name=record.name, pid=proc.pid, argv0=record.argv[:1],
                     profile=record.profile, uid=record.uid,
                     enforcement=record.enforcement.summary)
            # On disk before anyone hears of it: a daemon killed right after the reply must
            # still find the record at its next start. Shielded: the program already runs.
            with trio.CancelScope(shield=True):
                await self._save(session)
                try:
                    await self._open_audit(session, plan, proc)
                except AuditError:
                    # Its record could not be started (disk full): it does not run unaudited.
                    proc.kill()
                    with trio.move_on_after(KILL_TIMEOUT):
                        await proc.wait_exited()
                    if session.audit is not None:
                        await session.audit.aclose()
                        session.audit = None
                    raise
            task_status.started(session)
            try:
                await self._supervise(session, proc)
            except Exception:
                # The session root: whatever went wrong here ends this session only.
                log.exception("session supervision failed; the program was killed")
                session._stop_reason = "error"
            finally:
                with trio.CancelScope(shield=True):
                    await self._finish(session)

    async def _supervise(self, session: Session, proc: Process) -> None:
        watch_scope = trio.CancelScope(shield=True)

        async def watch() -> None:
            # Shielded: waiting for the exit must survive the session's own cancellation,
            # or the exit status would be lost. Cleanup cancels it only when giving up.
            with watch_scope:
                status = await proc.wait_exited()
                session.record.exit_code = status.code
                session.record.signal = status.signal
            exited.set()

        exited = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            if session.audit is not None:
                await nursery.start(session.audit.run)
            if session.services is not None and isinstance(proc, Sandboxed):
                await nursery.start(_services.serve, session.services, proc,
                                    session.audit_event)
            if session.output is not None:
                nursery.start_soon(session.output.run_writer)
                pump_done = trio.Event()

                async def pump(output: SessionOutput) -> None:
                    try:
                        await session._pump(output)
                    finally:
                        pump_done.set()

                nursery.start_soon(pump, session.output)
            self._emit("started", session)
            try:
                with session._scope:
                    await exited.wait()
            finally:
                with trio.CancelScope(shield=True):
                    if not exited.is_set():
                        await self._terminate(session, proc, exited, watch_scope)
                    if session.output is not None:
                        with trio.move_on_after(DRAIN_TIMEOUT):
                            await pump_done.wait()
                        session.output.end()
                nursery.cancel_scope.cancel()

    async def _terminate(
        self, session: Session, proc: Process, exited: trio.Event, watch_scope: trio.CancelScope
    ) -> None:
        """SIGTERM, the grace period, SIGKILL, a bounded wait: the ``_run_process`` shape."""
        grace = session._stop_grace
        if grace is None:  # cancelled from outside: the daemon is shutting down
            grace = self._limits().shutdown_grace
            session._stop_reason = session._stop_reason or "daemon_shutdown"
        why = session._stop_reason or "stopped"
        if grace > 0:
            proc.send_signal(_signal.SIGTERM)
            self._audit_signal(session, _signal.SIGTERM, why)
            with trio.move_on_after(grace):
                await exited.wait()
        if not exited.is_set():
            proc.kill()
            self._audit_signal(session, _signal.SIGKILL,
                               f"{why}: grace period over" if grace > 0 else why)
            with trio.move_on_after(KILL_TIMEOUT):
                await exited.wait()
        if not exited.is_set():
            log.error("program did not exit after SIGKILL; no longer waiting for it",
                      pid=proc.pid)
            watch_scope.cancel()

    async def _finish(self, session: Session) -> None:
        record = session.record
        record.state = "exited"
        record.ended_at = _now()
        record.reason = session._stop_reason or "exited"
        if session._pty is not None:
            await session._pty.aclose()
            session._pty = None
        if session.output is not None:
            session.output.end()
        watch = self._fs_watches.pop(session.id, None)
        if watch is not None and self._fs_denied is not None:
            await self._fs_denied.release(watch)  # bounded: records still queued come first
        await self._close_audit(session)
        await self._save(session)
        # Before anyone hears the session ended: who then lists the sessions sees the result.
        with trio.move_on_after(AUDIT_CLOSE_TIMEOUT):
            await self.apply_retention()
        session._exited.set()
        log.info("session ended", name=record.name, exit_code=record.exit_code,
                 signal=record.signal, reason=record.reason)
        self._emit("exited", session)

    def _audit_signal(self, session: Session, sig: int, reason: str) -> None:
        try:
            session.audit_signal(sig, reason=reason)
        except AuditError:
            log.exception("could not record a signal in the audit stream", signal=sig)

    async def apply_retention(self) -> list[str]:
        """Remove sealed sessions beyond ``[audit] keep_days``/``keep_sessions`` (never a live
        one); returns their ids. Failures are logged: retention never stops the daemon."""
        from .audit import prune_sessions

        settings = self._audit_settings()
        if settings.keep_days is None and settings.keep_sessions is None:
            return []
        max_age = dt.timedelta(days=settings.keep_days) if settings.keep_days else None
        keep = [s.id for s in self._sessions.values() if s.live]

        def prune() -> list[str]:
            removed = prune_sessions(self._state_dir, max_age=max_age,
                                     max_count=settings.keep_sessions, keep=keep)
            return [summary.session for summary in removed]

        try:
            removed = await trio.to_thread.run_sync(prune)
        except AuditError:
            log.exception("audit retention failed")
            return []
        for session_id in removed:
            gone = self._sessions.get(session_id)
            if gone is not None and not gone.live:
                del self._sessions[session_id]
        if removed:
            log.info("audit retention removed sessions", sessions=removed)
        return removed

    async def _create_audit(self, session: Session, plan: LaunchPlan) -> None:
        """Create the session's audit file (and load its signing key) before the program
        starts; either failing refuses the launch. Nothing runs unaudited unless
        ``[audit] enabled = false``."""
        settings = self._audit_settings()
        if not settings.enabled:
            if plan.audit_sign_key is not None:
                raise AuditError("--audit-sign-key was given, but auditing is disabled",
                                 hint="[audit] enabled = false in nonod.toml")
            return
        key_name = plan.audit_sign_key or settings.sign_key
        signer = await _load_audit_signer(key_name) if key_name is not None else None
        try:
            writer = await AuditWriter.create(
                self._state_dir, session.id, hub=self._audit_hub, ledger=self._audit_ledger,
                signer=signer, fsync_interval=settings.fsync_interval)
        except AuditError as exc:
            raise AuditError(
                f"the session's audit record cannot be created: {exc.message}",
                hint="nothing runs unaudited: check the daemon's state directory "
                "(or set [audit] enabled = false)",
            ) from exc
        session.audit = writer
        session.record.audit_sign_key = key_name

    async def _open_audit(self, session: Session, plan: LaunchPlan, proc: Process) -> None:
        """The first records: who started, with which policy and enforcement, what trust
        verification found."""
        writer = session.audit
        if writer is None:
            return
        record = session.record
        secrets_seen = [v for _, v in (session.services.request.extra_env
                                        if session.services and session.services.request
                                        else ())]
        writer.append(SessionStarted(
            session=session.id, argv=redact_argv(record.argv, secrets_seen), cwd=record.cwd,
            uid=record.uid, gid=record.gid, pid=proc.pid, name=record.name,
            profile=record.profile, policy_digest=record.policy_digest))
        writer.append(AuditEnforcement.from_report(proc.enforcement))
        if session.services is not None:
            for warning in session.services.trust_warnings:
                writer.append(TrustFailed(path="", reason=warning, code="warning"))
            for outcome in session.services.trust:
                if outcome.outcome == "verified":
                    writer.append(TrustVerified(path=outcome.path, sha256=outcome.sha256,
                                                signer=""))
                else:
                    writer.append(TrustFailed(path=outcome.path, reason=outcome.reason,
                                              code=outcome.outcome))

    async def _close_audit(self, session: Session) -> None:
        writer, session.audit = session.audit, None
        if writer is None:
            return
        record = session.record
        reason = {"stopped": "stopped", "client_gone": "stopped", "daemon_shutdown": "stopped",
                  "error": "error"}.get(record.reason, "exited")
        with trio.move_on_after(AUDIT_CLOSE_TIMEOUT):
            try:
                writer.append(SessionEnded(
                    reason=reason,  # type: ignore[arg-type]
                    exit_code=None if record.signal is not None else record.exit_code,
                    signal=record.signal))
                await writer.seal()
            except AuditError:
                log.exception("audit stream could not be sealed")
            finally:
                await writer.aclose()

    async def _save(self, session: Session) -> None:
        data = _record_encoder.encode(session.record)
        try:
            await trio.to_thread.run_sync(_write_record, session.directory, data)
        except OSError as exc:
            log.error("cannot persist session record", path=str(session.directory),
                      error=exc.strerror or str(exc))

    # -- output
    async def history(
        self, session: Session, tail: int | None
    ) -> AsyncGenerator[p.Output, None]:
        """The session's output so far (all of it, or its last ``tail`` lines)."""
        output = session.output
        path = session.log_path
        if output is not None:
            in_file, ring, ring_start = output.history_parts()
        else:
            in_file = await trio.to_thread.run_sync(_file_size, path)
            ring, ring_start = b"", in_file
        gap = b"\r\n[nonod: output missing here: the log file was capped]\r\n"
        if tail is not None:
            window = max(0, in_file - 4 * 1024 * 1024)
            head = await trio.to_thread.run_sync(_read_range, path, window, in_file)
            joined = head + (gap if in_file < ring_start else b"") + ring
            data = _tail_lines(joined, tail)
            if data:
                yield p.Output(data=data, offset=max(0, ring_start + len(ring) - len(data)))
            return
        offset = 0
        while offset < in_file:
            end = min(in_file, offset + _READ_CHUNK)
            chunk = await trio.to_thread.run_sync(_read_range, path, offset, end)
            if not chunk:
                break
            yield p.Output(data=chunk, offset=offset)
            offset += len(chunk)
        if in_file < ring_start:
            yield p.Output(data=gap, offset=in_file)
        for start in range(0, len(ring), _READ_CHUNK):
            yield p.Output(data=ring[start : start + _READ_CHUNK], offset=ring_start + start)

    # -- housekeeping
    async def prune(self, caller: Caller) -> list[str]:
        """Forget the caller's ended sessions: their records and output go, their audit files
        stay (only audit retention, ``[audit] keep_*``, removes those: a user must not be able
        to erase the record of what their sessions did)."""
        gone = [s for s in self.visible(caller, include_exited=True) if not s.live]
        for session in gone:
            del self._sessions[session.id]
            await trio.to_thread.run_sync(_forget_session, session.directory)
        return [s.id for s in gone]

    def live_sessions(self) -> list[Session]:
        return [s for s in self._sessions.values() if s.live]

    async def shutdown(self) -> None:
        """Stop every live session (SIGTERM, grace, SIGKILL) and wait until all have ended."""
        grace = self._limits().shutdown_grace
        live = self.live_sessions()
        for session in live:
            session.request_stop(reason="daemon_shutdown", grace=grace)
        for session in live:
            await session.wait_exited()
        for feed in self._feeds:
            feed._send.close()


# ---------------------------------------------------------------------------- file system


AUDIT_CLOSE_TIMEOUT = 5.0


async def _load_audit_signer(name: str) -> KeySigner:
    """The trust key store's key ``name`` as an audit signer, or ``AuditKeyError``."""
    from . import trust

    def load() -> trust.SigningKey:
        return trust.keystore_for(name).load_signing_key(name)

    try:
        key = await trio.to_thread.run_sync(load)
    except trust.TrustError as exc:
        raise AuditKeyError(
            f"cannot load the audit signing key {name[:80]!r}: {exc.message}",
            hint=exc.hint or "create it with `nonoctl trust keygen --key NAME`",
        ) from exc
    return KeySigner(key)


def _user_config_dir(request: LaunchRequest) -> Path | None:
    """The caller's nono config dir (its user-level trust policy lives there)."""
    env = dict(request.env)
    base = env.get("XDG_CONFIG_HOME") or (f"{env['HOME']}/.config" if env.get("HOME") else "")
    return Path(base) / "nono" if base.startswith("/") else None


def _record_guard(session: Session, report: GuardReport) -> None:
    """The view guard acted on a path the host replaced: in the log and the audit stream."""
    log.warning("view guard", action=report.action, path=report.path, what=report.what,
                detail=report.detail)
    if session.audit is not None:
        try:
            session.write_event(ViewGuarded(action=report.action, path=report.path,
                                       what=report.what, detail=report.detail))
        except AuditError:
            log.exception("audit: a view guard event could not be recorded")


def _audit_event(event: object) -> AuditEvent | None:
    """Proxy and forwarder events in the audit model (unknown kinds are not recorded)."""
    # One import of the package, not a ``from`` import per name: this runs for every proxied
    # request, and each ``from`` import goes through importlib's Python code.
    from . import proxy

    if isinstance(event, proxy.NetworkEvent):
        return AuditNetwork.from_proxy(event)
    if isinstance(event, proxy.CredentialInjected):
        return AuditCredentialInjected(route=event.route, credential=event.credential,
                                       source=event.source)
    if isinstance(event, _services.InboundEvent):
        return AuditNetwork(mode="inbound", decision=event.decision,  # type: ignore[arg-type]
                            host=event.peer.rsplit(":", 1)[0], port=event.port,
                            bytes_in=event.bytes_in, bytes_out=event.bytes_out,
                            reason=event.reason or None)
    return None


def _make_private_dirs(*dirs: Path) -> None:
    for directory in dirs:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)


def _forget_session(directory: Path) -> None:
    """Remove a session's directory but its audit files (``audit.ndjson*``)."""
    from .audit import AUDIT_FILE

    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    kept = False
    for entry in entries:
        if entry.name.startswith(AUDIT_FILE) and not entry.name.endswith(".tmp"):
            kept = True
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not kept:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _write_record(directory: Path, data: bytes) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / "session.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        _write_all(fd, data + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, directory / "session.json")


def _read_records(sessions_dir: Path) -> list[SessionRecord]:
    out: list[SessionRecord] = []
    try:
        entries = sorted(sessions_dir.iterdir())
    except FileNotFoundError:
        return out
    for entry in entries:
        path = entry / "session.json"
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            log.warning("cannot read session record", path=str(path), error=str(exc))
            continue
        try:
            record = _record_decoder.decode(data)
        except msgspec.DecodeError as exc:
            log.warning("ignoring a damaged session record", path=str(path), error=str(exc))
            continue
        if record.id != entry.name:
            log.warning("ignoring a session record filed under another id", path=str(path))
            continue
        out.append(record)
    return out


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return 0
        raise


__all__ = [
    "Caller",
    "LaunchPlan",
    "LauncherLike",
    "Process",
    "Registry",
    "Session",
    "SessionLimits",
    "SessionOutput",
    "SessionRecord",
    "Subscription",
]

