"""A tool session's limits and environment: the daemon's defaults and ceilings, each cap no
larger than the agent's own (running a tool is no way around the agent's limits); the user's
base variables, not the caller's."""

from __future__ import annotations

from nonod.policy import Limits, ResolvedPolicy
from nonod.toolsandbox._broker import within


def _policy(limits: Limits, max_processes: int = 4096) -> ResolvedPolicy:
    return ResolvedPolicy(name="tool", grants=(), denials=(), limits=limits,
                          max_processes=max_processes)


def test_each_cap_is_at_most_the_agents() -> None:
    tool = _policy(Limits(memory=1 << 30, cpus=4.0, cpu_weight=500))
    agent = Limits(memory=256 << 20, max_processes=64, wall_clock=60.0, cpu_weight=10)
    capped = within(tool, agent)
    assert capped.limits == Limits(memory=256 << 20, max_processes=64, cpus=4.0,
                                   wall_clock=60.0, cpu_weight=500)
    assert capped.max_processes == 64


def test_a_tool_below_the_agent_keeps_its_own() -> None:
    tool = _policy(Limits(memory=64 << 20))
    assert within(tool, Limits(memory=1 << 30)) is tool
    assert within(tool, Limits()) is tool


def test_a_tool_gets_the_users_base_variables_and_only_allowed_ones_from_its_caller() -> None:
    from nonod.toolsandbox._broker import tool_env

    launch = (("PATH", "/usr/bin"), ("HOME", "/home/u"), ("LANG", "C"))
    caller = {"PATH": "/agent/bin", "HOME": "/agent", "LANG": "fr_FR", "GH_REPO": "o/r",
              "GH_CONFIG_DIR": "/agent/gh", "OTHER": "x"}
    env = dict(tool_env(launch, caller, ("GH_REPO", "PATH", "LC_*")))
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C", "GH_REPO": "o/r"}
    # A variable that names code or configuration passes from the caller only by its name.
    caller = {"GIT_AUTHOR_NAME": "a", "GIT_EDITOR": "./evil", "GIT_PAGER": "./evil",
              "GH_CONFIG_DIR": "/agent/gh"}
    assert dict(tool_env((), caller, ("GIT_*", "GH_*"))) == {"GIT_AUTHOR_NAME": "a"}
    assert dict(tool_env((), caller, ("GIT_EDITOR",))) == {"GIT_EDITOR": "./evil"}
