"""A launch whose launcher does not report in time is a launch error the client is told,
not an exception that ends the client's connection (a busy host's fleet saw
``client.connection_lost`` where ``trio.TooSlowError`` left the connection handler), and it
leaves no program running that the daemon does not know of."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
    assert run("launch", "--allow-cwd", "--block-net", "--", "/bin/true").returncode == 0
    server = _fork_server()  # (the daemon's, started by that launch)
    token = f"nono-timeout-{uuid.uuid4().hex}"
    # The launcher made late for certain (a host too busy for it), not the time limit made
    # tiny: LAUNCH_TIMEOUT also bounds the wait for one of the uid's launch places
    # (``Launcher._take_place``), and a limit of 1e-6 s could pass before that free place
    # was taken (trio reads the clock twice entering the scope), refusing the launch with
    # daemon.busy instead of the refusal this test is about.
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", 1.0)  # the daemon runs in this process
    returncode, said = _launch_while_stopped(run, server, f"sleep 30 # {token}")
    assert returncode != 0, said
    assert "did not report within 1 s" in said, said
    assert "connection" not in said.lower(), said
    wait_until("the abandoned launch's program ended", lambda: not _alive(token), timeout=30)
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", 30.0)
    again = run("launch", "--allow-cwd", "--block-net", "--", "/bin/true")
    assert again.returncode == 0, again.stderr  # the daemon goes on serving


def _launch_while_stopped(run: CLI, server: int, script: str) -> tuple[int, str]:
    """``nonoctl launch -- /bin/sh -c script`` while the fork server ``server`` is stopped (a
    host too busy for the launcher to report in time), let go once the client is done: the
    client's exit status and what it said. Into a file, not a pipe: the stopped fork server
    holds the client's descriptors (and the program does once it runs), so a pipe would not
    end with the client."""
    said = run.cwd / f"said-{uuid.uuid4().hex}"
    os.kill(server, signal.SIGSTOP)
    try:
        with said.open("w") as out:
            client = subprocess.Popen(
                [sys.executable, "-m", "nonoctl", "launch", "--allow-cwd", "--block-net", "--",
                 "/bin/sh", "-c", script],
                env=run.env, cwd=run.cwd, stdout=out, stderr=out)
            returncode = client.wait(60)
    finally:
        os.kill(server, signal.SIGCONT)
    return returncode, said.read_text()


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
    returncode, said = _launch_while_stopped(run, server, f"sleep 60 # {token}")
    assert returncode != 0, said
    assert "did not report within" in said, said
    wait_until("the abandoned launch's program ended", lambda: not _alive(token), timeout=20)
    wait_until("the abandoned launch's warm group removed",  # (the others hold launchers)
               lambda: all(_in_use(group) or not group.exists() for group in warm),
               timeout=20)
