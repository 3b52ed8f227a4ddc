"""Starting one session's program: everything between its audit record and ``started()``.

:class:`ProgramStarter` sets up the program's stdio, prepares its services (trust, route
secrets, proxy; ``nonod._session_services``), masks every file the daemon reads secrets from
(``nonod._secretfiles``), launches it through the engine and routes its filesystem denials
to its audit stream. The registry owns the session; this owns nothing past ``start``, but the
fs_denied watch it releases at the end.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple, final

import msgspec
import structlog
import trio

from .. import _callerfs, _session_services
from .._dryrun import weakened
from .._secretfiles import (
    DaemonSecrets,
    SecretFileLog,
    SecretPath,
    launch_secret_paths,
    secret_denials,
    with_secrets_hidden,
)
from ..audit import AuditError, redact_argv
from ..audit import Event as AuditEvent
from ..audit._kernel import FsDeniedMonitor, Watch
from ..cgroups import SessionGroup
from ..credentials import LaunchBindings
from ..errors import NonoError, PolicyError
from ..policy import Denial, ResolvedPolicy
from ..sandbox import LaunchRequest, LayerReport, adapt_policy
from ._caller_reads import user_config_dir
from ._contracts import GetLauncher, LauncherLike, Process, SessionPlan
from ._limits import (
    SessionCgroups,
    cgroup_limits,
    hide_cgroup_tree,
    remove_group,
    with_layers,
)
from ._output import SessionOutput
from ._records import make_private_dirs, shorten_argv
from ._removals import GroupRemovals
from ._session import Session
from ._settings import AuditSettings, SessionLimits

if TYPE_CHECKING:
    from .._metrics import Metrics
    from .._session_services import SessionServices
    from ..credentials import SecretHosts

log = structlog.get_logger()


class SecretMasks(NamedTuple):
    """A launch's secret masks, made ahead in its resolution's worker thread
    (``CallerReads``), and the secret files they were made for: the launch's own, then the
    daemon's. ``failed``: what making them raised (the launch is refused with it)."""

    of: tuple[SecretPath, ...]
    denials: tuple[Denial, ...]
    failed: Exception | None = None


class _Ready(NamedTuple):
    """What ``ProgramStarter._prepare`` readies for the launch."""

    launcher: LauncherLike
    stdio: tuple[int, int, int]
    services: SessionServices
    request: LaunchRequest


