"""The session asker's backends without a daemon: chains of stand-in webhooks (``all``: the
first refusal decides, else the narrowest allow; ``any``: the first allow decides), the
queue, the deadline, and the two audit records of each approval."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from nonod.approvals import (
    ApprovalNotFound,
    ApprovalQueue,
    Pending,
    SessionAsker,
    SessionFacts,
)
from nonod.audit import Approval
from nonod.policy import ApprovalBackend, ApprovalPolicy
from nonod.proxy import ApprovalAsk, Verdict

ASK = ApprovalAsk(mode="connect", host="new.example", port=443)
FACTS = SessionFacts(session_id="s1", name="bot", owner_uid=1000, pid=42,
                     command=("python3", "bot.py"), profile=None)


class Viewer:
    def __init__(self, uid: int) -> None:
        self.uid = uid

    def may_see(self, owner_uid: int) -> bool:
        return self.uid in (0, owner_uid)


def hooks(answers: dict[str, Verdict | None]
          ) -> Callable[[ApprovalBackend, Pending, float], Awaitable[tuple[Verdict, str]]]:
    """Stand-in webhooks: each answers its verdict, or never (None)."""
    async def call(backend: ApprovalBackend, pending: Pending, deadline: float
                   ) -> tuple[Verdict, str]:
        verdict = answers[backend.name]
        if verdict is None:
            await trio.sleep_forever()
        assert verdict is not None
        return verdict, f"webhook:{backend.name}"
    return call


def chain(mode: str, *members: str) -> ApprovalPolicy:
    backends = [ApprovalBackend(name=m, type="webhook", url="https://h.example", key="k")
                for m in members if m != "queue"]
    backends.append(ApprovalBackend(name="c", type="chain", mode=mode, members=members))
    return ApprovalPolicy(backend="c", timeout_secs=5, backends=tuple(backends))


async def ask(policy: ApprovalPolicy, answers: dict[str, Verdict | None],
              queue: ApprovalQueue | None = None) -> tuple[Verdict, list[Approval]]:
    records: list[Approval] = []
    asker = SessionAsker(queue=queue or ApprovalQueue(), policy=policy, timeout=60,
                         facts=FACTS, record=records.append, webhook=hooks(answers))
    return await asker(ASK), records


async def test_all_needs_every_allow_and_takes_the_narrowest() -> None:
    verdict, records = await ask(chain("all", "a", "b"), {"a": "session", "b": "once"})
    assert verdict == "once"
    assert [(r.stage, r.decision) for r in records] == [("requested", ""), ("decided", "once")]
    assert records[1].decider in ("chain:c:webhook:a,webhook:b", "chain:c:webhook:b,webhook:a")
    assert (await ask(chain("all", "a", "b"), {"a": "session", "b": "session"}))[0] == "session"


async def test_all_is_decided_by_the_first_refusal_without_waiting() -> None:
    verdict, records = await ask(chain("all", "a", "b"), {"a": None, "b": "deny"})
    assert verdict == "deny" and records[1].decider == "chain:c:webhook:b"


async def test_any_is_decided_by_the_first_allow_and_refused_only_by_all() -> None:
    verdict, records = await ask(chain("any", "a", "b"), {"a": None, "b": "session"})
    assert verdict == "session" and records[1].decider == "chain:c:webhook:b"
    assert (await ask(chain("any", "a", "b"), {"a": "deny", "b": "timeout"}))[0] == "deny"


async def test_nobody_answering_before_the_deadline_is_a_timeout() -> None:
    policy = ApprovalPolicy(backend="a", timeout_secs=0.05, backends=(
        ApprovalBackend(name="a", type="webhook", url="https://h.example", key="k"),))
    verdict, records = await ask(policy, {"a": None})
    assert verdict == "timeout" and records[1].decider == "timeout"
    assert records[1].latency_ms >= 50


async def test_the_queue_is_answered_by_its_owner_only(nursery: trio.Nursery) -> None:
    opened, closed = trio.Event(), trio.Event()
    queue = ApprovalQueue(notify=lambda _, kind: (
        opened if kind == "approval_pending" else closed).set())
    result: list[Verdict] = []

    async def held() -> None:
        result.append((await ask(ApprovalPolicy(), {}, queue))[0])

    nursery.start_soon(held)
    await opened.wait()
    [pending] = queue.visible(Viewer(1000))
    assert queue.visible(Viewer(1001)) == []
    assert queue.visible(Viewer(0)) == [pending]
    with pytest.raises(ApprovalNotFound):
        queue.answer(pending.id, Viewer(1001), "session")
    queue.answer(pending.id, Viewer(1000), "session")
    await closed.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert result == ["session"] and queue.visible(Viewer(0)) == []


async def test_a_chain_cut_by_the_sessions_end_is_decided_on_record() -> None:
    """A chain's members wait in a nursery: the session's end leaves it as a group of
    ``Cancelled``, which the ask still records as denied by ``cancelled``."""
    records: list[Approval] = []
    asker = SessionAsker(queue=ApprovalQueue(), policy=chain("all", "a", "b"), timeout=60,
                         facts=FACTS, record=records.append,
                         webhook=hooks({"a": None, "b": None}))
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(asker.ask_tool, "gh", ("pr",), pid=42))
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    assert [(r.stage, r.decision, r.decider) for r in records] == [
        ("requested", "", ""), ("decided", "deny", "cancelled")]
