"""The daemon's queue of pending approvals: one per daemon, answered by ``nonoctl approve``.

A :class:`Pending` is one held request of one session. Its id is random (128 bits, never
reused); only the session's owner (and root) may see or answer it: for anyone else it does
not exist (``approval.not_found``), so ids and destinations of other users' sessions are not
disclosed. An answer releases exactly the one held request it names: it never reaches another
session's proxy.
"""

from __future__ import annotations

import collections
import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, final

import trio

from ._errors import ApprovalLimit, ApprovalNotFound

#: Held requests at once across the daemon; more are refused at once (a program flooding
#: unlisted hosts must not grow the daemon's memory without bound).
MAX_PENDING: Final = 1024
#: Held requests of one user at once, below the daemon's: one user's sessions filling the
#: queue must not get every other user's requests refused (``approval.limit``).
MAX_PENDING_PER_UID: Final = 256
#: Places a user holding fewer than this many still gets once the queue is full (up to twice
#: its size in all): users at their own caps fill it together, and must lock out no other.
RESERVED_PER_UID: Final = 16

Answer = Literal["once", "session", "deny"]


class Viewer(Protocol):
    """Who asks (``nonod.sessions.Caller``)."""

    @property
    def uid(self) -> int: ...

    def may_see(self, owner_uid: int) -> bool: ...


@final
@dataclass(eq=False)
class Pending:
    """One held request, waiting for its answer."""

    id: str
    session_id: str
    session_name: str
    owner_uid: int
    mode: str
    host: str
    port: int
    method: str
    path: str
    pid: int
    command: tuple[str, ...]
    backend: str
    created: dt.datetime
    expires: dt.datetime
    profile: str | None = None
    answer: Answer | None = None
    decider: str = ""
    #: The profile file ``--save-to-profile`` wrote the host into.
    saved_to: str = ""
    answered: trio.Event = field(default_factory=trio.Event)

    def public(self) -> dict[str, Any]:
        """What a viewer, a subscriber or a webhook is told about it (no answer yet)."""
        return {"id": self.id, "session": self.session_id, "session_name": self.session_name,
                "mode": self.mode, "host": self.host, "port": self.port,
                "method": self.method, "path": self.path, "pid": self.pid,
                "command": self.command, "backend": self.backend, "profile": self.profile,
                "created": self.created, "expires": self.expires}


@final
class ApprovalQueue:
    """The pending approvals of one daemon. ``notify(pending, kind)`` hears of each one
    opened (``approval_pending``) and closed (``approval_closed``)."""

    def __init__(self, *, notify: Callable[[Pending, str], None] | None = None,
                 max_pending: int = MAX_PENDING,
                 max_per_uid: int = MAX_PENDING_PER_UID) -> None:
        self._pending: dict[str, Pending] = {}
        self._per_uid: collections.Counter[int] = collections.Counter()
        self._notify = notify or (lambda _pending, _kind: None)
        self._max = max_pending
        self._max_per_uid = max_per_uid

    def new_id(self) -> str:
        return "ap-" + secrets.token_hex(16)

    def add(self, pending: Pending) -> None:
        held = self._per_uid[pending.owner_uid]
        if len(self._pending) >= self._max and not (
                held < RESERVED_PER_UID and len(self._pending) < 2 * self._max):
            raise ApprovalLimit(f"{self._max} approvals are already pending")
        if self._per_uid[pending.owner_uid] >= self._max_per_uid:
            raise ApprovalLimit(f"{self._max_per_uid} approvals of uid {pending.owner_uid} "
                                "are already pending")
        self._pending[pending.id] = pending
        self._per_uid[pending.owner_uid] += 1
        self._notify(pending, "approval_pending")

    def remove(self, pending: Pending) -> None:
        if self._pending.pop(pending.id, None) is not None:
            self._per_uid[pending.owner_uid] -= 1
            if not self._per_uid[pending.owner_uid]:
                del self._per_uid[pending.owner_uid]
            self._notify(pending, "approval_closed")

    def visible(self, viewer: Viewer, session_id: str | None = None) -> list[Pending]:
        return [a for a in self._pending.values()
                if viewer.may_see(a.owner_uid)
                and (session_id is None or a.session_id == session_id)]

    def find(self, approval_id: str, viewer: Viewer) -> Pending:
        pending = self._pending.get(approval_id)
        if pending is None or not viewer.may_see(pending.owner_uid):
            raise ApprovalNotFound(f"no pending approval {approval_id!r}",
                                   hint="`nonoctl approvals` lists yours")
        return pending

    def answer(self, approval_id: str, viewer: Viewer, answer: Answer, *,
               saved_to: str = "") -> Pending:
        """Release one held request; the first answer wins (a late one finds nothing)."""
        pending = self.find(approval_id, viewer)
        if pending.answered.is_set():
            raise ApprovalNotFound(f"approval {approval_id!r} was already answered")
        pending.answer = answer
        pending.decider = f"uid:{viewer.uid}"
        pending.saved_to = saved_to
        pending.answered.set()
        return pending
