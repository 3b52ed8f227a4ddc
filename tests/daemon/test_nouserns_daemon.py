"""``nonod`` where the kernel refuses new namespaces, as in a container under Docker's default
seccomp profile: the daemon starts, selects the landlock-only mode by itself, says so in its
status, in ``nonoctl doctor`` and in every session's enforcement report, and refuses a profile
that needs a mount namespace with the names of the layers to accept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import session_env, wait_pid_gone

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "tests" / "nouserns.py"


class Daemon:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "run" / "nonod.sock"
        self.work = base / "work"
        self.work.mkdir()
        self.env = {**session_env(base), "PYTHONPATH": str(REPO), "NONO_NO_AUTOSTART": "1",
                    "NONO_SOCKET": str(self.socket), "XDG_STATE_HOME": str(base / "state"),
                    "XDG_CONFIG_HOME": str(base / "config")}

    def start(self) -> None:
        done = subprocess.run(
            [sys.executable, str(WRAPPER), sys.executable, "-m", "nonod", "--daemonize",
             "--socket", str(self.socket)],
            capture_output=True, text=True, env=self.env, timeout=60, check=False)
        assert done.returncode == 0, done.stderr

    def ctl(self, *args: str, wrapped: bool = False) -> subprocess.CompletedProcess[str]:
        prefix = [sys.executable, str(WRAPPER)] if wrapped else []
        return subprocess.run([*prefix, sys.executable, "-m", "nonoctl", *args],
                              capture_output=True, text=True, env=self.env, cwd=self.work,
                              timeout=60, check=False)

    def profile(self, name: str, accept: tuple[str, ...]) -> Path:
        path = self.base / f"{name}.json"
        path.write_text(json.dumps({
            "meta": {"name": name},
            "filesystem": {"read": ["/usr", "/etc"]},
            "workdir": {"access": "readwrite"},
            "network": {"block": True},
            "nonod": {"allow_degraded": list(accept)},
        }))
        return path


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[Daemon]:
    d = Daemon(short_tmp)
    d.start()
    yield d
    status = d.ctl("daemon", "status", "--json")
    if status.returncode == 0:
        pid = json.loads(status.stdout)["pid"]
        os.kill(pid, signal.SIGTERM)
        wait_pid_gone(pid)


def test_daemon_selects_landlock_only_and_reports_it(daemon: Daemon) -> None:
    status = daemon.ctl("daemon", "status", "--json")
    assert json.loads(status.stdout)["launcher"] in ("ready (landlock-only)", "not started")
    profile = daemon.profile("container", ("persistence", "creation_guard", "private_tmp",
                                              "host_proc", "host_metadata"))

    done = daemon.ctl("launch", "--profile", str(profile), "--workdir", str(daemon.work),
                      "--name", "nouserns", "--", "/bin/sh", "-c",
                      "echo inside > made.txt; cat /proc/self/status | grep ^NSpid")

    assert done.returncode == 0, done.stderr
    assert "partially enforced" in done.stderr and "landlock-only" in done.stderr
    assert (daemon.work / "made.txt").read_text() == "inside\n"
    # One pid: the program lives in the host's pid namespace.
    nspid = next(line for line in done.stdout.splitlines() if line.startswith("NSpid"))
    assert len(nspid.split()) == 2, nspid
    inspect = json.loads(daemon.ctl("inspect", "nouserns", "--json").stdout)
    layers = {layer["name"]: layer for layer in inspect["enforcement"]["layers"]}
    assert layers["namespaces"]["state"] == "partial"
    assert layers["filesystem_view"]["state"] == "partial"
    assert layers["landlock"]["state"] == "applied"
    assert json.loads(daemon.ctl("daemon", "status", "--json").stdout)["launcher"] == \
        "ready (landlock-only)"

    findings = {f["check"]: f for f in json.loads(daemon.ctl("doctor", "--json",
                                                             wrapped=True).stdout)}
    assert findings["user namespaces"]["status"] == "warn"
    assert "landlock-only" in findings["user namespaces"]["weakens"]
    assert findings["daemon"]["status"] == "warn"
    assert "landlock-only" in findings["daemon"]["detail"]


def test_profile_needing_a_mount_namespace_is_refused_with_the_layers_to_accept(
        daemon: Daemon) -> None:
    profile = daemon.profile("strict", ())

    done = daemon.ctl("launch", "--profile", str(profile), "--workdir", str(daemon.work),
                      "--", "/bin/sh", "-c", "echo ran > ran.txt")

    assert done.returncode != 0
    assert not (daemon.work / "ran.txt").exists()
    assert "landlock-only" in done.stderr
    assert ('"allow_degraded": ["creation_guard", "host_metadata", "host_proc", "persistence", '
            '"private_tmp"]' in done.stderr)  # (a root session: host_metadata too)


def _start_background(daemon: Daemon) -> list[int]:
    """A detached session that leaves two processes behind (one ignoring SIGTERM, one in a
    session of its own): their pids."""
    profile = daemon.profile("container", ("persistence", "creation_guard", "private_tmp",
                                              "host_proc", "host_metadata"))
    started = daemon.ctl("launch", "--detach", "--profile", str(profile), "--workdir",
                         str(daemon.work), "--name", "bg", "--", "/bin/sh", "-c",
                         "(trap '' TERM; exec sleep 300) & echo $! > child; "
                         "setsid sleep 300 & echo $! > orphan; wait")
    assert started.returncode == 0, started.stderr
    pids = []
    deadline = time.monotonic() + 60  # written at once; a loaded host may start it late
    for name in ("child", "orphan"):
        path = daemon.work / name
        while not path.exists() or not path.read_text().strip():
            assert time.monotonic() < deadline, f"{name} was not written"
            time.sleep(0.01)  # not a busy loop: it would take a CPU from the session
        pids.append(int(path.read_text()))
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
    return pids


@pytest.mark.parametrize("force", [False, True])
def test_stop_ends_every_process_of_the_session(daemon: Daemon, force: bool) -> None:
    """No pid namespace: the launcher's subreapers end what the program started, whether the
    init forwards SIGTERM or is killed outright."""
    pids = _start_background(daemon)

    stopped = daemon.ctl("stop", *(["--force"] if force else []), "bg")

    assert stopped.returncode == 0, stopped.stderr
    assert all(wait_pid_gone(pid, timeout=10) for pid in pids)


def test_daemon_killed_ends_every_process_of_its_sessions(daemon: Daemon) -> None:
    """The daemon killed with SIGKILL: its fork server dies with it, the outer launcher hears
    of that and ends the session, as the end of a pid namespace would have."""
    pids = _start_background(daemon)
    daemon_pid = json.loads(daemon.ctl("daemon", "status", "--json").stdout)["pid"]

    os.kill(daemon_pid, signal.SIGKILL)

    assert wait_pid_gone(daemon_pid)
    assert all(wait_pid_gone(pid, timeout=10) for pid in pids)
