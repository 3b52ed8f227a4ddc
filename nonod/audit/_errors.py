"""The audit area's errors: every one is a ``NonoError`` with an ``audit.*`` code.

Who is at fault decides the class. ``AuditWriteError``: the daemon could not record (disk full,
permissions); the session should stop rather than run unaudited. ``AuditVerifyError``: a file
does not check out; it names the file and the *first* line that is wrong, and why.
``AuditIncomplete`` is the one verification failure that is not evidence of tampering: the
file simply has no final record yet (a live session, or a daemon that died).
"""

from __future__ import annotations

from ..errors import NonoError


class AuditError(NonoError):
    """Base of the audit area's errors."""

    code = "audit.error"


class AuditNotFound(AuditError):
    """No audit file (or ledger) where one was expected."""

    code = "audit.not_found"


class AuditWriteError(AuditError):
    """An audit record could not be written or synced. The writer is unusable afterwards:
    a partial line may be on disk, and nothing more is appended after it."""

    code = "audit.write"


class AuditKeyError(AuditError):
    """The key a session's audit record is to be signed with cannot be loaded: the launch is
    refused rather than leave an unsigned record where a signed one was asked for."""

    code = "audit.sign_key"


class AuditClosed(AuditError):
    """The writer was sealed or closed (by its owner) and takes no more events."""

    code = "audit.closed"


class AuditVerifyError(AuditError):
    """A file failed verification.

    ``path`` is the file, ``line`` the 1-based number of the first line that is wrong (None
    when the failure is about the file as a whole, such as a missing signature), ``reason``
    says what is wrong without the file's content.
    """

    code = "audit.tampered"

    def __init__(self, path: str, line: int | None, reason: str, *,
                 hint: str | None = None) -> None:
        where = f"{path}: line {line}: " if line is not None else f"{path}: "
        super().__init__(
            where + reason,
            hint=hint or "the file may have been modified; keep a copy before doing anything",
        )
        self.path = path
        self.line = line
        self.reason = reason


class AuditIncomplete(AuditVerifyError):
    """The chain checks out as far as it goes, but the file has no final record.

    A running session's file looks like this, and so does one whose daemon was killed (the
    next daemon start seals it with ``session_ended`` reason ``daemon_lost``). It is also what
    cutting lines off the end of a sealed file looks like: only a seal, a signature or the
    ledger can tell the two apart, which is why it is an error unless the caller allows it.
    """

    code = "audit.incomplete"

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        super().__init__(
            path, line, reason,
            hint="a live session has no final record yet; verify it again after it ends, "
                 "or pass allow_incomplete (`--allow-incomplete`) to check what is there",
        )


class AuditSignatureError(AuditVerifyError):
    """The signature over the final record is missing, malformed or does not match."""

    code = "audit.bad_signature"


class AuditLedgerError(AuditVerifyError):
    """The ledger is broken, or does not list the session the way its file says."""

    code = "audit.ledger"
