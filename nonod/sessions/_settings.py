"""The settings the sessions read at each use (they reload on SIGHUP; the registry is given a
getter): the ``[audit]`` section of nonod.toml itself, and the ``[sessions]`` section with
the ``[approvals]`` and ``[limits]`` values the sessions need, all declared once in
``nonod._config``."""

from __future__ import annotations

from .._config import AuditSection as AuditSettings
from .._config import SessionsSection
from ..policy import ApprovalBackend

__all__ = ["AuditSettings", "SessionLimits"]


class SessionLimits(SessionsSection, frozen=True, kw_only=True):
    """``[sessions]``, plus what the sessions read of ``[approvals]`` and ``[limits]`` (one
    conversion, made by the daemon: ``daemon:``-prefixed backend names)."""

    #: ``[approvals] timeout``: how long a held request waits for an answer (profiles may
    #: say less or more with ``network.approval_defaults.timeout_secs``).
    approval_timeout: float = 60.0
    #: ``[approvals.backends.*]``: the operator's webhooks, named ``daemon:<name>``.
    approval_backends: tuple[ApprovalBackend, ...] = ()
    #: ``[limits] cgroups``: a cgroup per session (read once, when the daemon starts).
    cgroups: bool = True
