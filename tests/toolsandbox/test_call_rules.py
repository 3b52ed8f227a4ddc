"""Red team (fourteenth pass), per-tool sandboxes: what a tool's invocation rules and a
person's approvals are about.

An invocation rule's ``env`` matcher was
judged on the environment the *caller* wrote into its call, while the tool gets another one:
the agent's launch environment (the user's), the caller's values only for ``allow_vars``, and
never the caller's base variables (``HOME``, ``PATH``). The agent left ``TARGET`` out of its
call and the deny rule on ``TARGET=prod`` did not match, yet the tool ran with the user's
``TARGET=prod``; it wrote ``HOME=/safe`` into its call and passed an allow rule on it, yet the
tool ran with the user's ``HOME``. The rules now judge the environment the tool starts with.

A real daemon (on a thread), a real agent session making the calls by hand on its tool
socket (what the shim does), a real tool session printing what it got.

A person's ``--session`` answer to a call that the policy's ``default: "approve"`` held (no
rule named it) let every later call no rule names run without asking: the person approved
``deployer comment 1`` and the agent then ran ``deployer repo delete``. Such an answer now
covers that same call only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox._fakes import tool_dirs
from tests.toolsandbox.test_daemon_tools import _pending

pytestmark = [pytest.mark.root, pytest.mark.userns]

PY = "/usr/bin/python3"

TOOL = f'''#!{PY}
import json, os
print(json.dumps({{k: os.environ.get(k) for k in
                  ("TARGET", "HOME", "GIT_AUTHOR_NAME", "GIT_EDITOR", "GH_CONFIG_DIR")}}))
'''

# Each call by hand: [the daemon's answer, what the tool printed (None: it did not run)].
PROBE = r'''
import array, json, os, socket, struct, sys
def call(argv, env):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect("/.nono-tool.sock")
    out_r, out_w = os.pipe()
    body = json.dumps({"tool": "deployer", "argv": argv, "cwd": os.getcwd(),
                       "env": env}).encode()
    conn.sendmsg([struct.pack(">I", len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", [0, out_w, 2]))])
    conn.sendall(body)
    os.close(out_w)
    answer = conn.makefile().readline()
    conn.close()
    printed = os.read(out_r, 1 << 16)
    os.close(out_r)
    return [json.loads(answer), json.loads(printed) if printed else None]
print(json.dumps({
    "prod_unsaid": call(["deploy"], {}),
    "staging_said": call(["deploy"], {"TARGET": "staging"}),
    "home_claimed": call(["show"], {"HOME": "/safe"}),
}))
'''


def _profile(base: Path, tool: Path, invocation: dict[str, object],
             allow_vars: list[str]) -> Path:
    profile = base / "agent.json"
    profile.write_text(json.dumps({
        "meta": {"name": "agent"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", str(tool.parent)]},
        "network": {"block": True},
        "command_policies": {"commands": {"deployer": {
            "executable": str(tool), "from": {"session": {
                "sandbox": {"fs_read": ["."], "environment": {"allow_vars": allow_vars}},
                "invocation_policy": invocation}}}}},
    }))
    return profile


def test_env_rules_judge_the_environment_the_tool_gets(short_tmp: Path) -> None:
    work, tool = tool_dirs(short_tmp, "deployer", TOOL)
    (work / "probe.py").write_text(PROBE)
    profile = _profile(short_tmp, tool, {
        "default": "deny",
        "deny": [{"argv": {"prefix": ["deploy"]}, "env": {"TARGET": {"equals": "prod"}},
                  "reason": "no deploys to prod"}],
        "allow": [{"argv": {"prefix": ["deploy"]}},
                  {"argv": {"prefix": ["show"]}, "env": {"HOME": {"equals": "/safe"}}}]},
        ["TARGET", "HOME"])
    daemon = DaemonThread(short_tmp).start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, TARGET="prod",
                          PATH=f"{tool.parent}:/usr/bin:/bin"), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "probe.py")
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
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


# The agent runs the tool (through the shim) three times and prints what each printed.
CALLS = r'''
import json, subprocess
def run(*argv):
    done = subprocess.run(["deployer", *argv], capture_output=True, text=True, timeout=120)
    return [done.returncode, done.stdout]
print(json.dumps({"first": run("comment", "1"), "again": run("comment", "1"),
                  "other": run("repo", "delete")}))
'''


def test_a_session_answer_to_the_default_covers_that_call_only(short_tmp: Path) -> None:
    work, tool = tool_dirs(short_tmp, "deployer", TOOL)
    (work / "calls.py").write_text(CALLS)
    profile = _profile(short_tmp, tool, {"default": "approve",
                                         "allow": [{"argv": {"prefix": ["status"]}}]}, [])
    daemon = DaemonThread(short_tmp).start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{tool.parent}:/usr/bin:/bin"), work)
        agent = run.popen("launch", "--profile", str(profile), "--allow-cwd", "--",
                          PY, "-S", "calls.py")
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
    finally:
        daemon.stop()
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
    work, tool = tool_dirs(short_tmp, "deployer", TOOL)
    (work / "spoof.py").write_text(SPOOF)
    profile = _profile(short_tmp, tool, {"default": "deny",
                                         "approve": [{"argv": {"prefix": ["api"]}}]}, [])
    daemon = DaemonThread(short_tmp).start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{tool.parent}:/usr/bin:/bin"), work)
        agent = run.popen("launch", "--profile", str(profile), "--allow-cwd", "--",
                          PY, "-S", "spoof.py")
        asked = _pending(run, set())
        listed = run("approvals").stdout
        inspected = run("approvals", "inspect", str(asked["id"])).stdout
        assert run("deny", str(asked["id"])).returncode == 0
        agent.communicate(timeout=120)
    finally:
        daemon.stop()
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
    work, tool = tool_dirs(short_tmp, "deployer", TOOL)
    (work / "chooses.py").write_text(CHOOSES)
    profile = _profile(short_tmp, tool, {"default": "allow"}, ["GIT_*", "GH_*"])
    daemon = DaemonThread(short_tmp).start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{tool.parent}:/usr/bin:/bin"), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "chooses.py")
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["GIT_AUTHOR_NAME"] == "agent", got  # a plain value passes
    # Before: "./evil" and the agent's directory, with the tool's credentials.
    assert got["GIT_EDITOR"] is None and got["GH_CONFIG_DIR"] is None, got
