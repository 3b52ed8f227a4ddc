"""Red team, another user's nono locked out by a directory in ``/tmp``: without
``XDG_RUNTIME_DIR`` (su, cron, ssh without logind, containers) a user daemon and its clients
meet at ``/tmp/nono-<uid>/nonod.sock``, a name any local user can take first. The client then
refused it (rightly: the directory is not its user's) and the daemon would not start there,
so one ``mkdir`` by another user kept that user from nono for as long as the directory stayed
(the sticky ``/tmp`` lets only its owner remove it). Now, when that directory belongs to
someone else, daemon and client both use ``~/.cache/nono/run/`` instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.localusers import LocalUser, local_users

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

REPO = Path(__file__).resolve().parents[2]


def _as(user: LocalUser, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(user.home), "PYTHONPATH": str(REPO),
           "NONO_NO_AUTOSTART": "1", "XDG_STATE_HOME": str(user.home / "state"),
           "XDG_CONFIG_HOME": str(user.home / "config")}
    return subprocess.run([*user.prefix(), sys.executable, *argv], capture_output=True,
                          text=True, env=env, cwd="/", timeout=60, check=False)


def test_another_users_directory_in_tmp_does_not_lock_a_user_out(short_tmp: Path) -> None:
    with local_users(short_tmp, 2) as (victim, squatter):
        taken = Path(f"/tmp/nono-{victim.uid}")
        subprocess.run([*squatter.prefix(), "mkdir", "-m", "0755", str(taken)], check=True)
        try:
            started = _as(victim, "-m", "nonod", "--daemonize")
            assert started.returncode == 0, started.stderr  # before: "belongs to uid ..."
            try:
                listed = _as(victim, "-m", "nonoctl", "ps")
                assert listed.returncode == 0, listed.stderr
                assert (victim.home / ".cache" / "nono" / "run" / "nonod.sock").is_socket()
                assert os.listdir(taken) == []  # nothing of the victim's went there
                taken.rmdir()  # the squatter gives up the name: the client still finds it
                assert _as(victim, "-m", "nonoctl", "ps").returncode == 0
            finally:
                _as(victim, "-m", "nonoctl", "daemon", "stop")
        finally:
            if taken.exists():
                taken.rmdir()
