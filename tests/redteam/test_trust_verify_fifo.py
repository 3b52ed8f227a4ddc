"""Red team, thirty-seventh pass: ``nonoctl trust verify FILE...`` read each FILE with
``Path.read_bytes()``: a FIFO among the names a shell glob gives (``trust verify *.md`` in a
hostile repository) blocked the command for good, where ``verify --all`` and the daemon's
scan refuse a FIFO without waiting. Now each FILE and its bundle are opened once, never
blocking, regular files only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nonod import trust
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import cli_env, nonoctl
from tests.redteam._trust import signed_project

RULES = b"# rules\n"


def test_verify_refuses_a_fifo_named_on_its_command_line(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, config, key = signed_project(short_tmp, ["*.md"])
    (work / "GEMINI.md").write_bytes(RULES)
    (work / "GEMINI.md.bundle").write_bytes(trust.sign_file(RULES, "GEMINI.md", key))
    os.mkfifo(work / "AGENTS.md")
    os.mkfifo(work / "CLAUDE.md.bundle")
    (work / "CLAUDE.md").write_bytes(RULES)
    env = cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config))
    try:
        result = nonoctl(["trust", "verify", "AGENTS.md", "CLAUDE.md", "GEMINI.md"], env=env,
                         cwd=work, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("trust verify waited on a FIFO") from None
    assert result.returncode == 1, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FAIL AGENTS.md: cannot read:") and "FIFO" in lines[0], lines
    assert lines[1].startswith("FAIL CLAUDE.md: cannot read its bundle:"), lines
    assert lines[2] == "OK   GEMINI.md", lines
