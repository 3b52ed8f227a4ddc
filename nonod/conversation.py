"""The conversation's rules, written once: which request is valid in which state.

Sans-IO, in the manner of h11: a pure function over the protocol's messages that the control
server (``nonod.control``) and the client core (``nonoctl._calls``) both follow, so that the
two cannot drift apart. It imports only the protocol and the error hierarchy (``nonoctl``
loads it on its hot path).

The states of one connection::

    HELLO ──hello──► IDLE ──attach──► ATTACHED ──detach──► IDLE
                      │ ▲
      wait, stop, logs, subscribe, audit_follow, an attached launch
                      ▼ │ (the stream's last reply)
                    STREAMING

- ``HELLO``: the first message must be ``hello``.
- ``IDLE``: any request but ``hello`` and the attached-only ones (``input``, ``resize``,
  ``detach``); one whose reply is a stream moves to ``STREAMING``, ``attach`` to ``ATTACHED``.
- ``STREAMING``: a reply is streaming; only ``signal`` may be sent (another request needs
  another connection). The stream's last reply (``exited``, ``end_of_output``) or an error
  that ends it returns to ``IDLE``.
- ``ATTACHED``: ``input``, ``resize`` and ``signal``; ``detach`` returns to ``IDLE``.
"""

from __future__ import annotations

import enum

from . import protocol as p
from .errors import NonoError


class ProtocolError(NonoError):
    """The client broke the protocol (bad message, wrong moment, bad descriptors)."""

    code = "protocol.invalid"


class UnexpectedMessage(ProtocolError):
    """A well-formed message sent at a moment it is not valid."""

    code = "protocol.unexpected"


class State(enum.Enum):
    HELLO = "hello"
    IDLE = "idle"
    STREAMING = "streaming"
    ATTACHED = "attached"


def streams(request: p.AnyRequest) -> bool:
    """Is the reply to ``request`` (sent while idle) a stream?"""
    match request:
        case p.Wait() | p.Stop() | p.Logs() | p.Subscribe() | p.AuditFollow():
            return True
        case p.Launch(detach=detach, dry_run=dry_run):
            return not detach and not dry_run
        case _:
            return False


def next_state(state: State, request: p.AnyRequest) -> State:
    """The state after the client sends ``request`` in ``state``; UnexpectedMessage (with the
    words the daemon answers) if it may not be sent then."""
    tag = message_tag(request)
    match state:
        case State.HELLO:
            if isinstance(request, p.Hello):
                return State.IDLE
            raise UnexpectedMessage("the first message must be `hello`")
        case State.IDLE:
            if isinstance(request, p.Hello):
                raise UnexpectedMessage("`hello` was already exchanged")
            if isinstance(request, p.Input | p.Resize | p.Detach):
                raise UnexpectedMessage(f"`{tag}` is only valid while attached")
            if isinstance(request, p.Attach):
                return State.ATTACHED
            return State.STREAMING if streams(request) else State.IDLE
        case State.STREAMING:
            if isinstance(request, p.SendSignal):
                return State.STREAMING
            raise UnexpectedMessage(
                f"`{tag}` cannot be sent while a reply is streaming; open another connection"
            )
        case State.ATTACHED:
            if isinstance(request, p.Input | p.Resize | p.SendSignal):
                return State.ATTACHED
            if isinstance(request, p.Detach):
                return State.IDLE
            raise UnexpectedMessage(f"`{tag}` is not valid while attached; detach first")


def message_tag(message: p.AnyRequest | p.AnyReply) -> str:
    """The message's ``type`` on the wire (``launch``, ``exited``...)."""
    return str(type(message).__struct_config__.tag)
