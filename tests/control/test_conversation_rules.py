"""The conversation's rules (``nonod.conversation``): which request is valid in which state,
as a table the server and the client both follow."""

from __future__ import annotations

import typing

import pytest

from nonod import protocol as p
from nonod.conversation import State, UnexpectedMessage, next_state, streams

SID = "ab12"
ALL_REQUESTS: list[p.AnyRequest] = [
    p.Hello(protocol=p.PROTOCOL_VERSION, client="test"),
    p.Launch(argv=("true",), cwd="/", detach=True),
    p.Launch(argv=("true",), cwd="/", detach=False, stdio="null"),
    p.Launch(argv=("true",), cwd="/", detach=False, dry_run=True),
    p.ListSessions(), p.Inspect(session=SID), p.Stop(session=SID), p.Wait(session=SID),
    p.SendSignal(session=SID, signal=15), p.Logs(session=SID), p.Attach(session=SID),
    p.Input(data=b"x"), p.Resize(term=p.TermSize(rows=24, cols=80)), p.Detach(), p.Prune(),
    p.Status(), p.Shutdown(), p.Subscribe(), p.AuditFollow(), p.ProfileList(),
]


def test_every_request_kind_is_in_the_sample() -> None:
    kinds = {type(m) for m in ALL_REQUESTS}
    missing = [t.__name__ for t in typing.get_args(p.AnyRequest) if t not in kinds]
    # Profile, secret, trust and approval requests behave alike (unary, idle only): one
    # stands for all.
    assert all(name.startswith(("Profile", "Secret", "Trust", "Approval")) for name in missing)


@pytest.mark.parametrize("message", ALL_REQUESTS, ids=lambda m: type(m).__name__)
def test_only_hello_opens_a_conversation(message: p.AnyRequest) -> None:
    if isinstance(message, p.Hello):
        assert next_state(State.HELLO, message) is State.IDLE
    else:
        with pytest.raises(UnexpectedMessage, match="first message must be `hello`"):
            next_state(State.HELLO, message)


@pytest.mark.parametrize(("message", "after"), [
    (p.Hello(protocol=p.PROTOCOL_VERSION, client="t"), "already exchanged"),
    (p.Input(data=b"x"), "only valid while attached"),
    (p.Detach(), "only valid while attached"),
    (p.Attach(session=SID), State.ATTACHED),
    (p.Wait(session=SID), State.STREAMING),
    (p.Stop(session=SID), State.STREAMING),
    (p.Logs(session=SID), State.STREAMING),
    (p.Subscribe(), State.STREAMING),
    (p.Launch(argv=("true",), cwd="/", detach=False, stdio="null"), State.STREAMING),
    (p.Launch(argv=("true",), cwd="/", detach=True), State.IDLE),
    (p.Launch(argv=("true",), cwd="/", detach=False, dry_run=True), State.IDLE),
    (p.Status(), State.IDLE),
    (p.SendSignal(session=SID, signal=15), State.IDLE),
], ids=lambda v: type(v).__name__ if isinstance(v, p.Request) else str(v))
def test_idle(message: p.AnyRequest, after: State | str) -> None:
    if isinstance(after, State):
        assert next_state(State.IDLE, message) is after
        assert streams(message) is (after is State.STREAMING)
    else:
        with pytest.raises(UnexpectedMessage, match=after):
            next_state(State.IDLE, message)


@pytest.mark.parametrize("message", ALL_REQUESTS, ids=lambda m: type(m).__name__)
def test_while_streaming_only_a_signal_goes(message: p.AnyRequest) -> None:
    if isinstance(message, p.SendSignal):
        assert next_state(State.STREAMING, message) is State.STREAMING
    else:
        with pytest.raises(UnexpectedMessage, match="while a reply is streaming"):
            next_state(State.STREAMING, message)


@pytest.mark.parametrize("message", ALL_REQUESTS, ids=lambda m: type(m).__name__)
def test_while_attached(message: p.AnyRequest) -> None:
    if isinstance(message, p.Input | p.Resize | p.SendSignal):
        assert next_state(State.ATTACHED, message) is State.ATTACHED
    elif isinstance(message, p.Detach):
        assert next_state(State.ATTACHED, message) is State.IDLE
    else:
        with pytest.raises(UnexpectedMessage, match="detach first"):
            next_state(State.ATTACHED, message)


def test_the_client_core_follows_the_same_rules() -> None:
    from nonoctl.client import Call, calls

    assert calls.wait("ab12").request == p.Wait(session="ab12")
    assert calls.status().request == p.Status()
    with pytest.raises(UnexpectedMessage, match="only valid while attached"):
        Call(p.Detach(), p.Detached, lambda r: r)
    with pytest.raises(UnexpectedMessage, match="first message must be `hello`"):
        Call(p.Status(), p.DaemonStatus, lambda r: r, state=State.HELLO)
