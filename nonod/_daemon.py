"""The daemon's task tree: socket, registry, control server, signals, shutdown.

::

    run_daemon
    ├── launcher host        (the engine's fork server, started on first launch)
    ├── metrics endpoint     (``[metrics] enabled``: GET /metrics, see _metrics_server)
    └── sessions nursery     (one task tree per session: Registry)
        └── control server   (accept loop, one task per connection)

Shutdown (SIGTERM/SIGINT, or a ``shutdown`` request), in order: ``STOPPING=1`` to systemd;
stop accepting and drop connections; stop every session (SIGTERM, ``shutdown_grace``,
SIGKILL, wait) and flush its record and output; stop the fork server; remove the socket.
A second SIGTERM/SIGINT during shutdown skips the grace period. SIGHUP re-reads the config.
"""

from __future__ import annotations

import datetime as dt
import functools
import grp
import os
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, final

import msgspec
import structlog
import trio

from . import _logging
from ._config import Config, ConfigError, LoadedConfig, default_state_dir
from ._idle_trim import trim_after_bursts
from ._keyservices import KeychainSecrets, KeyStoreTrust
from ._limits import LimitSettings
from ._limits import settings_from as limit_settings
from ._notify import notify
from ._secretfiles import DaemonSecrets
from ._session_services import NetworkSettings
from ._statedir import claim_state_dir
from .audit._fanout import AuditHub
from .audit._kernel import open_fs_denied_monitor
from .audit._writer import Ledger
from .control import (
    BoundSocket,
    ControlServer,
    DaemonInfo,
    PolicySource,
    ServerSettings,
    activated_socket,
    bind_control_socket,
    default_socket_path,
)
from .errors import NonoError
from .policy import DAEMON_BACKEND_PREFIX, ApprovalBackend
from .sessions import AuditSettings, LauncherLike, Registry, SessionLimits
from .sessions._records import HEARTBEAT_INTERVAL
from .toolsandbox._broker import ToolBroker

if TYPE_CHECKING:
    from ._metrics import Metrics

if TYPE_CHECKING:
    from .shipping import Exporter

log = structlog.get_logger()

LauncherFactory = Callable[[], AbstractAsyncContextManager[LauncherLike]]


def daemon_version() -> str:
    from . import __version__

    return __version__


@final
class _LauncherHost:
    """Keeps the engine's launcher open for the daemon's lifetime, started on first use.

    Starting it lazily means a daemon whose engine cannot start (no user namespaces, say) still
    serves ``ps``, ``logs`` and ``inspect`` of earlier sessions; the launch that needs it gets
    the engine's error as its reply, and the next launch tries again.
    """

    def __init__(self, factory: LauncherFactory, nursery: trio.Nursery) -> None:
        self._factory = factory
        self._nursery = nursery
        self._launcher: LauncherLike | None = None
        self._lock = trio.Lock()
        self.state = "not started"

    async def get(self) -> LauncherLike:
        async with self._lock:
            if self._launcher is None:
                self._launcher = await self._nursery.start(self._host)
            return self._launcher

    def session_root(self) -> int | None:
        """The fork server's pid while sessions share the host's namespaces (landlock-only
        mode): the control server refuses peers that descend from it."""
        launcher = self._launcher
        if launcher is None or launcher.mode == "namespaces":
            return None
        return launcher.pid

    async def warm_up(self) -> None:
        """Start the fork server now, so that the first launch does not wait for it."""
        try:
            await self.get()
        except (NonoError, OSError) as exc:
            log.warning("the sandbox launcher did not start; launches will retry",
                        error=str(exc))

    async def _host(self, *, task_status: trio.TaskStatus[LauncherLike]) -> None:
        try:
            async with self._factory() as launcher:
                self.state = "ready" if launcher.mode == "namespaces" else "ready (landlock-only)"
                if launcher.mode != "namespaces":
                    log.warning("sandbox mode landlock-only: the kernel refuses the session "
                                "namespaces; sessions are partially enforced and profiles that "
                                "need a mount namespace are refused unless they accept it",
                                mode=launcher.mode)
                task_status.started(launcher)
                await trio.sleep_forever()
        finally:
            self._launcher = None
            self.state = "stopped"


