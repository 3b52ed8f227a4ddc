"""The approval requests of the control protocol: list, inspect, answer.

Each handler sees only the caller's own pending approvals (root sees all); anything else is
``approval.not_found``, exactly like an id that never existed.
"""

from __future__ import annotations

from .. import protocol as p
from ..approvals import ApprovalQueue, Pending, SaveRefused, save_host
from ..sessions import ApprovalNotice, Caller, LifecycleEvent
from ._convert import lifecycle

ApprovalRequest = p.ApprovalList | p.ApprovalInspect | p.ApprovalAnswer


def approval_info(pending: Pending) -> p.ApprovalInfo:
    return p.ApprovalInfo(**pending.public())


def feed_reply(event: LifecycleEvent | ApprovalNotice) -> p.SessionEvent | p.ApprovalEvent:
    """A ``subscribe`` stream's message for one feed event."""
    if isinstance(event, ApprovalNotice):
        return p.ApprovalEvent(kind=event.kind, approval=approval_info(event.approval))
    return lifecycle(event)


async def handle_approval(queue: ApprovalQueue, caller: Caller, request: ApprovalRequest, *,
                          system: bool) -> p.AnyReply:
    match request:
        case p.ApprovalList(session=session):
            return p.Approvals(approvals=tuple(
                approval_info(a) for a in queue.visible(caller)
                if session is None or session in (a.session_id, a.session_name)))
        case p.ApprovalInspect(id=approval_id):
            return p.ApprovalReply(approval=approval_info(queue.find(approval_id, caller)))
        case p.ApprovalAnswer(id=approval_id, answer=answer):
            saved_to = diff = ""
            if request.save_to_profile:
                held = queue.find(approval_id, caller)  # not_found first: nothing disclosed
                if held.mode == "tool":
                    raise SaveRefused("a tool call is not a host: add an `allow` rule to the "
                                      "tool's invocation_policy instead")
                if held.profile is None:
                    raise SaveRefused("the session was launched without a profile file")
                diff = await save_host(caller if system else None, held.profile, held.host,
                                       caller.uid)
                saved_to = held.profile
            pending = queue.answer(approval_id, caller, answer, saved_to=saved_to)
            return p.ApprovalReply(approval=approval_info(pending), answer=answer,
                                   saved_to=saved_to, diff=diff)
