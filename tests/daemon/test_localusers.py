"""The test users of ``localusers``: a run clears the ones left by runs that are gone, never
those of a run still going (two test runs on one host: CI next to a developer's)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from .localusers import local_users

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="useradd needs root")]

#: Another test run starting: it makes (and removes) a user of its own.
OTHER_RUN = """
import sys
from pathlib import Path
from tests.daemon.localusers import local_users
with local_users(Path(sys.argv[1]), 1):
    pass
"""


def test_another_run_leaves_a_live_runs_users_alone(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    with local_users(tmp_path, 1) as [mine]:
        subprocess.run([sys.executable, "-c", OTHER_RUN, str(tmp_path / "other")], check=True,
                       cwd=Path(__file__).parents[2])
        assert pwd.getpwnam(mine.name).pw_uid == mine.uid  # before: deleted by the other run
