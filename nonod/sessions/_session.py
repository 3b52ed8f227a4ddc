"""One session: its record and, while it lives, its program, terminal, output and audit.

A :class:`Session` is created by the registry and changed through its methods only: the
registry's supervisor calls :meth:`Session.open_terminal`, :meth:`Session.close_terminal`,
:meth:`Session.pump_terminal` and :meth:`Session.set_exited`; clients (through the control
server) call :meth:`Session.request_stop`, :meth:`Session.send_signal`,
:meth:`Session.write_input` and :meth:`Session.resize`.
"""

from __future__ import annotations

import contextlib
import fcntl
import struct
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import structlog
import trio

from .. import protocol as p
from .._session_services import InboundEvent, SessionServices
from ..audit import AuditError, AuditWriteError, ViewGuarded
from ..audit import CredentialInjected as AuditCredentialInjected
from ..audit import Event as AuditEvent
from ..audit import Network as AuditNetwork
from ..cgroups import SessionGroup
from ..policy import ApprovalPolicy
from ..sandbox import GuardReport
from ._audit import SessionAudit
from ._contracts import Process
from ._errors import NoTerminal, NotRunning
from ._output import SessionOutput
from ._records import SessionRecord

if TYPE_CHECKING:
    from .._metrics import Metrics

log = structlog.get_logger()

_READ_CHUNK: Final = 64 * 1024


