"""The sessions' errors: ``session.*`` codes (and ``policy.root_refused``)."""

from __future__ import annotations

from ..errors import NonoError, PolicyError


class SessionError(NonoError):
    code = "session.error"


class SessionNotFound(SessionError):
    code = "session.not_found"


class SessionAmbiguous(SessionError):
    code = "session.ambiguous"


class NameTaken(SessionError):
    code = "session.name_taken"


class NameInvalid(SessionError):
    code = "session.name_invalid"


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