@final
class _State:
    """The configuration in force; replaced as a whole on SIGHUP."""

    def __init__(self, loaded: LoadedConfig, reload: Callable[[], LoadedConfig] | None) -> None:
        self.loaded = loaded
        self._reload = reload

    @property
    def config(self) -> Config:
        return self.loaded.config

    # The sections themselves: each consumer reads its own (declared once in ``_config``).
    def limits(self) -> SessionLimits:
        # [sessions] and the two [approvals] values the sessions read: one conversion.
        approvals = self.config.approvals
        return SessionLimits(
            **msgspec.structs.asdict(self.config.sessions),
            approval_timeout=approvals.timeout,
            approval_backends=tuple(
                ApprovalBackend(name=DAEMON_BACKEND_PREFIX + name, type=b.type, url=b.url,
                                key=b.key, timeout_secs=b.timeout_secs)
                for name, b in sorted(approvals.backends.items())),
            cgroups=self.config.limits.cgroups,
        )

    def network(self) -> NetworkSettings:
        return self.config.network

    def audit(self) -> AuditSettings:
        return self.config.audit

    def settings(self) -> ServerSettings:
        return self.config.daemon

    def limit_settings(self) -> LimitSettings:
        """``[limits]``: the defaults and ceilings every launch gets (``nonod._limits``)."""
        return limit_settings(self.config.limits)

    def reload(self) -> None:
        if self._reload is None:
            log.info("SIGHUP: no configuration file to reload")
            return
        try:
            fresh = self._reload()
        except ConfigError as exc:
            log.error("configuration reload failed; keeping the old one", error=exc.message)
            return
        old = self.config.daemon
        new = fresh.config.daemon
        for key in ("socket", "socket_group", "state_dir", "log_format"):
            if getattr(old, key) != getattr(new, key):
                log.warning("setting changes only after a restart", key=f"daemon.{key}")
        if self.config.metrics != fresh.config.metrics:
            log.warning("setting changes only after a restart", key="metrics")
        if self.config.export != fresh.config.export:
            log.warning("setting changes only after a restart", key="export")
        self.loaded = fresh
        _logging.set_level(new.log_level)
        log.info("configuration reloaded", path=fresh.path)


@dataclass(frozen=True)
class DaemonOptions:
    system: bool = False
    #: ``--socket``; None: the config's ``daemon.socket`` or the default location.
    socket: Path | None = None
    #: Overrides ``daemon.state_dir`` and the default (tests).
    state_dir: Path | None = None


