"""Red team, thirty-third pass: what a profile turns off for its tools. ``weakened`` (the
launch's note, ``inspect``, the audit's ``session_started``, the dry run) lists what the
agent's own policy turns off, and said nothing of its tools (``command_policies``): a tool
whose executable the agent may rewrite (``allow_writable_executable``: the agent's code then
runs with the tool's grants and credentials), a tool's route trusting a CA of the profile's
own (``tls_ca``), the user's variables a tool's ``allow_vars`` passes in from the agent's
launch. Each tool session's record had the last two, at the agent's call, where the
user who launched reads nothing; the first was said nowhere."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI


def _profile(base: Path) -> Path:
    work = base / "work"
    (work / "bin").mkdir(parents=True)
    tool = work / "bin" / "gh"  # in the agent's working directory: it may rewrite it
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    token = base / "token"
    token.write_text("x")
    token.chmod(0o600)
    ca = base / "ca.pem"
    ca.write_text("")
    profile = base / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "tools"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64"]},
        "network": {"block": True},
        "command_policies": {
            "credentials": {"svc": {"type": "proxy", "upstream": "https://svc.example",
                                    "credential_key": f"file://{token}", "env_var": "SVC",
                                    "tls_ca": str(ca)}},
            "commands": {"gh": {"executable": str(tool), "allow_writable_executable": True,
                                "sandbox": {"network": {"allow_domain": ["svc.example"]},
                                            "environment": {"allow_vars": ["AWS_*"]},
                                            "credentials": ["svc"]}}},
        },
    }))
    return profile


def test_what_a_profile_turns_off_for_its_tools_is_said_at_launch(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    profile = _profile(short_tmp)
    work = short_tmp / "work"
    dry = CLI(run.env, work)("launch", "--profile", str(profile), "--allow-cwd", "--dry-run",
                             "--", "/bin/true")
    assert dry.returncode == 0, dry.stderr
    done = CLI(run.env, work)("launch", "--profile", str(profile), "--allow-cwd",
                              "--name", "tools", "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    for said in (dry.stdout + dry.stderr, done.stderr):
        # before: neither line, in the dry run or at launch
        assert f"tool gh: the session may rewrite its executable {work}/bin/gh" in said, said
        assert "tool gh: svc.example trusted through the profile's CA" in said, said
        # the user's AWS_* variables, from the agent's launch, in a session with a network
        assert "tool gh: variables of your environment passed in: AWS_*" in said, said
    detail = json.loads(run("inspect", "tools", "--json").stdout)
    assert any(line.startswith("tool gh: the session may rewrite") for line in
               detail["weakened"]), detail["weakened"]
    [audit] = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    first = json.loads(audit.read_text().splitlines()[0])["event"]
    assert first["type"] == "session_started" and first["weakened"] == detail["weakened"]


def test_what_a_tool_may_read_and_write_is_in_the_dry_run(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """The dry run's `tools:` line named a tool's hosts, routes and argv rules, not its
    files: a repository's profile whose agent reads its working directory only, with a `tee`
    tool writing all of it (or a `cat` reading the home), showed the agent's grants and
    `tee (/usr/bin/tee): no network`. The agent writes what its tools write."""
    work = short_tmp / "work"
    work.mkdir()
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "tools"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64"]},
        "workdir": {"access": "read"},
        "command_policies": {"commands": {
            "tee": {"executable": "/usr/bin/tee", "sandbox": {"fs_write": ["."]}},
            "cat": {"executable": "/usr/bin/cat", "sandbox": {"fs_read": [str(short_tmp)]}},
        }},
    }))
    dry = CLI(run.env, work)("launch", "--profile", str(profile), "--dry-run", "--",
                             "/bin/true")
    assert dry.returncode == 0, dry.stderr
    line = next(x for x in dry.stdout.splitlines() if "tee (/usr/bin/tee)" in x)
    # before: `tee (/usr/bin/tee): no network`
    assert f"writes {work}" in line, line
    line = next(x for x in dry.stdout.splitlines() if "cat (/usr/bin/cat)" in x)
    assert f"reads {short_tmp}" in line, line
