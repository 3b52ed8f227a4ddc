"""A launch's plan made ahead (``Launcher.plan_ahead``, ``launch(planned=)``): its thread
starts at once, one of its user's (``_callerfs``), or at the first wait when they are all
taken; the launch runs the plan made for its policy and request, with the request's cgroup
fields (made meanwhile), and refuses a plan made for another launch; a plan not made in
``PLAN_TIMEOUT`` is a launch error."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest
import trio

from nonod import _callerfs
from nonod.errors import LaunchError
from nonod.policy import Access
from nonod.sandbox import LaunchRequest, _api, open_launcher
from nonod.sandbox._plan import build_plan

from .test_sandbox import policy


def test_a_plan_made_ahead_is_the_launchs_with_its_cgroup_fields(world_tmp: Path) -> None:
    wanted = policy((world_tmp, Access.READWRITE))
    request = LaunchRequest(argv=("/bin/true",), cwd=str(world_tmp))

    async def main() -> None:
        made = await _api.PlanAhead(wanted, request, controlling_tty=False,
                                    mode="namespaces").wait()
        grouped = msgspec.structs.replace(request, cgroup_procs=("/sys/fs/cgroup/x/procs",))
        plan, _ = made.for_launch(wanted, grouped, controlling_tty=False, mode="namespaces")
        assert plan.cgroup_procs == ("/sys/fs/cgroup/x/procs",)
        built, _ = build_plan(wanted, grouped)
        assert msgspec.structs.replace(plan, proxy_port=0) == \
            msgspec.structs.replace(built, proxy_port=0)

        other = msgspec.structs.replace(grouped, argv=("/bin/false",))
        for bad in (lambda: made.for_launch(wanted, other, controlling_tty=False,
                                            mode="namespaces"),
                    lambda: made.for_launch(policy(), grouped, controlling_tty=False,
                                            mode="namespaces"),
                    lambda: made.for_launch(wanted, grouped, controlling_tty=True,
                                            mode="namespaces"),
                    lambda: made.for_launch(wanted, grouped, controlling_tty=False,
                                            mode="landlock-only")):
            with pytest.raises(LaunchError, match="not this launch's"):
                bad()

    trio.run(main)


def test_the_launch_runs_the_plan_made_ahead_and_refuses_another_launchs(
        world_tmp: Path) -> None:
    wanted = policy((world_tmp, Access.READWRITE))
    request = LaunchRequest(argv=("/bin/sh", "-c", "echo ran > ran"), cwd=str(world_tmp))

    async def main() -> None:
        async with open_launcher() as launcher:
            ahead = launcher.plan_ahead(wanted, request)
            with trio.fail_after(60):
                proc = await launcher.launch(wanted, request, planned=ahead.wait)
                assert (await proc.wait_exited()).code == 0
            assert (world_tmp / "ran").read_text() == "ran\n"

            (world_tmp / "ran").unlink()
            other = msgspec.structs.replace(request, argv=("/bin/sh", "-c", "echo no > ran"))
            with trio.fail_after(60), pytest.raises(LaunchError, match="not this launch's"):
                await launcher.launch(wanted, other, planned=launcher.plan_ahead(
                    wanted, request).wait)
            assert not (world_tmp / "ran").exists()

    trio.run(main)


def test_a_plan_starts_at_once_or_at_its_wait_when_its_users_threads_are_taken(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = policy((world_tmp, Access.READ))
    request = LaunchRequest(argv=("/bin/true",), cwd=str(world_tmp))
    started: list[str] = []
    real = _api.build_plan

    def build(*args: object, **kw: object) -> object:
        started.append(threading.current_thread().name)
        return real(*args, **kw)  # type: ignore[arg-type]  # (the real one's arguments)

    monkeypatch.setattr(_api, "build_plan", build)

    async def main() -> None:
        ahead = _api.PlanAhead(wanted, request, controlling_tty=False, mode="namespaces")
        with trio.fail_after(30):
            while not started:  # its thread runs with nothing awaited
                await trio.sleep(0.005)
        await ahead.wait()

        own = _callerfs.threads_of(0 if request.uid is None else request.uid)
        holders = [object() for _ in range(int(own.total_tokens - own.borrowed_tokens))]
        for holder in holders:
            own.acquire_on_behalf_of_nowait(holder)
        started.clear()
        ahead = _api.PlanAhead(wanted, request, controlling_tty=False, mode="namespaces")
        await trio.sleep(0.2)
        assert started == []  # no thread of its user free: nothing runs

        async def free() -> None:
            await trio.sleep(0.1)
            own.release_on_behalf_of(holders.pop())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(free)
            with trio.fail_after(30):
                made = await ahead.wait()  # from its wait on, once a thread is free
        assert started == ["nonod launch plan"]
        assert made.plan.argv == ("/bin/true",)
        for holder in holders:
            own.release_on_behalf_of(holder)

    trio.run(main)


def test_a_plan_not_made_in_time_is_a_launch_error(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def stuck(*args: object, **kw: object) -> object:
        release.wait(60)  # a walk in a file system that does not answer
        raise OSError("given up")

    monkeypatch.setattr(_api, "build_plan", stuck)
    monkeypatch.setattr(_api, "PLAN_TIMEOUT", 0.5)

    async def main() -> None:
        ahead = _api.PlanAhead(policy(), LaunchRequest(argv=("/bin/true",), cwd="/"),
                               controlling_tty=False, mode="namespaces")
        with trio.fail_after(30), pytest.raises(LaunchError, match="plan was not made"):
            await ahead.wait()

    try:
        trio.run(main)
    finally:
        release.set()