def _group_gid(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError as exc:
        raise ConfigError(f"daemon.socket_group: no group named {name!r}") from exc


def _open_socket(state: _State, options: DaemonOptions, gid: int | None) -> BoundSocket:
    activated = activated_socket()
    if activated is not None:
        log.info("using the socket systemd passed", path=str(activated.path))
        return activated
    configured = options.socket or (
        Path(state.config.daemon.socket) if state.config.daemon.socket else None
    )
    path = configured or default_socket_path(system=options.system)
    mode = 0o660 if gid is not None else 0o600
    return bind_control_socket(path, mode=mode, gid=gid, default_location=configured is None)


async def run_daemon(
    loaded: LoadedConfig,
    *,
    options: DaemonOptions,
    policies: PolicySource,
    launcher_factory: LauncherFactory,
    reload: Callable[[], LoadedConfig] | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[ControlServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until shut down. ``task_status.started`` gets the server once it accepts."""
    state = _State(loaded, reload)
    gid = _group_gid(state.config.daemon.socket_group) if options.system else None
    state_dir = claim_state_dir(options.state_dir or (
        Path(state.config.daemon.state_dir) if state.config.daemon.state_dir
        else default_state_dir(system=options.system)
    ))
    bound = _open_socket(state, options, gid)
    shutdown = trio.Event()
    hub = AuditHub()
    ledger: Ledger | None = None
    metrics = _build_metrics(state.config)
    try:
        # One ledger per state directory, locked: every sealed session gets its line.
        ledger = await Ledger.open(state_dir)
        if ledger.repaired_bytes:
            log.warning("the audit ledger's last line was cut short; it was removed",
                        bytes=ledger.repaired_bytes, path=str(ledger.path))
        exporter = await _exporter(state, state_dir, hub, ledger)
        async with open_fs_denied_monitor(state.config.audit.fs_denied) as fs_denied, \
                trio.open_nursery() as root:
            if exporter is not None:
                await root.start(exporter.run)
                if metrics is not None:
                    metrics.observe_export(exporter)
            host = _LauncherHost(launcher_factory, root)
            async with trio.open_nursery() as sessions_nursery:
                registry = Registry(
                    nursery=sessions_nursery, get_launcher=host.get, state_dir=state_dir,
                    limits=state.limits, system=options.system, network=state.network,
                    audit=state.audit, audit_hub=hub, audit_ledger=ledger,
                    fs_denied=fs_denied, metrics=metrics,
                    retain=exporter.undelivered if exporter is not None else None,
                    daemon_secrets=DaemonSecrets(
                        config_file=state.loaded.path, state_dir=str(state_dir),
                        credentials_dir=os.environ.get("CREDENTIALS_DIRECTORY")),
                )
                # Tools of `command_policies` run in child sessions (docs/tool-sandboxes.md).
                registry.tools = ToolBroker(
                    registry.launch, state_dir / "tools", limits=state.limit_settings,
                    approvals=registry.approvals,
                    approval_timeout=lambda: registry.limits().approval_timeout)
                if handle_signals:
                    # In the root nursery: a second signal must still reach us while sessions stop.
                    await root.start(_watch_signals, state, registry, shutdown)
                if metrics is not None:
                    from ._metrics_server import serve_metrics

                    metrics.observe(registry)
                    # The system daemon starts even while another user holds its port.
                    await root.start(functools.partial(
                        serve_metrics, metrics, state.config.metrics.listen,
                        wait_for_port=options.system))
                try:
                    await _serve(state, options, bound, registry, policies, host, shutdown,
                                 gid, state_dir, task_status)
                finally:
                    notify("STOPPING=1")
                    with trio.CancelScope(shield=True):
                        log.info("stopping sessions", live=len(registry.live_sessions()))
                        await registry.shutdown()
                    sessions_nursery.cancel_scope.cancel()
            root.cancel_scope.cancel()
    finally:
        hub.close()
        if ledger is not None:
            with trio.CancelScope(shield=True):
                await ledger.aclose()
        bound.release()
        log.info("nonod stopped")


def _build_metrics(config: Config) -> Metrics | None:
    """The metrics, when ``[metrics] enabled`` (prometheus_client is imported only then)."""
    if not config.metrics.enabled:
        return None
    from ._metrics import Metrics

    return Metrics()


async def _exporter(state: _State, state_dir: Path, hub: AuditHub,
                    ledger: Ledger) -> Exporter | None:
    """The ``[[export]]`` sinks' exporter (read at start), or None without any. A sink that
    cannot be built (its CA file, the signing key, a damaged cursor) stops the start."""
    sections = state.config.export
    if not sections:
        return None
    from ._export import build_exporter
    from .sessions._audit import load_signer

    sign_key = state.config.audit.sign_key
    wants_key = any(s.type == "envelope" for s in sections)
    signer = await load_signer(sign_key) if wants_key and sign_key is not None else None
    exporter = build_exporter(state_dir, sections, signer=signer, hub=hub, ledger=ledger)
    log.info("shipping audit", sinks=[f"{s.name} ({s.type})" for s in sections])
    return exporter


async def _serve(
    state: _State,
    options: DaemonOptions,
    bound: BoundSocket,
    registry: Registry,
    policies: PolicySource,
    host: _LauncherHost,
    shutdown: trio.Event,
    gid: int | None,
    state_dir: Path,
    task_status: trio.TaskStatus[ControlServer],
) -> None:
    lost = await registry.load()
    if lost:
        log.warning("sessions lost with the previous daemon", sessions=lost)
    await registry.apply_retention()
    server = ControlServer(
        registry=registry,
        policies=policies,
        info=DaemonInfo(
            version=daemon_version(), pid=os.getpid(), uid=os.geteuid(), system=options.system,
            socket=str(bound.path) if bound.path else "(socket activation)",
            state_dir=str(state_dir), config=state.loaded.path,
            started_at=dt.datetime.now(dt.UTC),
        ),
        settings=state.settings,
        limits=state.limit_settings,
        request_shutdown=shutdown.set,
        group_gid=gid,
        secrets=KeychainSecrets(),
        trust=KeyStoreTrust(registry.secret_log),
        launcher_state=lambda: host.state,
        session_root=host.session_root,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, bound.sock)
        log.info("nonod ready", socket=str(bound.path), pid=os.getpid(), system=options.system,
                 state_dir=str(state_dir))
        notify(f"READY=1\nMAINPID={os.getpid()}")
        nursery.start_soon(host.warm_up)
        nursery.start_soon(_reseal_periodically, registry)
        nursery.start_soon(_heartbeat, registry)
        nursery.start_soon(trim_after_bursts)
        task_status.started(server)
        await shutdown.wait()
        log.info("shutting down")
        nursery.cancel_scope.cancel()


RESEAL_INTERVAL = 30.0


async def _heartbeat(registry: Registry) -> None:
    """Touch the state directory's heartbeat file (see ``sessions._records.last_alive``)."""
    while True:
        await registry.heartbeat()
        await trio.sleep(HEARTBEAT_INTERVAL)


async def _reseal_periodically(registry: Registry) -> None:
    """Audit files whose writes failed (a full disk) are sealed as truncated once writes
    work again: at daemon start, after each session end, and every ``RESEAL_INTERVAL``."""
    while True:
        await registry.reseal_truncated()
        await trio.sleep(RESEAL_INTERVAL)


async def _watch_signals(
    state: _State,
    registry: Registry,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                notify("RELOADING=1")
                state.reload()
                notify("READY=1")
            elif not shutdown.is_set():
                log.info("signal received; shutting down", signal=signal.Signals(signum).name)
                shutdown.set()
            else:
                log.warning("second signal; killing sessions without grace")
                for session in registry.live_sessions():
                    session.request_stop(reason="daemon_shutdown", grace=0)
