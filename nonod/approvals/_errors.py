"""The approvals' errors: ``approval.*`` codes."""

from __future__ import annotations

from ..errors import NonoError


class ApprovalError(NonoError):
    code = "approval.error"


class ApprovalNotFound(ApprovalError):
    """No pending approval with that id that the caller may see (another user's pending
    approvals are reported exactly like ones that do not exist)."""

    code = "approval.not_found"


class ApprovalLimit(ApprovalError):
    code = "approval.limit"


class SaveRefused(ApprovalError):
    """``--save-to-profile`` could not write the session's profile file."""

    code = "approval.save_refused"
