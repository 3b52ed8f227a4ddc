"""Red team (fourteenth pass), per-tool sandboxes: what a tool's invocation rules, its
environment and a person's approvals are about. A real daemon (on a thread), a real agent
session calling its tool (through the shim, or by hand on its tool socket), a real tool
session printing the variables it got.

- An invocation rule's ``env`` matcher was judged on the environment the *caller* wrote into
  its call, while the tool gets the agent's launch environment (the user's), the caller's
  values only for ``allow_vars``, never the caller's base variables (``HOME``, ``PATH``).
- A person's ``--session`` answer to a call that ``default: "approve"`` held let every later
  call no rule names run without asking.
- A held call's arguments were shown joined with spaces: one argument could read as others.
- A pattern in ``allow_vars`` (``GIT_*``) passed the caller's ``GIT_EDITOR``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox._fakes import HAND_CALL, tool_dirs
from tests.toolsandbox.test_daemon_tools import _pending

pytestmark = [pytest.mark.root, pytest.mark.userns]

PY = "/usr/bin/python3"
TOOL = f'''#!{PY}
import json, os
print(json.dumps({{k: os.environ.get(k) for k in
                  ("TARGET", "HOME", "GIT_AUTHOR_NAME", "GIT_EDITOR", "GH_CONFIG_DIR")}}))
'''
#: The agent's command: its script, ``agent.py``, in the working directory.
AGENT = (PY, "-S", "agent.py")


@contextlib.contextmanager
def _agent_of(base: Path, script: str, invocation: dict[str, object],
              allow_vars: tuple[str, ...] = (), **env: str) -> Iterator[tuple[CLI, Path]]:
    """A daemon, and the ``nonoctl`` to launch ``script`` as an agent whose tool
    ``deployer`` has ``invocation`` and ``allow_vars``; ``env``: the user's, at launch."""
    work, tool = tool_dirs(base, "deployer", TOOL)
    (work / "agent.py").write_text(script)
    profile = base / "agent.json"
    profile.write_text(json.dumps({
        "meta": {"name": "agent"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", str(tool.parent)]},
        "network": {"block": True},
        "command_policies": {"commands": {"deployer": {
            "executable": str(tool), "from": {"session": {
                "sandbox": {"fs_read": ["."],
                            "environment": {"allow_vars": list(allow_vars)}},
                "invocation_policy": invocation}}}}},
    }))
    daemon = DaemonThread(base).start()
    try:
        yield CLI(cli_env(daemon.socket, base, PATH=f"{tool.parent}:/usr/bin:/bin", **env),
                  work), profile
    finally:
        daemon.stop()


def _launch(run: CLI, profile: Path) -> dict[str, Any]:
    """Runs the agent to its end; what it printed last, as JSON."""
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--", *AGENT)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# Each call by hand: [the daemon's answer, what the tool printed (None: it did not run)].
BY_HAND = HAND_CALL + r'''
def tried(argv, env):
    answer, printed = call("deployer", argv, os.getcwd(), env)
    return [answer, json.loads(printed) if printed else None]
print(json.dumps({
    "prod_unsaid": tried(["deploy"], {}),
    "staging_said": tried(["deploy"], {"TARGET": "staging"}),
    "home_claimed": tried(["show"], {"HOME": "/safe"}),
}))
'''


def test_env_rules_judge_the_environment_the_tool_gets(short_tmp: Path) -> None:
    invocation = {
        "default": "deny",
        "deny": [{"argv": {"prefix": ["deploy"]}, "env": {"TARGET": {"equals": "prod"}},
                  "reason": "no deploys to prod"}],
        "allow": [{"argv": {"prefix": ["deploy"]}},
                  {"argv": {"prefix": ["show"]}, "env": {"HOME": {"equals": "/safe"}}}]}
    with _agent_of(short_tmp, BY_HAND, invocation, ("TARGET", "HOME"),
                   TARGET="prod") as (run, profile):
        out = _launch(run, profile)
    # The user launched the agent with TARGET=prod: a call that does not override it runs
    # the tool with prod, so the deny rule is about it (before: the tool ran, printing prod).
    answer, printed = out["prod_unsaid"]
    assert printed is None and "no deploys to prod" in answer.get("refused", ""), out
    # The caller's own TARGET (an allowed variable) is what the tool gets: allowed.
    answer, printed = out["staging_said"]
    assert answer.get("exit") == 0 and printed["TARGET"] == "staging", out
    # HOME is a base variable: never the caller's, so a rule on HOME=/safe is not met by
    # claiming it (before: allowed, and the tool ran with the user's HOME).
    answer, printed = out["home_claimed"]
    assert printed is None and "refused" in answer, out


# The agent runs the tool (through the shim) three times and prints what each gave.
CALLS = r'''
import json, subprocess
def run(*argv):
    done = subprocess.run(["deployer", *argv], capture_output=True, text=True, timeout=120)
    return [done.returncode, done.stdout]
print(json.dumps({"first": run("comment", "1"), "again": run("comment", "1"),
                  "other": run("repo", "delete")}))
'''


def test_a_session_answer_to_the_default_covers_that_call_only(short_tmp: Path) -> None:
    invocation = {"default": "approve", "allow": [{"argv": {"prefix": ["status"]}}]}
    with _agent_of(short_tmp, CALLS, invocation) as (run, profile):
        agent = run.popen("launch", "--profile", str(profile), "--allow-cwd", "--", *AGENT)
        seen: set[str] = set()
        first = _pending(run, seen)
        assert first["path"] == "comment 1", first
        assert run("approve", str(first["id"]), "--session").returncode == 0
        # The same call again passes on that answer; another call no rule names is asked
        # about (before: it ran at once, "approved earlier").
        other = _pending(run, seen)
        assert other["path"] == "repo delete", other
        assert run("deny", str(other["id"])).returncode == 0
        stdout, stderr = agent.communicate(timeout=120)
    assert agent.returncode == 0, stderr
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert out["first"][0] == out["again"][0] == 0, out
    assert out["other"] == [126, ""], out


# The agent's call (held by an approve rule) whose words, joined with spaces, read as a GET:
# `-f` makes gh send a POST, and `-X GET` is inside the field's value.
SPOOF = r'''
import subprocess
subprocess.run(["deployer", "api", "repos/o/r/issues", "-f", "body=hi -X GET"], timeout=120)
'''


def test_a_held_calls_question_shows_where_each_argument_ends(short_tmp: Path) -> None:
    invocation = {"default": "deny", "approve": [{"argv": {"prefix": ["api"]}}]}
    with _agent_of(short_tmp, SPOOF, invocation) as (run, profile):
        agent = run.popen("launch", "--profile", str(profile), "--allow-cwd", "--", *AGENT)
        asked = _pending(run, set())
        listed = run("approvals").stdout
        inspected = run("approvals", "inspect", str(asked["id"])).stdout
        assert run("deny", str(asked["id"])).returncode == 0
        agent.communicate(timeout=120)
    # Before: "api repos/o/r/issues -f body=hi -X GET", a GET to the person reading it.
    assert asked["path"] == "api repos/o/r/issues -f 'body=hi -X GET'", asked
    assert "deployer api repos/o/r/issues -f 'body=hi -X GET'" in listed, listed
    assert "command: deployer api repos/o/r/issues -f 'body=hi -X GET'" in inspected, inspected


# The agent calls its tool with variables that would make it run the agent's program (an
# editor git starts) or read the agent's configuration, beside a plain one.
CHOOSES = r'''
import os, subprocess
subprocess.run(["deployer", "show"], timeout=120, env={**os.environ, "GIT_AUTHOR_NAME": "agent",
               "GIT_EDITOR": "./evil", "GH_CONFIG_DIR": os.getcwd()})
'''


def test_a_pattern_in_allow_vars_passes_no_variable_that_names_code(short_tmp: Path) -> None:
    with _agent_of(short_tmp, CHOOSES, {"default": "allow"},
                   ("GIT_*", "GH_*")) as (run, profile):
        got = _launch(run, profile)
    assert got["GIT_AUTHOR_NAME"] == "agent", got  # a plain value passes
    # Before: "./evil" and the agent's directory, with the tool's credentials.
    assert got["GIT_EDITOR"] is None and got["GH_CONFIG_DIR"] is None, got
