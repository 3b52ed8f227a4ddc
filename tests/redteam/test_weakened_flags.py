"""Red team, thirty-third pass: a protection turned off on the command line. ``weakened``
(``inspect``, the audit's ``session_started``) is "the protections its profile or command
line turned off", but ``--trust-override`` (instruction files not verified) was said only
on the caller's own terminal and as a trust warning in the audit: ``inspect`` (root's, or
the user's later) showed nothing turned off, and ``session_started.weakened`` was absent."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI

SAID = "instruction files not verified (--trust-override)"


def test_trust_override_is_said_with_what_else_is_turned_off(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    done = run("launch", "--trust-override", "--allow-cwd", "--block-net", "--name", "over",
               "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    detail = json.loads(run("inspect", "over", "--json").stdout)
    # before: []
    assert SAID in detail["weakened"], detail["weakened"]
    [audit] = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    first = json.loads(audit.read_text().splitlines()[0])["event"]
    assert first["type"] == "session_started" and SAID in first["weakened"], first
    plain = run("launch", "--allow-cwd", "--block-net", "--name", "plain", "--", "/bin/true")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(run("inspect", "plain", "--json").stdout)["weakened"] == []
