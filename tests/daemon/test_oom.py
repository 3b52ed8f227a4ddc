"""Under memory pressure the kernel kills a session before its daemon: every session runs
with ``[sessions] oom_score_adj`` (800 by default) and cannot lower it."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import DaemonThread
from .test_cli import CLI, cli_env

PROBE = r"""
import os
print("adj", open("/proc/self/oom_score_adj").read().strip())
try:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("0")
    print("lowered", open("/proc/self/oom_score_adj").read().strip())
except OSError as e:
    print("refused", e.errno)
"""


def test_sessions_run_with_a_high_oom_score_they_cannot_lower(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    (short_tmp / "probe.py").write_text(PROBE)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({"meta": {"name": "oom"}, "workdir": {"access": "read"},
                                   "groups": {"include": ["python_runtime"]}}))
    own = Path("/proc/self/oom_score_adj").read_text().strip()
    for _ in range(3):  # a cold launch, then warm launchers made for the same key
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   "/usr/bin/python3", "-S", "probe.py")
        assert done.returncode == 0, done.stderr
        assert "adj 800" in done.stdout
        assert "refused" in done.stdout, done.stdout
    # The daemon (here: the test process that hosts it) keeps its own score.
    assert Path("/proc/self/oom_score_adj").read_text().strip() == own
