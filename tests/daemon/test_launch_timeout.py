"""A launch whose launcher does not report in time is a launch error the client is told,
not an exception that ends the client's connection (a busy host's fleet saw
``client.connection_lost`` where ``trio.TooSlowError`` left the connection handler), and it
leaves no program running that the daemon does not know of."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from nonod.sandbox import _api

from .conftest import DaemonThread
from .test_cli import CLI, cli_env


def _alive(token: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", token], capture_output=True, text=True)
    return [pid for pid in found.stdout.split() if int(pid) != os.getpid()]


def test_a_launch_that_times_out_is_refused_by_name_and_leaves_nothing_running(
        daemon_thread: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    token = f"nono-timeout-{uuid.uuid4().hex}"
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", 1e-6)  # the daemon runs in this process
    done = run("launch", "--allow-cwd", "--block-net", "--", "/bin/sh", "-c",
               f"sleep 30 # {token}")
    assert done.returncode != 0
    assert "did not report within" in done.stderr, done.stderr
    assert "connection" not in done.stderr.lower(), done.stderr
    deadline = time.monotonic() + 10
    while _alive(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(token), "a program the daemon refused kept running"
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", 30.0)
    again = run("launch", "--allow-cwd", "--block-net", "--", "/bin/true")
    assert again.returncode == 0, again.stderr  # the daemon goes on serving
