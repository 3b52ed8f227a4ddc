"""What the control server answers when a request cannot be served: typed errors with dotted
codes, and :func:`error_reply`, their wire form (code, message, hint, structured details)."""

from __future__ import annotations

import errno

from .. import protocol as p
from ..conversation import ProtocolError as ProtocolError
from ..conversation import UnexpectedMessage as UnexpectedMessage
from ..errors import LaunchError, NonoError, ProfileError


class MalformedMessage(ProtocolError):
    code = "protocol.malformed"


class VersionMismatch(ProtocolError):
    code = "protocol.version"


class BadDescriptors(ProtocolError):
    code = "protocol.fds"


class AuthRefused(NonoError):
    """The peer may not use this daemon."""

    code = "auth.refused"


class ForeignNamespace(AuthRefused):
    code = "auth.namespace"


class Forbidden(AuthRefused):
    """The peer may use the daemon, but not for this."""

    code = "auth.forbidden"


class UsageError(NonoError):
    code = "usage.invalid"


class HelloTimeout(ProtocolError):
    code = "protocol.hello_timeout"


class FileProblem(NonoError):
    """A file the request needed could not be used (a directory where a file was expected,
    no permission...). Only its name and the system's reason are told, never its content."""

    code = "file.error"

    @classmethod
    def of(cls, exc: OSError) -> FileProblem:
        name = f"{exc.filename}: " if exc.filename else ""
        return cls(f"{name}{exc.strerror or exc}")


def error_reply(exc: NonoError) -> p.ErrorReply:
    """The wire form of an error: code, message, hint, and the structured fields it has."""
    details: dict[str, str] = {}
    if isinstance(exc, LaunchError):
        if exc.step:
            details["step"] = exc.step
        if exc.errno:
            details["errno"] = str(exc.errno)
            details["errno_name"] = errno.errorcode.get(exc.errno, "")
        if exc.detail:
            details["detail"] = exc.detail
    if isinstance(exc, ProfileError):
        if exc.source:
            details["source"] = exc.source
        if exc.path:
            details["path"] = exc.path
    return p.ErrorReply(code=exc.code, message=exc.message, hint=exc.hint, details=details)
