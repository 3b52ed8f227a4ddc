"""The settings the sessions read at each use (``[sessions]`` and ``[audit]`` of nonod.toml;
they reload on SIGHUP)."""

from __future__ import annotations

from dataclasses import dataclass

from ..policy import ApprovalBackend


@dataclass(frozen=True)
class SessionLimits:
    """The ``[sessions]`` settings the registry reads at each use (they reload on SIGHUP)."""

    max_live: int = 1024
    stop_grace: float = 10.0
    shutdown_grace: float = 5.0
    allow_root: bool = False
    output_buffer_bytes: int = 256 * 1024
    log_max_bytes: int = 64 * 1024 * 1024
    oom_score_adj: int = 800
    #: ``[approvals] timeout``: how long a held request waits for an answer (profiles may
    #: say less or more with ``network.approval_defaults.timeout_secs``).
    approval_timeout: float = 60.0
    #: ``[approvals.backends.*]``: the operator's webhooks, named ``daemon:<name>``.
    approval_backends: tuple[ApprovalBackend, ...] = ()
    #: ``[limits] cgroups``: a cgroup per session (read once, when the daemon starts).
    cgroups: bool = True


@dataclass(frozen=True)
class AuditSettings:
    """The ``[audit]`` settings the registry reads at each use (they reload on SIGHUP)."""

    enabled: bool = True
    fsync_interval: float = 1.0
    sign_key: str | None = None
    keep_days: float | None = None
    keep_sessions: int | None = None
    subscriber_buffer: int = 256
