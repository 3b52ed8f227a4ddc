"""Approvals: the daemon decides, live, whether a session may reach a destination its
profile did not list (``docs/approvals.md``).

Public face::

    queue = ApprovalQueue(notify=on_change)        # one per daemon
    asker = SessionAsker(queue=queue, policy=resolved.network.approval, timeout=60.0,
                         facts=SessionFacts(...), record=session.write_event)
    # serve_proxy(..., asker=asker): the proxy holds each unlisted request on it
    queue.visible(caller); queue.find(id, caller); queue.answer(id, caller, "session")

The proxy imports nothing of this package; this package imports the proxy's ApprovalAsk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._asker import SessionAsker as SessionAsker
    from ._asker import SessionFacts as SessionFacts
    from ._errors import ApprovalError as ApprovalError
    from ._errors import ApprovalLimit as ApprovalLimit
    from ._errors import ApprovalNotFound as ApprovalNotFound
    from ._errors import SaveRefused as SaveRefused
    from ._queue import ApprovalQueue as ApprovalQueue
    from ._queue import Pending as Pending
    from ._save import save_host as save_host
    from ._webhook import WebhookCaller as WebhookCaller
    from ._webhook import sign as sign
else:
    __getattr__, __dir__ = exports(__name__, {
        "_asker": ("SessionAsker", "SessionFacts"),
        "_errors": ("ApprovalError", "ApprovalLimit", "ApprovalNotFound", "SaveRefused"),
        "_queue": ("ApprovalQueue", "Pending"),
        "_save": ("save_host",),
        "_webhook": ("WebhookCaller", "sign"),
    })
