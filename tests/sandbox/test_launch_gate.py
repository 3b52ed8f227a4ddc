"""``Launcher.launch(gate=...)``: the gate is awaited once the plan is built and before the
fork server hears of the launch; what it raises refuses the launch, and the program never
runs (the daemon's gate is its audit record's fsync, which overlaps the plan's making)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher

pytestmark = pytest.mark.userns


class Refused(Exception):
    pass


async def test_a_gate_runs_before_the_program_and_a_failing_one_refuses_the_launch(
        tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    policy = ResolvedPolicy(name="gate", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path="/bin", access=Access.READ),
        Grant(path="/lib", access=Access.READ), Grant(path="/lib64", access=Access.READ),
        Grant(path=str(tmp_path), access=Access.WRITE)), denials=())
    refused = tmp_path / "refused"

    def writing(path: Path) -> LaunchRequest:
        return LaunchRequest(argv=("/bin/sh", "-c", f"echo x > {path}"), cwd="/")

    seen: list[bool] = []

    async def gate_ok() -> None:
        await trio.lowlevel.checkpoint()
        seen.append(marker.exists())

    async def gate_refuses() -> None:
        await trio.lowlevel.checkpoint()
        raise Refused

    async with open_launcher("namespaces") as launcher:
        with pytest.raises(Refused):
            await launcher.launch(policy, writing(refused), stdio=(0, 1, 2),
                                  gate=gate_refuses)
        proc = await launcher.launch(policy, writing(marker), stdio=(0, 1, 2), gate=gate_ok)
        with trio.fail_after(30):
            assert (await proc.wait_exited()).code == 0
    assert seen == [False]  # the gate ran (once) before the program
    assert marker.exists()
    assert not refused.exists()  # launched in order: it would have run before the second
