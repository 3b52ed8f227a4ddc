"""A session's audit record for its whole life: :class:`SessionAudit`.

In order: the file is created (and its signing key loaded) before anything else, so that a
launch that cannot be audited is refused; the first records (``session_started``, trust
decisions) are written and fsynced before the program exists; while it runs, every event is
masked (what the program holds never reaches the file) and appended, and a write that fails
stops the session; at the end come ``session_ended`` and the seal. A file whose writes failed
is sealed *as truncated* later, once writes work again (:func:`seal_truncated`); a file left
open by a daemon that died gets its ``daemon_lost`` ending at the next start
(:func:`close_lost`).
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import structlog
import trio

from .. import protocol as p
from ..audit import (
    AuditError,
    AuditKeyError,
    AuditWriteError,
    KeySigner,
    ResourceUsage,
    SessionEnded,
    SessionStarted,
    Signer,
    TrustFailed,
    TrustVerified,
)
from ..audit import Enforcement as AuditEnforcement
from ..audit import Event as AuditEvent
from ..audit import SignalSent as AuditSignalSent
from ..audit._fanout import AuditHub
from ..audit._mask import masked
from ..audit._syncer import AuditSyncer
from ..audit._writer import AuditWriter, Ledger, WriterStatistics
from ..sandbox import EnforcementReport
from ._settings import AuditSettings

if TYPE_CHECKING:
    from .._session_services import SessionServices
    from ._records import SessionRecord

#: Charges a session's audit size (bytes) to its user; returns what the user's files take.
Account = Callable[[int], int]

log = structlog.get_logger()

#: How long the end of a session may spend on its final records.
CLOSE_TIMEOUT: Final = 5.0
_END_REASONS: Final = {"stopped": "stopped", "client_gone": "stopped",
                       "daemon_shutdown": "stopped", "parent_ended": "stopped",
                       "error": "error", "oom": "oom",
                       "pids_limit": "pids_limit", "wall_clock": "wall_clock",
                       "audit_limit": "audit_limit"}


@final
class SessionAudit:
    """The audit file of one session. Create it with :meth:`create`."""

    def __init__(self, writer: AuditWriter, *, sign_key: str | None,
                 on_broken: Callable[[], None], max_bytes: int,
                 on_full: Callable[[], None], account: Account | None = None,
                 user_max_bytes: int = 0, timer: bool = True) -> None:
        self._writer = writer
        #: Its timed fsyncs need :meth:`run` (False: the daemon's syncer does them).
        self.timer = timer
        self.sign_key = sign_key
        self._on_broken = on_broken
        self._max_bytes = max_bytes
        #: Charges the file's size to its user's budget; returns what the user's files take.
        self._account = account
        self._user_max_bytes = user_max_bytes
        self._on_full: Callable[[], None] | None = on_full
        #: What the program holds, never to be written (see ``audit._mask``).
        self.hidden: dict[str, str] = {}

    @classmethod
    async def create(cls, state_dir: Path, session_id: str, *, settings: AuditSettings,
                     sign_key: str | None, hub: AuditHub | None, ledger: Ledger | None,
                     on_broken: Callable[[], None],
                     on_full: Callable[[], None],
                     first: Callable[[], None] | None = None,
                     account: Account | None = None,
                     syncer: AuditSyncer | None = None,
                     owner: int | None = None,
                     made: Callable[[], int | None] | None = None) -> SessionAudit | None:
        """The session's new audit file (None when ``[audit] enabled = false``: ``first`` is
        not run then). Raises AuditError (the launch is refused) if the file or the signing
        key is unavailable. ``first`` (blocking) runs in the file's worker thread, before it
        is made (``AuditWriter.create``); what it raises is raised as it is. ``account``
        charges the file's size to its user's budget at each write. With ``syncer`` (the
        daemon's) its timed fsyncs are batched with the other sessions' and :meth:`run` is
        not needed (``timer``); a failed one stops the session as a failed write does.
        ``owner`` (the system daemon's user) takes its own turns at the ledger. ``made``
        gives the descriptor of the session's directory and empty file made ahead
        (``_slot.NextSlot.claim``), or None: the file is made here. Followers (the hub)
        hear of none of its records before the program exists (:meth:`started`)."""
        if not settings.enabled:
            if sign_key is not None:
                raise AuditError("--audit-sign-key was given, but auditing is disabled",
                                 hint="[audit] enabled = false in nonod.toml")
            return None
        key_name = sign_key or settings.sign_key
        signer = await load_signer(key_name) if key_name is not None else None
        try:
            # The directory's fsync goes with the first records' (``open``): both are done
            # before the program may start, in one worker thread that overlaps the plan.
            writer = await AuditWriter.create(
                state_dir, session_id, hub=hub, ledger=ledger, signer=signer,
                fsync_interval=settings.fsync_interval, defer_dir_sync=True, first=first,
                syncer=syncer, made=made() if made is not None else None,
                hold_live=True)
        except AuditError as exc:
            raise AuditError(
                f"the session's audit record cannot be created: {exc.message}",
                hint="nothing runs unaudited: check the daemon's state directory "
                "(or set [audit] enabled = false)",
            ) from exc
        writer.owner = owner
        if syncer is not None:
            def sync_failed(exc: AuditWriteError) -> None:
                log.error("audit fsync failed; stopping the session", error=exc.message)
                on_broken()

            writer.on_sync_failed = sync_failed
        return cls(writer, sign_key=key_name, on_broken=on_broken,
                   max_bytes=settings.session_max_bytes, on_full=on_full, account=account,
                   user_max_bytes=settings.user_max_bytes, timer=syncer is None)

    # -- while the session lives
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Fsync on time until the file is closed (an fsync failure raises AuditWriteError,
        which ends the session)."""
        await self._writer.run(task_status=task_status)

    def write(self, event: AuditEvent) -> None:
        """Append ``event``, masked. A failed write stops the session (fail closed) and
        raises AuditWriteError. The write that takes the file to ``[audit]
        session_max_bytes`` (or its user's files to ``user_max_bytes``) stops the session too
        (``on_full``); what comes until it is gone is still written, so nothing it does is off
        the record."""
        try:
            self._writer.append(masked(event, self.hidden) if self.hidden else event)
        except AuditWriteError:
            log.error("audit write failed; stopping the session")
            self._on_broken()
            raise
        size = self._writer.size
        used = self._account(size) if self._account is not None else 0
        if self._on_full is None:
            return
        if size >= self._max_bytes:
            limit, name = self._max_bytes, "session_max_bytes"
        elif self._account is not None and used >= self._user_max_bytes:
            limit, name = self._user_max_bytes, "user_max_bytes"
        else:
            return
        on_full, self._on_full = self._on_full, None
        log.warning(f"audit reached [audit] {name}; stopping the session",
                    bytes=size, user_bytes=used, limit=limit)
        on_full()

    def statistics(self) -> WriterStatistics:
        return self._writer.statistics()

    def open(self, record: SessionRecord, services: SessionServices | None, *,
             beside: Callable[[], None] | None = None,
             argv: tuple[str, ...] | None = None) -> Callable[[], Awaitable[None]]:
        """The first records: who starts what, with which policy, and what trust
        verification found. Written now; their fsync starts in a worker thread, and the
        returned wait for it is the launch's gate (``Launcher.launch(gate=...)``): the
        program is not started before they are durable, and not at all if they cannot be
        (AuditError). The caller's task must await it, launch or not (see
        ``AuditWriter.sync_started``; ``beside``, blocking, runs at the same time, in the
        worker thread of the file's directory's fsync, and the gate waits for it too). The
        enforcement report (and the pid) follows once the program exists (:meth:`started`).
        ``argv``: the whole one, where the record keeps a prefix (``shorten_argv``)."""
        try:
            self._first_records(record, services, record.argv if argv is None else argv)
            synced = self._writer.sync_started(beside=beside)
        except AuditError as exc:
            raise _not_durable(exc) from exc

        async def durable() -> None:
            try:
                await synced()
            except AuditError as exc:
                raise _not_durable(exc) from exc

        return durable

    def _first_records(self, record: SessionRecord, services: SessionServices | None,
                       argv: tuple[str, ...]) -> None:
        writer = self._writer
        writer.append(SessionStarted(
            session=record.id, argv=argv, cwd=record.cwd, uid=record.uid,
            gid=record.gid, name=record.name, profile=record.profile,
            policy_digest=record.policy_digest,
            secret_env=services.secret_env if services is not None else (),
            weakened=record.weakened, secrets_bound=record.secrets_bound))
        if services is None:
            return
        for warning in services.trust_warnings:
            writer.append(TrustFailed(path="", reason=warning, code="warning"))
        for outcome in services.trust:
            if outcome.outcome == "verified":
                writer.append(TrustVerified(path=outcome.path, sha256=outcome.sha256,
                                            signer=""))
            else:
                writer.append(TrustFailed(path=outcome.path, reason=outcome.reason,
                                          code=outcome.outcome))

    def started(self, report: EnforcementReport, pid: int, *,
                then: Callable[[], None] | None = None) -> None:
        """The program exists: what each enforcement layer did, and its pid. ``then``
        (blocking, must not raise) runs in the worker thread of that record's fsync (the
        daemon's timed batch, within ``fsync_interval``: no hop of its own), after it; not
        at all when the session is sealed first (``AuditWriter.after_next_sync``).

        Only now do followers (the hub) get the first records, then this one: a launch
        refused after its file was made (dropped at its gate, refused by the engine)
        announced nothing (``AuditWriter.announce``)."""
        if then is not None:
            self._writer.after_next_sync(then)
        self._writer.announce()
        self._writer.append(AuditEnforcement.from_report(report, pid=pid))

    def signal(self, sig: int, *, reason: str, sender: str = "daemon") -> None:
        """A signal the daemon sent to the program (after sending it)."""
        try:
            name = _signal.Signals(sig).name
        except ValueError:
            name = ""
        self._writer.append(AuditSignalSent(signal=sig, name=name, reason=reason,
                                            sender=sender))

    # -- the end
    async def close(self, record: SessionRecord, *,
                    then: Callable[[], None] | None = None) -> bool:
        """``session_ended`` and the seal, bounded in time. Returns False when the file could
        not be sealed because writes failed (then :func:`seal_truncated` seals it later).
        ``then`` (blocking, must not raise) runs once the seal is durable, in the seal's
        last worker thread (``AuditWriter.seal``); not at all when sealing failed."""
        writer = self._writer
        sealed = not writer.broken
        reason = _END_REASONS.get(record.reason, "exited")
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                writer.append(SessionEnded(
                    reason=reason,  # type: ignore[arg-type]
                    exit_code=None if record.signal is not None else record.exit_code,
                    signal=record.signal, usage=_usage(record.usage)))
                await writer.seal(then=then)
            except AuditError:
                log.exception("audit stream could not be sealed; sealing it as truncated "
                              "once writes work again")
                sealed = False
            finally:
                await writer.aclose()
        return sealed

    async def aclose(self) -> None:
        """Close without sealing (a launch that failed)."""
        await self._writer.aclose()


def _not_durable(exc: AuditError) -> AuditError:
    return AuditError(
        f"the session's first audit record could not be made durable ({exc.message}); "
        "the program was not started",
        hint="nothing runs unaudited: free space in the daemon's state directory")


def _usage(usage: p.Usage | None) -> ResourceUsage | None:
    """The cgroup's totals, as the audit event carries them."""
    if usage is None:
        return None
    return ResourceUsage(
        user_cpu_ms=usage.cpu_user_ns / 1e6, system_cpu_ms=usage.cpu_system_ns / 1e6,
        cpu_ms=usage.cpu_ns / 1e6,
        memory_peak_bytes=usage.memory_peak_bytes, pids_peak=usage.pids_peak,
        io_read_bytes=usage.io_read_bytes, io_write_bytes=usage.io_write_bytes,
        oom_kills=usage.oom_kills, pids_limit_hits=usage.pids_limit_hits)


async def load_signer(name: str) -> KeySigner:
    """The trust key store's key ``name`` as an audit signer, or ``AuditKeyError``."""
    from .. import trust

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


async def close_lost(state_dir: Path, session_id: str, *, sign_key: str | None,
                     hub: AuditHub | None, ledger: Ledger | None) -> None:
    """Append session_ended (``daemon_lost``) and a seal to the file of a session that was
    running when the previous daemon died. Failures are logged."""
    from ..audit import AuditNotFound
    from ..audit._writer import append_daemon_lost

    signer: Signer | None = None
    if sign_key is not None:
        try:
            signer = await load_signer(sign_key)
        except AuditError as exc:
            log.error("a lost session's audit file is sealed unsigned", session=session_id,
                      error=exc.message)
    try:
        await append_daemon_lost(state_dir, session_id, hub=hub, ledger=ledger, signer=signer)
    except AuditNotFound:
        pass  # auditing was off, or the daemon died before the file existed
    except AuditError:
        log.exception("could not close a lost session's audit file", session=session_id)


async def seal_truncated(state_dir: Path, session_id: str, *, hub: AuditHub | None,
                         ledger: Ledger | None) -> bool:
    """Seal the file of a session whose audit writes failed (a full disk): ``session_ended``
    (``error``, saying records may be missing) and a seal, so that ``audit verify`` reports a
    complete file that says what happened. False if writes still fail."""
    from ..audit import append_closing

    try:
        await append_closing(
            state_dir, session_id, reason="error", ledger=ledger, hub=hub,
            detail="audit file truncated: a write failed while the session ran (full "
            "disk?), so the session was stopped and records may be missing before "
            "this one; sealed when writes worked again")
    except AuditError as exc:
        log.info("a truncated audit file cannot be sealed yet", session=session_id,
                 error=exc.message)
        return False
    return True