@final
class ProgramStarter:
    """What the registry needs to start programs, held once (settings read at each use)."""

    def __init__(
        self,
        *,
        get_launcher: GetLauncher,
        limits: Callable[[], SessionLimits],
        system: bool,
        network: Callable[[], _session_services.NetworkSettings],
        audit: Callable[[], AuditSettings],
        daemon_secrets: DaemonSecrets,
        secret_log: SecretFileLog,
        fs_denied: FsDeniedMonitor | None,
        metrics: Metrics | None,
        secret_hosts: SecretHosts | None = None,
        removals: GroupRemovals | None = None,
    ) -> None:
        self._get_launcher = get_launcher
        self._limits = limits
        self._system = system
        self._network = network
        self._audit_settings = audit
        self._daemon_secrets = daemon_secrets
        self._secret_log = secret_log
        self._fs_denied = fs_denied
        self._fs_watches: dict[str, Watch] = {}
        self._fs_admitted: dict[str, int] = {}  # session id: the uid its program runs as
        #: The sessions' cgroups (set by ``Registry.load``, closed by ``Registry.shutdown``).
        self.cgroups = SessionCgroups(None, "the daemon has not looked for cgroups yet")
        self._metrics = metrics
        self._secret_hosts = secret_hosts
        #: Where a refused launch's group goes to be removed (the registry's queue of ended
        #: sessions' groups): its refusal is answered at once. None: removed before the
        #: refusal, up to ``REMOVE_TIMEOUT``.
        self._removals = removals

    async def start(self, session: Session, plan: SessionPlan,
                    create_audit: Callable[[Callable[[], None] | None], Awaitable[bool]],
                    parent_group: SessionGroup | None = None,
                    record_writer: Callable[[], Callable[[], None]] | None = None,
                    audit_waits: bool = True) -> Process:
        """The session's program, running: its stdio (a PTY, passed descriptors or
        /dev/null), its services, its policy with the secret masks, its fs_denied watch.
        Raises to refuse the launch; nothing is left open then.

        ``record_writer`` is called once the session's record is complete but for the
        program (its argv redacted, its limits and intercepts set), when auditing is on;
        what it returns (blocking, must not raise: the registry writes the session's record)
        runs beside the first audit records' fsync (``SessionAudit.open(beside=...)``), and
        the launch's gate waits for both: the record is on disk before the program may
        start.

        ``create_audit(first)`` makes ``session.audit``, running ``first`` (blocking: the
        session's private directory and secret masks) in the audit file's worker thread
        before the file is made; it returns False (``first`` not run) when auditing is off.
        It runs while the services are prepared and the session's cgroup made (all three
        mostly wait on the disk, the kernel and worker threads), and its first records are
        fsynced before the program exists. Any of them failing cancels the others and
        refuses the launch. ``audit_waits`` False (the registry's file is made ahead, no
        signing key to load): with the masks made too, the three run one after the other in
        this task, none in a task of its own."""
        to_close: list[int] = []
        # The secrets this launch binds to their hosts: kept once its program exists,
        # undone if it is refused (``credentials._hosts``).
        bindings = LaunchBindings()
        try:
            prepared: list[_Ready] = []
            masked: list[ResolvedPolicy] = []
            limit_layers: tuple[LayerReport, ...] = ()
            # Made in the resolution's thread (the same files as now: else made here).
            premasked = self._premasked(plan)
            own = None if premasked is not None else await self._own_secret_denials(plan)

            async def prepare() -> None:
                prepared.append(await self._prepare(session, plan, to_close, bindings))

            def private_dir_and_masks() -> None:
                # The session's private directory (its output log goes there; nothing
                # writes it before the program runs), then the secret masks.
                make_private_dirs(session.directory)
                masked.append(hide_cgroup_tree(self._hide_secrets(plan, own)))

            async def audit_and_masks() -> None:
                if premasked is None:
                    if not await create_audit(private_dir_and_masks):
                        await trio.to_thread.run_sync(private_dir_and_masks)
                    return
                masked.append(hide_cgroup_tree(premasked))
                if not await create_audit(None):  # the directory is the file's, else:
                    await trio.to_thread.run_sync(make_private_dirs, session.directory)

            async def make_group() -> None:
                nonlocal limit_layers
                # The limits and allow_degraded are the plan's: the secret masks and the
                # hidden cgroup tree only add denials.
                session.cgroup, limit_layers = await self.cgroups.make(
                    session.id, plan.policy, parent_group)

            if premasked is None or audit_waits:
                await _together(audit_and_masks, make_group, prepare)
            else:  # nothing of the audit file's waits (``audit_waits``): no task for it
                for job in (audit_and_masks, make_group, prepare):
                    await job()
            launcher, stdio, services, request = prepared[0]
            policy = masked[0]
            # The secrets it will hold (its phantom token, env_credentials) never reach a file.
            # Only those: the rest of its added environment (proxy address, `1` flags, bundle
            # paths) is not secret, and blotting it out of argv would garble the record.
            session.record.argv = redact_argv(session.record.argv, services.hidden)
            session.record.limits = policy.limits
            session.record.intercepts = services.intercepts
            session.record.secret_env = services.secret_env
            # The command line's too: --trust-override is a launch option, not the policy's.
            session.record.weakened = weakened(policy) + (
                ("instruction files not verified (--trust-override)",)
                if plan.trust_override else ())
            session.record.secrets_bound = services.secrets_bound
            # Durable before the program exists: nothing runs before its record is on disk.
            # The fsync runs while the engine builds the plan; the launch waits for it.
            durable: Callable[[], Awaitable[None]] | None = None
            whole = session.record.argv
            shorten_argv(session.record)  # (whole in the audit file's session_started)
            if session.audit is not None:
                session.audit.hidden = services.hidden
                durable = session.audit.open(
                    session.record, services, argv=whole,
                    beside=record_writer() if record_writer is not None else None)
            if session.cgroup is not None and parent_group is not None and \
                    session.cgroup.path.startswith(parent_group.path.rstrip("/") + "/"):
                # A tool session's groups are inside its agent's: no limits to hand a warm
                # launcher (whose group is beside the agent's), so the fork server launches
                # it cold, joining these groups first.
                request = msgspec.structs.replace(request, cgroup_procs=session.cgroup.procs)
            elif session.cgroup is not None:
                request = msgspec.structs.replace(
                    request, cgroup_procs=session.cgroup.procs,
                    cgroup_pool=self.cgroups.pool(), cgroup_limits=cgroup_limits(policy)[0])
            gate = durable
            if plan.resolution_check is not None:
                # Beside the engine's plan and the first records' fsync: the policy's kept
                # resolution, checked in its worker thread. Nothing of the launch starts
                # before it passed; a stale one refuses this launch (``ResolutionChanged``),
                # which the caller redoes on a fresh resolution.
                gate = _after(durable, plan.resolution_check.wait_passed)
            try:
                proc = await launcher.launch(
                    policy, request, stdio=stdio,
                    controlling_tty=plan.stdio == "pty", gate=gate,
                )
            except BaseException:
                if durable is not None:  # awaited in any case: the writer waits for it
                    with contextlib.suppress(AuditError):  # the launch is refused anyway
                        await durable()
                raise
            if self._secret_hosts is not None:
                self._secret_hosts.confirm(bindings)  # it runs: what it bound stays
            warm_group = getattr(proc, "cgroup", "")
            if session.cgroup is not None and warm_group:
                session.cgroup, limit_layers = self.cgroups.adopt(
                    warm_group, session.cgroup, limit_layers, cgroup_limits(policy)[0])
            proc.enforcement = with_layers(proc.enforcement, limit_layers)
            self._watch_fs_denied(session, proc)
        except BaseException:
            self._leave_fs_denied(session)
            if session.services is not None:
                session.services.discard()  # its forwards' host sockets: nothing runs
            with trio.CancelScope(shield=True):
                if self._secret_hosts is not None and bindings.keys:
                    await trio.to_thread.run_sync(self._secret_hosts.withdraw, bindings)
                await session.close_terminal()
                if session.cgroup is not None:
                    await self._remove_refused(session.cgroup)
                    session.cgroup = None
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        return proc

    async def _remove_refused(self, group: SessionGroup) -> None:
        """A refused launch's group, removed. Queued (``_removals``) where the registry's
        queue takes it: a launcher that did not report may be stuck in the kernel (a
        caller's FUSE file system), unkillable, and the group then outlasts every try; its
        refusal need not wait ``REMOVE_TIMEOUT`` for that. Else (no queue, or its nursery
        closed at the daemon's exit) removed here, as before."""
        if self._removals is not None:
            try:
                self._removals.add(group)
                return
            except RuntimeError:  # its nursery is closed (the daemon is going): not queued
                pass
        await remove_group(group)

    async def _prepare(
        self, session: Session, plan: SessionPlan, to_close: list[int],
        bindings: LaunchBindings,
    ) -> _Ready:
        """Everything the launch needs but the audit record and the policy's secret masks:
        the launcher, the stdio (what to close after the launch goes to ``to_close``), the
        services (what they bind goes to ``bindings``) and the launch request."""
        limits = self._limits()
        launcher = await self._get_launcher()
        stdio: tuple[int, int, int]
        if plan.stdio == "passed":
            if plan.passed_fds is None:
                raise NonoError("an attached launch needs three file descriptors")
            stdio = plan.passed_fds
        elif plan.stdio == "pty":
            master, slave = os.openpty()
            to_close.append(slave)
            session.open_terminal(master, term=plan.term, output=SessionOutput(
                capacity=limits.output_buffer_bytes,
                log_path=session.log_path,
                log_max=limits.log_max_bytes,
            ))
            stdio = (slave, slave, slave)
        else:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            to_close.append(null)
            stdio = (null, null, null)
        services_policy = self._with_daemon_backends(session, plan.policy)
        services = await _session_services.prepare(
            adapt_policy(services_policy, launcher.mode), plan.request,
            settings=self._network(),
            environ=dict(os.environ),  # env:// reads the daemon's environment
            listen_ports=plan.policy.network.listen_ports,
            user_config_dir=user_config_dir(dict(plan.request.env), plan.owner,
                                            system=self._system),
            trust_override=plan.trust_override,
            trust_files=plan.caller_reads.trust_files if plan.caller_reads else None,
            caller_identity=plan.caller_reads.identity if plan.caller_reads else None,
            caller=plan.owner if self._system else None,
            secret_hosts=self._secret_hosts, bindings=bindings,
            tool_session=plan.parent is not None,
        )
        if services.request is None:
            raise NonoError("session services produced no launch request")
        request = msgspec.structs.replace(services.request, oom_score_adj=limits.oom_score_adj)
        session.services = services
        if self._fs_denied is not None and self._fs_denied.active:
            request = msgspec.structs.replace(request, audit_tag=self._fs_denied.tag)
            await self._admit_fs_denied(self._fs_denied, session, request)
        return _Ready(launcher, stdio, services, request)

    async def _own_secret_denials(self, plan: SessionPlan) -> tuple[Denial, ...] | None:
        """The system daemon looks at a non-root caller's secret paths as that caller (it
        lends no rights: as root, "has 2 hard links" told of a file the caller may not see),
        in the caller's own worker threads and within their time limit (a caller's FUSE
        file system cannot hold a daemon thread). A path the caller cannot reach is neither
        masked nor counted: neither the caller nor its session could read it. None: look as
        the daemon itself (``_hide_secrets``)."""
        if not self._system or plan.owner.is_root:
            return None
        if plan.caller_reads is not None:
            looked = plan.caller_reads.secret_denials()  # in the profile's thread
            if looked is not None:
                return looked
        sign_key = self._audit_settings().sign_key
        paths = launch_secret_paths(plan.policy, audit_sign_key=plan.audit_sign_key or sign_key)
        return await _callerfs.run_as(plan.owner, lambda: secret_denials(paths),
                                      what="the launch's secret files")

    def _hide_secrets(self, plan: SessionPlan, own: tuple[Denial, ...] | None = None
                      ) -> ResolvedPolicy:
        """Blocking: ``plan.policy`` with a mask over every file the daemon reads secrets
        from (see ``_secretfiles``); SecretFileError if one cannot be kept out. ``own``: the
        masks of the launch's own paths, made as its caller already."""
        paths, daemons = self._secret_paths(plan.policy, plan.audit_sign_key)
        return with_secrets_hidden(plan.policy,
                                   self._masks_of(paths, daemons, plan.owner.uid, own))

    def secret_masks(self, policy: ResolvedPolicy, own: tuple[Denial, ...] | None, *,
                     owner_uid: int, audit_sign_key: str | None) -> SecretMasks:
        """Blocking, with the daemon's own identity: what :meth:`_hide_secrets` would add to
        ``policy`` for a launch of ``owner_uid``, made ahead (in the launch's resolution
        thread: ``CallerReads``); what making them raised is kept, not raised."""
        paths, daemons = self._secret_paths(policy, audit_sign_key)
        try:
            denials = self._masks_of(paths, daemons, owner_uid, own)
        except Exception as exc:  # noqa: BLE001 - raised at the launch's start (_premasked)
            return SecretMasks((*paths, *daemons), (), exc)
        return SecretMasks((*paths, *daemons), denials)

    def _premasked(self, plan: SessionPlan) -> ResolvedPolicy | None:
        """``plan.policy`` with the masks its resolution's thread made, if they were made for
        the secret files it names now (else None: they are made at the start); what making
        them raised is raised."""
        made = plan.caller_reads.masks() if plan.caller_reads is not None else None
        if made is None:
            return None
        paths, daemons = self._secret_paths(plan.policy, plan.audit_sign_key)
        if made.of != (*paths, *daemons):
            return None
        if made.failed is not None:
            raise made.failed
        return with_secrets_hidden(plan.policy, made.denials)

    def _secret_paths(self, policy: ResolvedPolicy, audit_sign_key: str | None
                      ) -> tuple[list[SecretPath], list[SecretPath]]:
        """The secret files a launch of ``policy`` names, and the daemon's."""
        sign_key = self._audit_settings().sign_key
        return (launch_secret_paths(policy, audit_sign_key=audit_sign_key or sign_key),
                self._daemon_secrets.paths(audit_sign_key=sign_key))

    def _masks_of(self, paths: list[SecretPath], daemons: list[SecretPath], owner: int,
                  own: tuple[Denial, ...] | None) -> tuple[Denial, ...]:
        """Blocking: the masks of the launch's secret files (``own``: made as its caller
        already), the daemon's, and those ``owner``'s earlier launches named; ``paths``
        remembered for ``owner``'s later sessions (hidden in that user's sessions only)."""
        denials = secret_denials([*(paths if own is None else ()), *daemons]) + (own or ())
        earlier = secret_denials(self._secret_log.paths(owner), check_links=False)
        try:
            self._secret_log.remember(paths, owner)
        except OSError as exc:
            log.warning("cannot record the session's secret files", error=str(exc))
        return denials + earlier

    async def _admit_fs_denied(self, monitor: FsDeniedMonitor, session: Session,
                               request: LaunchRequest) -> None:
        """Before the program runs: the kernel's audit rules name the uid it runs as (a
        request to the kernel at that uid's first live session only; ``UidRules``)."""
        uid = os.geteuid() if request.uid is None else request.uid
        if await monitor.admit(uid):
            self._fs_admitted[session.id] = uid

    def _leave_fs_denied(self, session: Session) -> None:
        uid = self._fs_admitted.pop(session.id, None)
        if uid is not None and self._fs_denied is not None:
            self._fs_denied.leave(uid)

    def _watch_fs_denied(self, session: Session, proc: Process) -> None:
        """Route the session's filesystem denials to its audit stream; say in its
        enforcement report whether they are observed (observation never refuses a launch)."""
        monitor = self._fs_denied
        if monitor is None:
            return
        ses = proc.audit_session
        if ses and monitor.active and session.id not in self._fs_admitted:
            layer = LayerReport(name="fs_denied", state="off", reason=(
                "unavailable: the kernel refused the audit rules of the session's user"))
        elif ses:
            def sink(event: AuditEvent) -> None:
                if self._metrics is not None:
                    self._metrics.fs_denied()
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
                err = proc.audit_session_error
                why = ("unavailable: the kernel refused the session's audit tag ("
                       + os.strerror(err or errno.EINVAL) + ")")
            layer = LayerReport(name="fs_denied", state="off", reason=why)
        proc.enforcement = msgspec.structs.replace(
            proc.enforcement, layers=(*proc.enforcement.layers, layer))

    def _with_daemon_backends(self, session: Session, policy: ResolvedPolicy
                              ) -> ResolvedPolicy:
        """``policy`` with the daemon's approval backends it names; PolicyError (the launch
        is refused) for a name neither the profile nor ``[approvals.backends]`` has."""
        approval = policy.network.approval
        if approval is None:
            return policy
        try:
            approval = approval.with_daemon_backends(self._limits().approval_backends)
        except KeyError as exc:
            raise PolicyError(
                f"unknown approval backend `{exc.args[0]}`",
                hint="daemon backends are [approvals.backends.NAME] in nonod.toml, named "
                "`daemon:NAME` in profiles") from None
        session.policy_approval = approval
        return msgspec.structs.replace(policy, network=msgspec.structs.replace(
            policy.network, approval=approval))

    def release_started(self, session: Session) -> Callable[[], Awaitable[object]]:
        """The session ended: stop routing its filesystem denials (bounded: records still
        queued are written first). Begun now (the kernel's flush marker sent), ended by the
        returned wait, which the caller must await: it may work meanwhile."""
        watch = self._fs_watches.pop(session.id, None)
        if watch is None or self._fs_denied is None:
            self._leave_fs_denied(session)
            return trio.lowlevel.checkpoint
        released = self._fs_denied.release_started(watch)

        async def release() -> bool:
            try:
                return await released()
            finally:
                self._leave_fs_denied(session)  # its uid's rules go after its last session

        return release


def _after(first: Callable[[], Awaitable[None]] | None,
           then: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A gate that waits for ``first`` (if any), then for ``then``."""
    async def gate() -> None:
        if first is not None:
            await first()
        await then()
    return gate


async def _together(background: Callable[[], Awaitable[None]],
                    *inline: Callable[[], Awaitable[None]]) -> None:
    """Run ``background`` in a task of its own while ``inline`` run in this one, one after
    the other. The first to fail cancels the others and its exception is raised as it is (a
    launch's refusal keeps its error code), not in an exception group.

    ``background`` is the job that waits (a worker thread); the inline ones seldom do (a
    kept cgroup, services without trust files or route secrets): a task each cost the event
    loop more than they did."""
    failure: list[Exception] = []

    async def run(job: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - raised again below, as itself
            failure.append(exc)
            scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, background, nursery.cancel_scope)
        # Its worker thread had better start before the inline jobs' work: it waits longest.
        await trio.lowlevel.checkpoint()
        for job in inline:
            await run(job, nursery.cancel_scope)
            if failure:
                break
    if failure:
        raise failure[0]
