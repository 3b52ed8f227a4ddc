"""The engine's plan made ahead (``ProgramStarter.start``, ``LauncherLike.plan``): once the
request and the masked policy are known, beside the audit file and the first records; the
launch gets the plan made for the policy it launches, a plan that cannot be made refuses the
launch with its own error, and a launch refused before it waited for its plan does not wait
for it."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from nonod.errors import LaunchError
from nonod.policy import ResolvedPolicy
from nonod.sandbox import ExitStatus, LaunchRequest
from nonod.sessions import CallerReads, Process, SessionPlan

from .test_registry import ME, Harness, _audited_registry


def _premasked(harness: Harness) -> SessionPlan:
    """A plan whose secret masks were made in the resolution's thread, as the control
    server's are: the starter knows the masked policy at once."""
    plan = harness.plan()
    reads = CallerReads(workdir=plan.request.cwd, env={}, owner=ME, system=False,
                        trust=False, masks=harness.registry.secret_masks(ME, None))
    reads.read(plan.policy, None)  # as the resolution's thread does
    return dataclasses.replace(plan, caller_reads=reads)


async def test_the_plan_is_made_before_the_gate_for_the_policy_launched(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = await _audited_registry(nursery, tmp_path)
    real_launch = harness.launcher.launch
    seen: list[tuple[ResolvedPolicy, int]] = []

    async def launch(policy: ResolvedPolicy, request: LaunchRequest, *,
                     gate: Callable[[], Awaitable[None]] | None = None,
                     planned: Callable[[], Awaitable[Any]] | None = None,
                     **kw: Any) -> Process:
        assert planned is not None and gate is not None
        seen.append((policy, len(harness.launcher.planned)))  # asked for before the gate
        return await real_launch(policy, request, gate=gate, planned=planned, **kw)

    monkeypatch.setattr(harness.launcher, "launch", launch)
    with trio.fail_after(10):
        session = await harness.registry.launch(_premasked(harness))
    harness.launcher.launched[-1].finish(ExitStatus(code=0))
    with trio.fail_after(10):
        await session.wait_exited()

    [(launched, asked)] = seen
    assert asked == 1
    [(planned_policy, planned_request)] = harness.launcher.planned
    assert planned_policy is launched  # the masked policy, the very one launched
    assert planned_request.argv == ("/bin/fake", "--flag")
    with trio.fail_after(10):
        await harness.registry.shutdown()


async def test_a_plan_that_cannot_be_made_refuses_the_launch_with_its_own_error(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = await _audited_registry(nursery, tmp_path)

    class Refused:
        async def wait(self) -> Any:
            raise LaunchError("/bin/fake is not readable in the session", step="exec")

    monkeypatch.setattr(harness.launcher, "plan_ahead", lambda *args, **kw: Refused())
    with trio.fail_after(10), pytest.raises(LaunchError, match="not readable") as raised:
        await harness.registry.launch(_premasked(harness))

    assert raised.value.step == "exec"  # itself, not in an exception group
    assert harness.launcher.launched == []
    assert harness.registry.live_sessions() == []
    with trio.fail_after(10):
        await harness.registry.shutdown()


async def test_a_launch_refused_before_it_waits_for_its_plan_is_refused_at_once(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plan whose grants' file system does not answer: nothing of the launch waits for it
    # once the launch is refused otherwise (its thread runs to its end on its own).
    harness = await _audited_registry(nursery, tmp_path)
    asked: list[str] = []

    class Stuck:
        async def wait(self) -> Any:
            await trio.sleep_forever()

    def plan_ahead(*args: Any, **kw: Any) -> Stuck:
        asked.append("plan")
        return Stuck()

    async def launch(policy: ResolvedPolicy, request: LaunchRequest, **kw: Any) -> Process:
        raise LaunchError("the launch's places are taken", step="fork")

    monkeypatch.setattr(harness.launcher, "plan_ahead", plan_ahead)
    monkeypatch.setattr(harness.launcher, "launch", launch)
    with trio.fail_after(10), pytest.raises(LaunchError, match="places are taken"):
        await harness.registry.launch(_premasked(harness))

    assert asked == ["plan"]
    assert harness.registry.live_sessions() == []
    with trio.fail_after(10):
        await harness.registry.shutdown()
