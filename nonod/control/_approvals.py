"""The approval requests of the control protocol: list, inspect, answer.

Each handler sees only the caller's own pending approvals (root sees all); anything else is
``approval.not_found``, exactly like an id that never existed.
"""

from __future__ import annotations

from .. import protocol as p
from ..approvals import ApprovalQueue, Pending, SaveRefused
from ..sessions import ApprovalNotice, Caller, LifecycleEvent
from ._convert import lifecycle

ApprovalRequest = p.ApprovalList | p.ApprovalInspect | p.ApprovalAnswer


def approval_info(pending: Pending) -> p.ApprovalInfo:
    a = pending
    return p.ApprovalInfo(
        id=a.id, session=a.session_id, session_name=a.session_name, mode=a.mode, host=a.host,
        port=a.port, method=a.method, path=a.path, pid=a.pid, command=a.command,
        backend=a.backend, profile=a.profile, created=a.created, expires=a.expires)


def feed_reply(event: LifecycleEvent | ApprovalNotice) -> p.SessionEvent | p.ApprovalEvent:
    """A ``subscribe`` stream's message for one feed event."""
    if isinstance(event, ApprovalNotice):
        return p.ApprovalEvent(kind=event.kind, approval=approval_info(event.approval))
    return lifecycle(event)


def handle_approval(queue: ApprovalQueue, caller: Caller, request: ApprovalRequest
                    ) -> p.AnyReply:
    match request:
        case p.ApprovalList(session=session):
            return p.Approvals(approvals=tuple(
                approval_info(a) for a in queue.visible(caller)
                if session is None or session in (a.session_id, a.session_name)))
        case p.ApprovalInspect(id=approval_id):
            return p.ApprovalReply(approval=approval_info(queue.find(approval_id, caller)))
        case p.ApprovalAnswer(id=approval_id, answer=answer):
            if request.save_to_profile:
                queue.find(approval_id, caller)  # not_found first: nothing is disclosed
                raise SaveRefused("--save-to-profile is not available in this nonod",
                                  hint="approve with --session, then add the host to the "
                                  "profile's network.allow_domain")
            pending = queue.answer(approval_id, caller, answer)
            return p.ApprovalReply(approval=approval_info(pending), answer=answer)
