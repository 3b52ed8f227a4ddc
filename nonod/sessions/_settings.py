"""The settings the sessions read at each use: the ``[sessions]`` and ``[audit]`` sections of
nonod.toml themselves, declared once in ``nonod._config`` (they reload on SIGHUP; the registry
is given a getter and reads it at each use)."""

from .._config import AuditSection as AuditSettings
from .._config import SessionsSection as SessionLimits

__all__ = ["AuditSettings", "SessionLimits"]
