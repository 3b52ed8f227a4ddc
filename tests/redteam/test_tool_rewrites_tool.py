"""Red team, thirty-third pass: a tool rewritten through another tool. A tool whose
executable the agent's own grants let it write is refused (``allow_writable_executable``
accepts it): the agent's code would run with the tool's grants and credentials, around its
invocation policy. The check looked at the agent's grants only. A second tool whose sandbox
may write the first one's directory (``tee`` with ``fs_write: ["./tools"]``) is the agent's
hand there: the agent piped its own program into ``tee tools/gh``, and its next ``gh`` call
ran that program in ``gh``'s session, with ``gh``'s token, hosts and grants: the argv rules
judged the words of a call, and the program was no longer ``gh``. Now every tool's write
grants count as the agent's for that check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI

pytestmark = [pytest.mark.root, pytest.mark.userns]

PY = "/usr/bin/python3"
GH = f"#!{PY}\nimport sys\nprint('the real gh', sys.argv[1:])\n"
EVIL = f"#!{PY}\nimport os\nprint('EVIL ran as gh; token', 'GH_TOKEN' in os.environ)\n"

#: The agent: its own program into the tool's file through `tee`, then the tool.
AGENT = r'''
import json, subprocess, sys
evil = sys.argv[1]
wrote = subprocess.run(["tee", "tools/gh"], input=evil, capture_output=True, text=True,
                       timeout=60)
ran = subprocess.run(["tools/gh", "issue", "list"], capture_output=True, text=True,
                     timeout=60)
print(json.dumps({"tee": wrote.returncode, "gh": [ran.returncode, ran.stdout, ran.stderr]}))
'''


def _profile(base: Path) -> tuple[Path, Path]:
    work = base / "work"
    (work / "tools").mkdir(parents=True)
    gh = work / "tools" / "gh"
    gh.write_text(GH)
    gh.chmod(0o755)
    (work / "agent.py").write_text(AGENT)
    token = base / "token"
    token.write_text("REAL")
    token.chmod(0o600)
    profile = base / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "tools"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64"]},
        "workdir": {"access": "read"},  # the agent cannot write tools/gh itself
        "network": {"block": True},
        "command_policies": {
            "credentials": {"svc": {"type": "proxy", "upstream": "https://svc.example",
                                    "credential_key": f"file://{token}",
                                    "env_var": "GH_TOKEN"}},
            "commands": {
                "gh": {"executable": str(gh), "from": {"session": {
                    "sandbox": {"fs_read": ["."], "credentials": ["svc"],
                                "network": {"allow_domain": ["svc.example"]}},
                    "invocation_policy": {"default": "deny",
                                          "allow": [{"argv": {"prefix": ["issue", "list"]}}]},
                }}},
                "tee": {"executable": "/usr/bin/tee",
                        "sandbox": {"fs_read": ["."], "fs_write": ["./tools"]}},
            },
        },
    }))
    return work, profile


def test_a_tool_that_may_write_another_tools_executable_is_refused(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, profile = _profile(short_tmp)
    done = CLI(run.env, work)("launch", "--profile", str(profile), "--",
                              PY, "-S", "agent.py", EVIL)
    # before: the launch ran, tee wrote tools/gh, and the next `gh` call ran the agent's
    # program in gh's session, with its token
    assert "EVIL" not in done.stdout, (done.stdout, done.stderr)
    assert (work / "tools" / "gh").read_text() == GH
    assert done.returncode != 0, done.stdout
    assert "tee" in done.stderr and "gh" in done.stderr and "allow_writable_executable" in \
        done.stderr, done.stderr
