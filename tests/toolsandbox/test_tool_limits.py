"""Limits follow the tree: a tool session's cgroup is made inside its agent's, so the agent's
caps (processes, memory) bound the agent and its tools together. A real nonod (on a thread),
real cgroups; the tool is a small program run through ``command_policies``."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from nonod.cgroups import open_backend, subtree_tag
from nonod.sessions._removals import BATCH_DELAY
from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox._fakes import tool_dirs

#: Long enough for the batched removals of the sessions that just ended to be through.
BATCHES_THROUGH = 20 * BATCH_DELAY + 2.0

pytestmark = [pytest.mark.root, pytest.mark.userns]

PY = "/usr/bin/python3"

# The tool: forks children that wait (``fork N``), or fills memory (``mem MB``).
HOG = f'''#!{PY}
import errno, os, signal, sys, time
if sys.argv[1] == "fork":
    pids = []
    failed = 0
    for _ in range(int(sys.argv[2])):
        try:
            pid = os.fork()
        except OSError as exc:
            failed = exc.errno
            break
        if pid == 0:
            signal.pause()
            os._exit(0)
        pids.append(pid)
    print(len(pids), failed, flush=True)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
else:
    chunks = []
    for _ in range(int(sys.argv[2])):
        chunks.append(bytearray(1 << 20))
    print("filled", flush=True)
'''

# The agent: holds 8 processes, then asks the tool for 10 more (within the tool's own cap of
# 16, not within what the agent's leaves); holds 24M, then asks the tool for 76M (within the
# tool's own 96M, not within what is left of the agent's).
AGENT = r'''
import json, subprocess
def run(*argv):
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    return [done.returncode, done.stdout.strip()]
sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(8)]
out = {"fork": run("hog", "fork", "10")}
for sleeper in sleepers:
    sleeper.kill()
    sleeper.wait()
held = bytearray(24 << 20)
out["mem"] = run("hog", "mem", "76")
print(json.dumps(out), flush=True)
'''


def _setup(base: Path) -> tuple[Path, Path, DaemonThread]:
    work, hog = tool_dirs(base, "hog", HOG)
    bindir = hog.parent
    (work / "agent.py").write_text(AGENT)
    profile = base / "agent.json"
    profile.write_text(json.dumps({
        "meta": {"name": "agent"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", str(bindir)]},
        "nonod": {"max_processes": 16, "limits": {"memory": "96M"}},
        "command_policies": {"commands": {"hog": {"executable": str(hog), "from": {
            "session": {"sandbox": {"fs_read": ["."]},
                        "invocation_policy": {"default": "deny", "allow": [
                            {"argv": {"prefix": ["fork"]}}, {"argv": {"prefix": ["mem"]}}]}},
        }}}},
    }))
    return work, profile, DaemonThread(base).start()


@pytest.fixture(autouse=True)
def _needs_v1_cgroups(tmp_path: Path) -> None:
    backend, why = open_backend(str(tmp_path))
    if backend is None or backend.version != 1:
        pytest.skip(f"tool sessions nest in their agent's cgroups on v1 only ({why or 'v2'})")


def test_the_agents_caps_bound_its_tools(short_tmp: Path) -> None:
    work, profile, daemon = _setup(short_tmp)
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"),
                  work)
        for _ in range(2):  # warm launchers are made for tools like these (none may be used)
            warmup = run("launch", "--profile", str(profile), "--allow-cwd", "--", "hog",
                         "fork", "0")
            assert warmup.returncode == 0, warmup.stderr
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "agent.py")
        sessions = json.loads(run("ps", "--all", "--json").stdout)
        # No group is left behind while the daemon runs: the tools launched cold, in their
        # agent's groups, never leaving a warm launcher's group empty beside them. (The
        # daemon keeps a few unused groups, named spare-..., for later launches: see
        # docs/limits.md.)
        # Ended sessions' groups go in batches a moment after their end
        # (``nonod/sessions/_removals.py``): what is still empty once those are through.
        subtree = Path("/sys/fs/cgroup/pids", f"nono-{subtree_tag(str(daemon.state_dir))}")

        def empty_groups() -> list[str]:
            return [g.name for g in subtree.iterdir()
                    if g.is_dir() and not g.name.startswith("spare-")
                    and not (g / "cgroup.procs").read_text().split()]

        deadline = time.monotonic() + BATCHES_THROUGH
        while (left := empty_groups()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.stop()
    assert done.returncode == 0, [(x["id"], x.get("parent"), x.get("reason"), x["signal"],
                                   x["usage"]) for x in sessions]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # The agent's 8 sleepers (and itself, its shim) and the tool's processes share the
    # agent's cap: the tool's forks are refused (EAGAIN) before the 10 its own cap allows.
    code, printed = out["fork"]
    assert code == 0, out
    forked, failed = map(int, printed.split())
    assert failed == errno.EAGAIN and forked < 10, printed
    # Memory: 24M held by the agent + 76M by the tool exceed the agent's 96M; the OOM killer
    # acts inside the agent's tree (not the host's) and kills the largest, the tool. The
    # agent, which held less, goes on (it printed this).
    agent = next(s for s in sessions if "agent.py" in s["argv"])
    tools = sorted((s for s in sessions if s.get("parent") == agent["id"]),
                   key=lambda s: str(s["started_at"]))
    assert len(tools) == 2
    fork_tool, mem_tool = tools
    assert out["mem"][1] == "" and out["mem"][0] != 0, out
    assert mem_tool["signal"] == 9 and mem_tool["usage"]["oom_kills"] == 1, mem_tool
    assert fork_tool["usage"]["pids_limit_hits"] >= 1
    def limits(session: dict[str, Any]) -> str:
        return str(next(layer["detail"] for layer in session["enforcement"]["layers"]
                        if layer["name"] == "limits"))

    agent_group = limits(agent).rsplit(" ", 1)[-1]
    assert f" {agent_group}/{mem_tool['id']}; inside its agent's group" in limits(mem_tool)
    assert left == []
    # Teardown removed the groups, the tools' (inside the agent's) with the agent's.
    assert not _groups_named(agent["id"])


def _groups_named(name: str) -> list[str]:
    """Every cgroup directory called ``name``, in any hierarchy. Other daemons' groups may be
    removed while this walks (``os.walk`` skips a directory gone meanwhile; ``Path.glob``
    raised)."""
    return [os.path.join(top, name) for top, dirs, _ in os.walk("/sys/fs/cgroup")
            if name in dirs]
