"""``[sandbox] warm_idle`` in a real ``nonod``: once no launch came for it, the fork server
keeps no warm launcher, and the cgroups made for the ones it ended are gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nonoctl.client import Client
from nonod import protocol as p
from nonod.cgroups import open_backend

from ..proctree import children, launchers, wait_until
from .conftest import session_env, wait_pid_gone

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or open_backend("/probe")[0] is None,
    reason="needs root and a writable cgroup hierarchy (warm launchers wait in v1 groups)")


def _memory_group(pid: int) -> Path:
    """The v1 memory cgroup directory of ``pid``."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory" + path)
    raise AssertionError(f"{pid} has no memory cgroup")


def test_an_idle_daemon_keeps_no_warm_launcher_and_removes_their_groups(
        short_tmp: Path) -> None:
    socket_path = short_tmp / "run" / "nonod.sock"
    config = short_tmp / "nonod.toml"
    config.write_text("[sandbox]\nwarm_idle = 0.5\n")
    env = {**session_env(short_tmp), "PYTHONPATH": str(REPO),
           "XDG_STATE_HOME": str(short_tmp / "state"),
           "XDG_CONFIG_HOME": str(short_tmp / "config")}
    started = subprocess.run([sys.executable, "-m", "nonod", "--daemonize", "--socket",
                              str(socket_path), "--config", str(config)],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    pid = 0
    try:
        with Client(socket_path, autostart=False, timeout=30) as nono:
            pid = nono.status().pid
            session = nono.launch(["/bin/true"], cwd=str(short_tmp), env=session_env(short_tmp),
                                  stdio="null", options=p.LaunchOptions(allow_cwd=True))
            assert nono.wait(session.id).exit_code == 0
        server = next(c for c in children(pid)
                      if b"_forkserver" in Path(f"/proc/{c}/cmdline").read_bytes())
        def warm_groups() -> set[Path]:  # (the session's own launcher may still be exiting)
            return {g for g in map(_memory_group, launchers(server))
                    if g.name.startswith("warm-")}

        wait_until("two warm launchers", lambda: len(warm_groups()) == 2)
        groups = warm_groups()
        wait_until("no warm launcher", lambda: not launchers(server))
        wait_until("the ended launchers' groups removed",
                   lambda: not [g for g in groups if g.exists()])
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            assert wait_pid_gone(pid)
