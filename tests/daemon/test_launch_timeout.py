"""A launch whose launcher does not report in time is a launch error the client is told,
not an exception that ends the client's connection (a busy host's fleet saw
``client.connection_lost`` where ``trio.TooSlowError`` left the connection handler), and it
leaves no program running that the daemon does not know of."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from nonod.sandbox import _api

from ..proctree import children, wait_until
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
    deadline = time.monotonic() + 30
    while _alive(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(token), "a program the daemon refused kept running"
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", 30.0)
    again = run("launch", "--allow-cwd", "--block-net", "--", "/bin/true")
    assert again.returncode == 0, again.stderr  # the daemon goes on serving



def _fork_server() -> int:
    found = [child for child in children(os.getpid())
             if b"_forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()]
    assert len(found) == 1, found
    return found[0]


def _warm_groups(server: int) -> set[Path]:
    """The v1 memory groups of the fork server's warm launchers."""
    found: set[Path] = set()
    for pid in children(server):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(",") and "/warm-" in path:
                found.add(Path("/sys/fs/cgroup/memory" + path))
    return found


def _in_use(group: Path) -> bool:
    try:
        return bool(group.joinpath("cgroup.procs").read_text().split())
    except FileNotFoundError:
        return False


def test_a_launcher_that_reports_after_the_timeout_has_its_program_ended(
        daemon_thread: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher goes on after the daemon gave up: the program it starts late is ended
    and the warm group it ran in removed, not left running in a group the daemon never
    heard of (it ran its whole course, listed by no ``nonoctl ps``, before)."""
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    assert run("launch", "--allow-cwd", "--block-net", "--", "/bin/true").returncode == 0
    server = _fork_server()  # (the daemon's, started by that launch)
    warm = _warm_groups(server)  # (none without a cgroup v1 pool: the launch is cold)
    token = f"nono-late-{uuid.uuid4().hex}"
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", 1.0)
    os.kill(server, signal.SIGSTOP)  # a host too busy for the launcher to report in time
    try:
        with (short_tmp / "said").open("w") as said:  # (the program holds it once it runs)
            client = subprocess.Popen(
                [sys.executable, "-m", "nonoctl", "launch", "--allow-cwd", "--block-net", "--",
                 "/bin/sh", "-c", f"sleep 60 # {token}"],
                env=run.env, cwd=run.cwd, stdout=said, stderr=said)
            assert client.wait(60) != 0
    finally:
        os.kill(server, signal.SIGCONT)
    said = (short_tmp / "said").read_text()
    assert "did not report within" in said, said
    wait_until("the abandoned launch's program ended", lambda: not _alive(token), timeout=20)
    wait_until("the abandoned launch's warm group removed",  # (the others hold launchers)
               lambda: all(_in_use(group) or not group.exists() for group in warm),
               timeout=20)