def _set_winsize(fd: int, term: p.TermSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", term.rows, term.cols, 0, 0))


@final
class Session:
    """One session: its record, and while it is live, its program, terminal and output."""

    def __init__(self, record: SessionRecord, *, directory: Path,
                 metrics: Metrics | None = None) -> None:
        self.record = record
        self.metrics = metrics
        self.directory = directory
        self.output: SessionOutput | None = None
        self.process: Process | None = None
        #: Its cgroup, from just before the launch until the session has ended.
        self.cgroup: SessionGroup | None = None
        #: The client attached to the terminal (one at a time), or None.
        self.attached_by: object | None = None
        self._exited = trio.Event()
        #: Called once the record is final (``when_exited``), before the waiters wake.
        self._on_exited: list[Callable[[], None]] | None = None
        self._scope = trio.CancelScope()
        self._stop_reason: p.EndReason = ""
        self._stop_grace: float | None = None
        self._pty: trio.lowlevel.FdStream | None = None
        self._pty_fd = -1
        #: Proxy, credentials and inbound forwards around the program (``_session_services``).
        self.services: SessionServices | None = None
        #: The session's audit record (None when auditing is off).
        self.audit: SessionAudit | None = None
        #: What its profile says about unlisted hosts (None: they are refused).
        self.policy_approval: ApprovalPolicy | None = None
        #: The wait for its last filesystem denials, begun when its program's exit was read
        #: (``Registry._exit_read``); its end awaits it (once).
        self.denials_flushed: Callable[[], Awaitable[object]] | None = None
        if record.state == "exited":
            self._exited.set()

    def audit_event(self, event: object) -> None:
        """Record one event (from the proxy, the inbound forwards...) in the audit stream,
        and count it in the metrics."""
        if self.metrics is not None:
            _count(self.metrics, event)
        if self.audit is None:
            return
        converted = _audit_event(event)
        if converted is not None:
            with contextlib.suppress(AuditWriteError):  # the session is being stopped
                self.write_event(converted)

    def write_event(self, event: AuditEvent) -> None:
        """Append ``event`` to the audit record, with what the program holds masked (a host
        or path it chose may carry its phantom token: see ``audit._mask``). A failed write
        stops the session and raises AuditWriteError."""
        if self.audit is None:
            return
        if self.metrics is None:
            self.audit.write(event)
            return
        began = time.perf_counter()
        self.audit.write(event)
        self.metrics.audit_appended(time.perf_counter() - began)

    def record_guard(self, report: GuardReport) -> None:
        """The view guard acted on a path the host replaced: in the log and the audit."""
        log.warning("view guard", action=report.action, path=report.path, what=report.what,
                    detail=report.detail)
        try:
            self.write_event(ViewGuarded(action=report.action, path=report.path,
                                         what=report.what, detail=report.detail))
        except AuditError:
            log.exception("audit: a view guard event could not be recorded")

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

    def usage(self) -> p.Usage | None:
        """From the session's cgroup while it runs; the totals once it ended."""
        if self.cgroup is not None:
            return self.cgroup.usage()
        return self.record.usage

    async def wait_exited(self) -> None:
        """Wait until the session has ended and its record is final."""
        await self._exited.wait()

    @property
    def exited(self) -> bool:
        """The session has ended and its record is final."""
        return self._exited.is_set()

    def when_exited(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn`` (on the event loop, must not raise) once the session has ended and
        its record is final, as :meth:`wait_exited` would return, without a task waiting for
        it; at once if it has. Returns what forgets ``fn``."""
        if self._exited.is_set():
            fn()
            return lambda: None
        if self._on_exited is None:
            self._on_exited = []
        self._on_exited.append(fn)

        def forget() -> None:
            if self._on_exited is not None and fn in self._on_exited:
                self._on_exited.remove(fn)

        return forget

    @property
    def attached(self) -> bool:
        return self.attached_by is not None

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
        if not self.process.send_signal(sig):  # its end is on the way: nothing to record
            raise NotRunning(f"session {self.id} has ended")
        self.audit_signal(sig, reason=reason, sender=sender)

    def audit_signal(self, sig: int, *, reason: str, sender: str = "daemon") -> None:
        """Record a signal the daemon sent to the program (after sending it)."""
        if self.audit is not None:
            self.audit.signal(sig, reason=reason, sender=sender)

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

    # -- for the supervisor
    @property
    def stop_scope(self) -> trio.CancelScope:
        """The scope the supervisor waits in; :meth:`request_stop` cancels it."""
        return self._scope

    @property
    def stop_reason(self) -> p.EndReason:
        return self._stop_reason

    @property
    def stop_grace(self) -> float | None:
        """The grace a stop request asked for (None: not asked; the daemon is stopping)."""
        return self._stop_grace

    def end_with(self, reason: p.EndReason) -> None:
        """Say why the session ends, unless a stop request already did."""
        self._stop_reason = self._stop_reason or reason

    def set_exited(self) -> None:
        """The record is final: wake everyone waiting in :meth:`wait_exited`. What only a
        live session uses is let go: an ended one stays known (``ps``, ``inspect``,
        ``logs``) until it is pruned, and its process handle (socket, streams, locks, the
        launch request and report) and services would stay with it: about 4 of the 10 KiB
        an ended session held."""
        self._exited.set()
        self.process = None
        self.services = None
        called, self._on_exited = self._on_exited or [], None
        for fn in called:
            fn()

    def open_terminal(self, master: int, *, term: p.TermSize | None,
                      output: SessionOutput) -> None:
        """The daemon's side of the program's terminal, and where its output goes."""
        if term is not None:
            _set_winsize(master, term)
        self._pty_fd = master
        self._pty = trio.lowlevel.FdStream(master)
        self.output = output

    async def close_terminal(self) -> None:
        if self._pty is not None:
            await self._pty.aclose()
            self._pty = None

    async def pump_terminal(self, output: SessionOutput) -> None:
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


def _audit_event(event: object) -> AuditEvent | None:
    """Proxy and forwarder events in the audit model (unknown kinds are not recorded)."""
    # One import of the package, not a ``from`` import per name: this runs for every proxied
    # request, and each ``from`` import goes through importlib's Python code.
    from .. import proxy

    if isinstance(event, proxy.NetworkEvent):
        return AuditNetwork.from_proxy(event)
    if isinstance(event, proxy.CredentialInjected):
        return AuditCredentialInjected(route=event.route, credential=event.credential,
                                       source=event.source, into=event.into)
    if isinstance(event, InboundEvent):
        return AuditNetwork(mode="inbound", decision=event.decision,  # type: ignore[arg-type]
                            host=event.peer.rsplit(":", 1)[0], port=event.port,
                            bytes_in=event.bytes_in, bytes_out=event.bytes_out,
                            reason=event.reason or None)
    return None


def _count(metrics: Metrics, event: object) -> None:
    """Proxy and forwarder events in the metrics: a decision once per request (at its
    ``close``: a tunnel counts when it ends, with its byte totals), injections by route."""
    from .. import proxy

    if isinstance(event, proxy.NetworkEvent):
        if event.stage == "close":
            metrics.network_decision(mode=event.mode, decision=event.decision,
                                     reason=event.reason, bytes_in=event.bytes_in,
                                     bytes_out=event.bytes_out)
    elif isinstance(event, proxy.CredentialInjected):
        metrics.credential_injected(event.route)
    elif isinstance(event, InboundEvent):
        # Its reason is an errno's text: the label says only what happened.
        metrics.network_decision(
            mode="inbound", decision=event.decision,
            reason="forwarded" if event.decision == "allow" else "connect_failed",
            bytes_in=event.bytes_in, bytes_out=event.bytes_out)
