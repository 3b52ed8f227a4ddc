"""The session registry: every sandboxed program the daemon runs, live or ended.

Each session is one task tree. :meth:`Registry.launch` calls ``nursery.start(_run_session)``:
the launch happens before ``started()``, so a refused launch comes out of ``launch()`` as a
``NonoError`` in the requesting connection, and the registry never hears of it. After
``started()`` the session root owns everything: a watcher waiting for the program's exit, the
proxy and forwards, the PTY pump, the output-log writer and the audit writer. It is the only
place (with the per-connection handler) that catches ``Exception``: a failure there ends that
session, never the daemon.

Stopping is cancellation: :meth:`Session.request_stop` cancels the session's scope and the
cleanup runs shielded and bounded: SIGTERM, the grace period, SIGKILL, wait (``_supervise``),
then the record (here).

A record still marked running when the daemon starts belongs to a program that died with the
previous daemon (the engine ties every session to the daemon's life with
``PR_SET_PDEATHSIG``): it is recorded as ended, reason ``daemon_lost``.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import secrets
import shutil
import signal as _signal
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import msgspec
import structlog
import trio
from structlog.contextvars import bound_contextvars

from .. import _session_services
from .._secretfiles import (
    DaemonSecrets,
    SecretFileLog,
)
from .._soon import Started
from ..approvals import ApprovalQueue, Pending, SessionAsker, SessionFacts
from ..audit import AuditError, redact_argv
from ..audit._fanout import AuditHub
from ..audit._kernel import FsDeniedMonitor
from ..audit._syncer import AuditSyncer
from ..audit._writer import Ledger
from ..credentials._hosts import SecretHosts
from ..errors import NonoError
from ._audit import CLOSE_TIMEOUT, Account, SessionAudit, close_lost, seal_truncated
from ._audit_budget import AuditBudget, kept_bytes
from ._contracts import Caller, GetLauncher, PreparedTools, Process, SessionPlan, ToolHook
from ._errors import (
    NameInvalid,
    NameTaken,
    RootRefused,
    SessionAmbiguous,
    SessionLimit,
    SessionNotFound,
)
from ._events import ApprovalNotice, EventFeed, LifecycleEvent
from ._limits import SessionCgroups, end_reason
from ._oomwatch import OomWatches
from ._records import (
    SessionRecord,
    enforcement_of,
    forget_session,
    last_alive,
    make_private_dirs,
    now,
    read_records,
    record_encoder,
    touch_heartbeat,
    write_record,
)
from ._removals import GroupRemovals
from ._session import Session
from ._settings import AuditSettings, SessionLimits
from ._slot import NextSlot, clear_slot
from ._start import ProgramStarter, SecretMasks
from ._supervise import KILL_TIMEOUT, supervise

if TYPE_CHECKING:
    from .._metrics import Metrics
    from ..policy import Denial, ResolvedPolicy

log = structlog.get_logger()

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
#: What a session id looks like (``_new_id``): no name may, or it would be another session's
#: id to whoever may see both (root, on the system daemon).
_ID_SHAPE = re.compile(r"[0-9a-f]{8}")
#: Live sessions a user of the system daemon may still start once ``max_live`` are live.
RESERVED_LIVE: Final = 4
#: How long after a session's end its log line and event wait for its replies (seconds).
AFTER_EXITED: Final = 0.002


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
        network: Callable[[], _session_services.NetworkSettings] | None = None,
        audit: Callable[[], AuditSettings] | None = None,
        audit_hub: AuditHub | None = None,
        audit_ledger: Ledger | None = None,
        fs_denied: FsDeniedMonitor | None = None,
        daemon_secrets: DaemonSecrets | None = None,
        secret_log: SecretFileLog | None = None,
        metrics: Metrics | None = None,
        retain: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._metrics = metrics
        #: Sessions retention must keep besides the live ones (not yet shipped: the exporter).
        self._retain = retain
        self._audit_settings = audit or AuditSettings
        self._network = network or _session_services.NetworkSettings
        #: Every file a secret came from (masked in every session); the trust service adds
        #: the file keys it uses.
        self.secret_log = secret_log or SecretFileLog(state_dir)
        #: Where each user's secrets have been sent (``nonoctl secret hosts``).
        self.secret_hosts = SecretHosts(state_dir)
        #: Ended sessions' cgroups (and refused launches'), removed in batches
        #: (``_removals``).
        self._removals = GroupRemovals(nursery)
        self._starter = ProgramStarter(
            get_launcher=get_launcher, limits=limits, system=system,
            network=self._network, audit=self._audit_settings,
            daemon_secrets=daemon_secrets or DaemonSecrets(config_file=None,
                                                           state_dir=str(state_dir)),
            secret_log=self.secret_log, fs_denied=fs_denied, metrics=metrics,
            secret_hosts=self.secret_hosts, removals=self._removals,
        )
        self._audit_hub = audit_hub
        self._audit_ledger = audit_ledger
        self._nursery = nursery
        #: The live sessions' timed audit fsyncs, batched (``nonod.audit._syncer``).
        self._audit_syncer = AuditSyncer(nursery)
        #: Every live session's OOM watch, in one task (``_oomwatch``).
        self._oom = OomWatches(nursery)
        self._state_dir = state_dir
        self._sessions_dir = state_dir / "sessions"
        #: The next session's directory and audit file, made ahead (``_slot``).
        self._slot = NextSlot(self._sessions_dir)
        self._limits = limits
        self._system = system
        self._sessions: dict[str, Session] = {}
        #: The live ones (starting or running), and their names by owner: a launch's checks
        #: look these up instead of passing over every session known (``_went_live``).
        self._live: dict[str, Session] = {}
        self._live_names: dict[tuple[int, str], str] = {}
        self._live_per_uid: dict[int, int] = {}
        #: Each user's bytes in session directories (bounded by ``[audit] user_max_bytes``
        #: on the system daemon).
        self._audit_budget = AuditBudget()
        #: Ended sessions whose audit file waits to be sealed as truncated (``reseal_truncated``
        #: looks at these only, not at every session known).
        self._truncated: set[str] = set()
        self._feeds: list[EventFeed] = []
        #: Every session's pending approvals (``nonoctl approvals``).
        self.approvals = ApprovalQueue(notify=self._emit_approval)
        #: Runs the tools of ``command_policies`` in child sessions (``nonod.toolsandbox``);
        #: the daemon sets it.
        self.tools: ToolHook | None = None

    # -- startup
    async def load(self) -> list[str]:
        """Create the state directory and read earlier records; returns ids marked lost."""
        await trio.to_thread.run_sync(make_private_dirs, self._state_dir, self._sessions_dir)
        await trio.to_thread.run_sync(clear_slot, self._sessions_dir)  # an earlier daemon's
        records = await trio.to_thread.run_sync(read_records, self._sessions_dir)
        if self._limits().cgroups:
            self._starter.cgroups = await trio.to_thread.run_sync(SessionCgroups.open,
                                                                  self._state_dir)
        else:
            self._starter.cgroups = SessionCgroups(None, "cgroups are turned off ([limits] "
                                                   "cgroups = false in nonod.toml)")
        lost: list[str] = []
        for record in records:
            if record.state != "exited":
                record.state = "exited"
                record.reason = "daemon_lost"
                record.signal = _signal.SIGKILL
                record.exit_code = None
                record.ended_at = await trio.to_thread.run_sync(
                    last_alive, self._state_dir, record, self._sessions_dir / record.id)
                lost.append(record.id)
                log.warning("session was running when the daemon died; it died with it",
                            session=record.id, name=record.name, pid=record.pid)
            session = Session(record, directory=self._sessions_dir / record.id)
            self._sessions[record.id] = session
            if record.audit_truncated:
                self._truncated.add(record.id)
            if record.id in lost:
                await self._save(session)
                await close_lost(self._state_dir, record.id, sign_key=record.audit_sign_key,
                                 hub=self._audit_hub, ledger=self._audit_ledger)
        if self._system:
            owners = {record.id: record.owner_uid for record in records}
            await trio.to_thread.run_sync(self._audit_budget.load, self._sessions_dir, owners)
        return lost

    async def heartbeat(self) -> None:
        """Say that this daemon (and so its sessions) is alive now: a daemon_lost session's end
        is its last heartbeat, not the next daemon's start (``_records.last_alive``)."""
        try:
            await trio.to_thread.run_sync(touch_heartbeat, self._state_dir)
        except OSError as exc:
            log.warning("cannot touch the heartbeat file", error=exc.strerror or str(exc))

    async def reseal_truncated(self) -> list[str]:
        """Seal the audit files whose writes failed (a full disk) as truncated, now that
        writes may work (see ``_audit.seal_truncated``). Returns the ids sealed; the others
        wait for the next try (each session end, and the daemon's timer)."""
        done: list[str] = []
        for session_id in sorted(self._truncated):
            session = self._sessions.get(session_id)
            if session is None:  # forgotten meanwhile (retention): nothing left to seal
                self._truncated.discard(session_id)
                continue
            record = session.record
            if not record.audit_truncated or session.live:
                continue
            if await seal_truncated(self._state_dir, record.id, hub=self._audit_hub,
                                    ledger=self._audit_ledger):
                record.audit_truncated = False
                self._truncated.discard(session_id)
                await self._save(session)
                done.append(record.id)
        if done:
            log.warning("sealed truncated audit files", sessions=done)
        return done

    # -- queries
    def statistics(self, caller: Caller | None = None) -> tuple[int, int]:
        """``(live sessions, known sessions)``: all of them, or those ``caller`` may see (a
        system daemon's user learns nothing of other users' sessions, not even how many)."""
        seen = [s for s in self._sessions.values()
                if caller is None or caller.may_see(s.record.owner_uid)]
        return sum(1 for s in seen if s.live), len(seen)

    def state_counts(self) -> dict[str, int]:
        """How many sessions are in each state (for the metrics)."""
        counts: dict[str, int] = {}
        for session in self._sessions.values():
            counts[session.record.state] = counts.get(session.record.state, 0) + 1
        return counts

    def audit_backlog(self) -> int:
        """Audit records live sessions wrote that are not fsynced yet (for the metrics)."""
        return sum(s.audit.statistics().pending for s in self._sessions.values()
                   if s.live and s.audit is not None)

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

    def limits(self) -> SessionLimits:
        """The ``[sessions]`` settings in force now."""
        return self._limits()

    def audit_settings(self) -> AuditSettings:
        return self._audit_settings()

    def audit_path(self, session: Session) -> Path:
        from ..audit import AUDIT_FILE

        return session.directory / AUDIT_FILE

    def find(self, ref: str, caller: Caller) -> Session:
        """A session by id, name or unique id prefix, among those ``caller`` may see.

        A caller who sees other users' sessions (root) gets ``session.ambiguous`` for a name
        or prefix that matches sessions of more than one user: each user names its own
        sessions, so one user's name must not pick another user's session for root (a
        session named like another's id prefix, two users' ``web``). No name has an id's
        shape, so an id is always one session."""
        exact = self._sessions.get(ref)
        if exact is not None and caller.may_see(exact.record.owner_uid):
            return exact  # by id: one lookup, not a sorted list of every session
        mine = self.visible(caller, include_exited=True)
        if caller.is_root:
            self._one_owner(ref, mine)
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

    @staticmethod
    def _one_owner(ref: str, seen: list[Session]) -> None:
        """Refuse ``ref`` when, as a name or an id prefix, it matches sessions of several
        users."""
        matches = [s for s in seen
                   if s.name == ref or (len(ref) >= 2 and s.id.startswith(ref))]
        if len({s.record.owner_uid for s in matches}) > 1:
            ids = ", ".join(f"{s.id} (uid {s.record.owner_uid})" for s in matches[:8])
            raise SessionAmbiguous(
                f"{ref!r} matches sessions of several users: {ids}",
                hint="give the session's full id",
            )

    # -- events
    def subscribe_events(self, caller: Caller, session_id: str | None) -> EventFeed:
        # Feeds whose readers left go now, not at the next event: on a quiet daemon a user's
        # connections, each subscribing and closing, would otherwise pile them up unbounded.
        feed = EventFeed(caller, session_id)
        self._feeds = [f for f in self._feeds if f.open]
        self._feeds.append(feed)
        return feed

    def _emit(self, kind: str, session: Session) -> None:
        event = LifecycleEvent(kind=kind, record=msgspec.structs.replace(session.record))
        self._feeds = [f for f in self._feeds if f._offer(event)]

    def _emit_approval(self, pending: Pending, kind: str) -> None:
        notice = ApprovalNotice(kind=kind, approval=pending)
        self._feeds = [f for f in self._feeds if f._offer(notice)]

    def _asker(self, session: Session, proc: Process) -> SessionAsker | None:
        """The session's approval asker, when its profile asks about unlisted hosts."""
        approval = session.policy_approval
        if approval is None:
            return None
        record = session.record
        keys = session.services.approval_keys if session.services is not None else {}
        network = self._network()
        webhook = None
        if keys:  # (the webhook client loads ssl: only for a profile with webhook backends)
            from ..approvals import WebhookCaller

            webhook = WebhookCaller(keys=keys, extra_ca_file=network.extra_ca_file,
                                    pins=network.resolve)
        return SessionAsker(
            queue=self.approvals, policy=approval, timeout=self._limits().approval_timeout,
            facts=SessionFacts(session_id=record.id, name=record.name,
                               owner_uid=record.owner_uid, pid=proc.pid, command=record.argv,
                               profile=record.profile,
                               hidden=tuple(session.services.hidden)
                               if session.services is not None else ()),
            record=session.write_event, webhook=webhook)

    # -- launching
    def secret_masks(self, owner: Caller, audit_sign_key: str | None
                     ) -> Callable[[ResolvedPolicy, tuple[Denial, ...] | None], SecretMasks]:
        """Blocking, for a launch's resolution thread (``CallerReads(masks=...)``): the
        secret masks of ``owner``'s launch of a policy, made ahead (``ProgramStarter``)."""
        return functools.partial(self._starter.secret_masks, owner_uid=owner.uid,
                                 audit_sign_key=audit_sign_key)

    def _went_live(self, session: Session) -> None:
        self._live[session.id] = session
        uid = session.record.owner_uid
        self._live_names[uid, session.name] = session.id
        self._live_per_uid[uid] = self._live_per_uid.get(uid, 0) + 1

    def _went_exited(self, session: Session) -> None:
        """``session``'s record says ``exited`` from now on."""
        if self._live.pop(session.id, None) is None:
            return
        uid = session.record.owner_uid
        if self._live_names.get((uid, session.name)) == session.id:
            del self._live_names[uid, session.name]
        left = self._live_per_uid[uid] - 1
        if left:
            self._live_per_uid[uid] = left
        else:
            del self._live_per_uid[uid]

    def _check_launch(self, plan: SessionPlan) -> None:
        """Refuse the launch if a limit or a name says so (lookups: no pass over every
        session known, which with a thousand live is measurable)."""
        limits = self._limits()
        live = len(self._live)
        mine = self._live_per_uid.get(plan.owner.uid, 0)
        if live >= limits.max_live and not (
                # A few users at their own caps fill max_live together: on the system daemon
                # a user with fewer than RESERVED_LIVE sessions still launches, up to twice
                # max_live in all, so that they lock out no other user.
                self._system and mine < RESERVED_LIVE and live < 2 * limits.max_live):
            raise SessionLimit(
                f"{live} sessions are live, the limit is {limits.max_live}",
                hint="raise [sessions] max_live in nonod.toml, or stop sessions",
            )
        if self._system:
            if mine >= (per_uid := limits.live_per_uid()):
                raise SessionLimit(
                    f"this user has {mine} live sessions, the limit per user is {per_uid}",
                    hint="stop some of your sessions, or raise [sessions] max_live_per_uid",
                )
            used = self._audit_budget.used(plan.owner.uid)
            if used >= (budget := self._audit_settings().user_max_bytes):
                raise SessionLimit(
                    f"this user's sessions keep {used} bytes (audit and output), the limit "
                    f"per user is {budget} ([audit] user_max_bytes)",
                    hint="prune ended sessions (their output goes; audit files stay until "
                    "[audit] keep_days or keep_sessions remove them), or ask the "
                    "administrator to raise [audit] user_max_bytes",
                )
        if plan.name is not None and _ID_SHAPE.fullmatch(plan.name):
            raise NameInvalid(
                f"{plan.name!r} looks like a session id; a name cannot",
                hint="choose a name that is not 8 hexadecimal digits")
        holder = (self._live_names.get((plan.owner.uid, plan.name))
                  if plan.name is not None else None)
        if holder is not None:
            raise NameTaken(
                f"a live session is already named {plan.name!r} ({holder})",
                hint="choose another --name, or stop that session first",
            )
        runs_as = plan.request.uid if plan.request.uid is not None else os.geteuid()
        if self._system and runs_as == 0 and not (limits.allow_root
                                                  and plan.policy.allow_root):
            raise RootRefused(
                "the system daemon does not run sessions as root",
                hint="run nonoctl as the user the program should run as; root sessions "
                "need [sessions] allow_root = true and a profile that allows root",
            )

    def _new_id(self) -> str:
        """An id no session had: not live or remembered, no directory, and (since audit
        retention removes directories but the ledger keeps their lines) not in the ledger."""
        ledger = self._audit_ledger
        while True:
            candidate = secrets.token_hex(4)
            if (candidate not in self._sessions and not (self._sessions_dir / candidate).exists()
                    and (ledger is None or candidate not in ledger)):
                return candidate

    def _new_name(self, plan: SessionPlan) -> str:
        if plan.name is not None:
            return plan.name
        base = plan.profile or (Path(plan.request.argv[0]).name if plan.request.argv else "")
        base = _NAME_CHARS.sub("-", Path(base).name.removesuffix(".json")).strip("-.")[:40]
        base = base or "session"
        if not base[0].isalnum():
            base = "s" + base
        while True:
            candidate = f"{base}-{secrets.token_hex(2)}"
            if (plan.owner.uid, candidate) not in self._live_names:
                return candidate

    async def launch(self, plan: SessionPlan, *, replied: trio.Event | None = None
                     ) -> Session:
        """Start a session; raise ``NonoError`` (nothing is recorded) if it cannot start.

        ``replied``: set by the caller once it has answered the launch (always, also when it
        fails to): the session's OOM watch, its "started" log line and event wait for it, so
        that they do not run before the reply (this session's task runs on after the start,
        before the caller's)."""
        if self._metrics is None:
            return await self._launch(plan, replied)
        began = time.perf_counter()
        try:
            session = await self._launch(plan, replied)
        except Exception as exc:
            self.launch_refused(exc)
            raise
        self._metrics.launch_started(time.perf_counter() - began)
        return session

    def launch_refused(self, exc: Exception) -> None:
        """Count a refused launch by its error code (also those refused before the registry
        saw them, e.g. a profile that does not resolve)."""
        if self._metrics is not None:
            self._metrics.launch_refused(exc.code if isinstance(exc, NonoError) else "internal")

    async def _launch(self, plan: SessionPlan, replied: trio.Event | None) -> Session:
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
            # One redaction rule for every file the daemon writes (record, audit, replies).
            argv=redact_argv(request.argv),
            cwd=request.cwd,
            detached=plan.detach,
            tty=plan.stdio == "pty",
            started_at=now(),
            policy_digest=plan.policy.digest(),
            daemon_pid=os.getpid(),
            parent=plan.parent,
        )
        session = Session(record, directory=self._sessions_dir / session_id,
                          metrics=self._metrics)
        session.policy_approval = plan.policy.network.approval
        # Registered while starting, so the name is reserved and `ps` shows it.
        self._sessions[session_id] = session
        self._went_live(session)
        try:
            started: Session = await self._nursery.start(self._run_session, session, plan,
                                                         replied)
        except BaseException:
            del self._sessions[session_id]
            record.state = "exited"
            self._went_exited(session)
            session.set_exited()  # nobody may wait for it (shutdown lists starting sessions)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, session.directory, True)
            raise
        return started

    async def _run_session(
        self,
        session: Session,
        plan: SessionPlan,
        replied: trio.Event | None = None,
        *,
        task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with bound_contextvars(session=session.id):
            # Fail closed: no audit record, no program (unless auditing is off). The starter
            # creates it while it prepares the launch, and fsyncs its first records first.
            tools: PreparedTools | None = None
            try:
                if self.tools is not None and plan.policy.tools:
                    tools = self.tools.prepare(session, plan)
                    plan = tools.plan
                agent = self._sessions.get(plan.parent) if plan.parent else None
                settings = self._audit_settings()
                proc = await self._starter.start(
                    session, plan,
                    create_audit=lambda first: self._create_audit(session, plan, first),
                    parent_group=agent.cgroup if agent is not None else None,
                    record_writer=lambda: self._record_writer(session),
                    # No worker thread for the file (a slot) or a signing key: it does
                    # not wait, and needs no task of its own.
                    audit_waits=not (settings.enabled and self._slot.ready()
                                     and plan.audit_sign_key is None
                                     and settings.sign_key is None))
            except BaseException:
                if tools is not None:
                    tools.close()
                if session.audit is not None:
                    with trio.CancelScope(shield=True):
                        await session.audit.aclose()
                    session.audit = None
                raise
            session.process = proc
            proc.on_guard = session.record_guard
            record = session.record
            record.state = "running"
            record.pid = proc.pid
            record.enforcement = enforcement_of(proc.enforcement)
            # On disk before anyone hears of it: a daemon killed right after the reply must
            # still find the record at its next start. Audited, it is there already (state
            # `starting`, written beside the gate's fsync: ``record_writer``), and this
            # one (running: its pid and enforcement) is written in the worker thread of the
            # enforcement record's fsync (the daemon's timed batch, within fsync_interval: no
            # hop of its own); a session that ends before gets its final record instead. Not
            # audited, it is written in a worker thread now and awaited below.
            saving = self._save_started(session) if session.audit is None else None
            # Shielded: the program already runs.
            with trio.CancelScope(shield=True):
                try:
                    if session.audit is not None:
                        session.audit.started(proc.enforcement, proc.pid,
                                              then=self._record_writer(session))
                except AuditError:
                    # Its record could not be started (disk full): it does not run unaudited.
                    proc.kill()
                    with trio.move_on_after(KILL_TIMEOUT):
                        await proc.wait_exited()
                    # Its fs_denied watch, and its uid's audit rules (``_finish`` is not run).
                    await self._starter.release_started(session)()
                    if session.audit is not None:
                        await session.audit.aclose()
                        session.audit = None
                    if tools is not None:
                        tools.close()
                    raise
                if saving is not None:
                    await saving()
            task_status.started(session)
            if self.secret_hosts.confirm_due:
                # The secrets it bound are kept: their file's pending mark goes, after the
                # launch's reply, in a worker thread (``credentials._hosts``).
                self._nursery.start_soon(trio.to_thread.run_sync,
                                         self.secret_hosts.save_confirmed)
            if tools is not None:
                self._nursery.start_soon(tools.serve, session)
            try:
                await supervise(session, proc, asker=self._asker(session, proc),
                                on_started=lambda: self._started(session),
                                on_exit_read=lambda: self._exit_read(session),
                                replied=replied,
                                shutdown_grace=lambda: self._limits().shutdown_grace,
                                stop_grace=lambda: self._limits().stop_grace, oom=self._oom)
            except Exception:
                # The session root: whatever went wrong here ends this session only.
                log.exception("session supervision failed; the program was killed")
                session.end_with("error")
            finally:
                with trio.CancelScope(shield=True):
                    if tools is not None:
                        await tools.end()  # its tool sessions end before its record closes
                    await self._finish(session)

    def _started(self, session: Session) -> None:
        """Its tasks are up: say so (the log line waits until here, off the launch reply's
        path: the supervision's first steps let the reply go out)."""
        record = session.record
        log.info("session started", name=record.name, pid=record.pid, argv0=record.argv[:1],
                 profile=record.profile, uid=record.uid,
                 enforcement=record.enforcement.summary if record.enforcement else None)
        self._emit("started", session)

    def _exit_read(self, session: Session) -> None:
        """Its program's exit status is read: the flush of its last filesystem denials goes
        out now (its marker's round trip through the kernel overlaps the supervision's
        unwinding and the usage read), not once the session's end begins. Every denial of
        its program was made before that exit, so the marker follows them either way."""
        if session.denials_flushed is None:
            session.denials_flushed = self._starter.release_started(session)

    def launch_answered(self) -> None:
        """A launch was answered (detached: ``Launched``; attached: ``Exited``): the next
        launch's directory and audit file are made now (``_slot``). Not in the session's
        start, which runs before the ``Launched`` reply; not while an attached client's
        short program runs either: the thread competed with the session's end for the CPU
        (interleaved against refilling at ``Launched``: p50 0.916 and 0.936)."""
        if self._audit_settings().enabled:
            self._slot.refill()

    async def _finish(self, session: Session) -> None:
        record = session.record
        # The state stays "running" until the audit record is final: whoever sees "exited"
        # (ps, inspect, events, wait) can verify a sealed file at once.
        record.ended_at = now()
        group, session.cgroup = session.cgroup, None
        # Its last filesystem denials are flushed from the kernel while the usage is read
        # (begun when its exit was read, if it was: ``_exit_read``).
        released = session.denials_flushed or self._starter.release_started(session)
        session.denials_flushed = None
        if group is not None:
            record.usage = group.usage()  # the totals: its processes died with its init
        record.reason = end_reason(session.stop_reason, record.usage, record.exit_code)
        await session.close_terminal()
        if session.output is not None:
            session.output.end()
        await released()
        saved = await self._close_audit(session)
        record.state = "exited"
        self._went_exited(session)
        if not saved:
            await self._save(session)
        if self._system:  # the seal, the bundle, the output log and the record count too
            await self._charge_directory(session)
        await self.reseal_truncated()
        # Before anyone hears the session ended: who then lists the sessions sees the result.
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.apply_retention()
        session.set_exited()
        if group is not None:
            # Nothing waits for what follows: the replies to whoever waited for the end go
            # out first. (The group is removed later, with those of the sessions that end
            # meanwhile: ``_removals``.)
            await trio.sleep(AFTER_EXITED)
        if self._metrics is not None:
            self._metrics.session_ended(record.reason)
        log.info("session ended", name=record.name, exit_code=record.exit_code,
                 signal=record.signal, reason=record.reason)
        self._emit("exited", session)
        if group is not None:
            self._removals.add(group, close=tuple(self._oom.closing()))

    async def apply_retention(self) -> list[str]:
        """Remove sealed sessions beyond ``[audit] keep_days``/``keep_sessions`` (never a live
        one); returns their ids. Failures are logged: retention never stops the daemon."""
        from ..audit import prune_sessions

        settings = self._audit_settings()
        if settings.keep_days is None and settings.keep_sessions is None:
            return []
        max_age = dt.timedelta(days=settings.keep_days) if settings.keep_days else None
        keep = list(self._live)
        retain = self._retain

        def prune() -> list[str]:
            keep_all = {*keep, *(retain() if retain is not None else ())}
            removed = prune_sessions(self._state_dir, max_age=max_age,
                                     max_count=settings.keep_sessions, keep=keep_all,
                                     per_uid=self._system)  # one user's churn, its own
            return [summary.session for summary in removed]

        try:
            removed = await trio.to_thread.run_sync(prune)
        except AuditError:
            log.exception("audit retention failed")
            return []
        for session_id in removed:
            self._audit_budget.release(session_id)
            gone = self._sessions.get(session_id)
            if gone is not None and not gone.live:
                del self._sessions[session_id]
        if removed:
            log.info("audit retention removed sessions", sessions=removed)
        return removed

    async def _create_audit(self, session: Session, plan: SessionPlan,
                            first: Callable[[], None] | None) -> bool:
        """The session's audit record, before anything else: failing refuses the launch.
        Nothing runs unaudited unless ``[audit] enabled = false``. ``first`` (blocking) runs
        in the file's worker thread, before it is made; False: auditing is off, ``first``
        was not run."""
        audit = await SessionAudit.create(
            self._state_dir, session.id, settings=self._audit_settings(),
            sign_key=plan.audit_sign_key, hub=self._audit_hub, ledger=self._audit_ledger,
            on_broken=lambda: session.request_stop(reason="error", grace=0),
            on_full=lambda: session.request_stop(reason="audit_limit", grace=0),
            first=first, account=self._account(session), syncer=self._audit_syncer,
            owner=session.record.owner_uid if self._system else None,
            made=lambda: self._slot.claim(session.directory))
        session.audit = audit
        if audit is None:
            return False
        session.record.audit_sign_key = audit.sign_key
        return True

    def _account(self, session: Session) -> Account | None:
        if not self._system:
            return None
        budget, uid = self._audit_budget, session.record.owner_uid
        return lambda size: budget.charge(session.id, uid, size)

    async def _charge_directory(self, session: Session) -> None:
        """Charge what the session's directory keeps (audit, bundle, output log, record)."""
        size = await trio.to_thread.run_sync(kept_bytes, session.directory)
        self._audit_budget.charge(session.id, session.record.owner_uid, size)

    async def _close_audit(self, session: Session) -> bool:
        """Seal the session's audit file; True if its final record (state ``exited``) was
        written with the seal (in the seal's last worker thread: no hop of its own; a
        failed write is logged, as ``_save`` does)."""
        audit, session.audit = session.audit, None
        if audit is None:
            return False
        # What the record will say once the seal is durable; the session itself stays
        # "running" until then (``_finish``).
        final = record_encoder.encode(msgspec.structs.replace(session.record, state="exited"))
        written: list[OSError | None] = []

        def write_final() -> None:
            try:
                write_record(session.directory, final)
                written.append(None)
            except OSError as exc:
                written.append(exc)

        if not await audit.close(session.record, then=write_final):
            session.record.audit_truncated = True
            self._truncated.add(session.id)
            return False
        if written and written[0] is not None:
            log.error("cannot persist session record", path=str(session.directory),
                      error=written[0].strerror or str(written[0]))
        return bool(written)

    async def _save(self, session: Session) -> None:
        await self._save_started(session)()

    def _save_started(self, session: Session) -> Callable[[], Awaitable[None]]:
        """The session's record as it is now, written in a worker thread from now on; the
        wait for it (a failed write is logged, not raised)."""
        return Started(self._record_writer(session),
                       name=f"session record {session.id}").result

    @staticmethod
    def _record_writer(session: Session) -> Callable[[], None]:
        """The session's record as it is now, as blocking work for a worker thread (a
        failed write is logged there, not raised)."""
        data = record_encoder.encode(session.record)
        directory, session_id = session.directory, session.id

        def write() -> None:
            try:
                write_record(directory, data)
            except OSError as exc:
                log.error("cannot persist session record", session=session_id,
                          path=str(directory), error=exc.strerror or str(exc))

        return write

    # -- housekeeping
    async def prune(self, caller: Caller) -> list[str]:
        """Forget the caller's ended sessions: their records and output go, their audit files
        stay (only audit retention, ``[audit] keep_*``, removes those: a user must not be able
        to erase the record of what their sessions did)."""
        gone = [s for s in self.visible(caller, include_exited=True) if not s.live]
        for session in gone:
            del self._sessions[session.id]
            await trio.to_thread.run_sync(forget_session, session.directory)
            if self._system:  # its audit files stay, and stay charged
                await self._charge_directory(session)
        return [s.id for s in gone]

    def live_sessions(self) -> list[Session]:
        return list(self._live.values())

    async def shutdown(self) -> None:
        """Stop every live session (SIGTERM, grace, SIGKILL) and wait until all have ended."""
        grace = self._limits().shutdown_grace
        live = self.live_sessions()
        for session in live:
            session.request_stop(reason="daemon_shutdown", grace=grace)
        for session in live:
            await session.wait_exited()
        for feed in self._feeds:
            feed.end()
        self._oom.close()
        # The ended sessions' groups still queued (``_removals``) are removed, and their
        # control files closed, before the subtrees go: a daemon stopped in its process
        # (tests, an embedding program) would otherwise keep their descriptors.
        await trio.to_thread.run_sync(self._removals.give_up)
        await trio.to_thread.run_sync(self._starter.cgroups.close)
        await self._slot.aclose()
