"""Red team, twenty-fourth pass: modules planted in the directory ``python -m nonoctl`` runs
in. ``python -m`` puts the working directory first on ``sys.path``, and nonoctl is run where
the user works: in a cloned repository. A ``nonod/__init__.py`` or a ``msgspec.py`` shipped
by the repository ran as the user at nonoctl's first import (``nonoctl --version`` was
enough). ``nonod`` had the fix for the daemon (``python -m nonod``); nonoctl now drops the
working directory the same way before it imports anything else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.daemon.test_cli import cli_env

PLANT = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def test_python_m_nonoctl_does_not_import_from_the_working_directory(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "nonod").mkdir(parents=True)
    markers = {name: tmp_path / f"{name}.ran" for name in ("nonod", "msgspec")}
    (repo / "nonod" / "__init__.py").write_text(PLANT.format(marker=str(markers["nonod"])))
    (repo / "msgspec.py").write_text(PLANT.format(marker=str(markers["msgspec"])))
    done = subprocess.run([sys.executable, "-m", "nonoctl", "--version"], cwd=repo,
                          env=cli_env(tmp_path / "no.sock", tmp_path), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nonoctl "), done.stdout
    # Before: the planted nonod ran (and, empty, failed the command).
    assert not [name for name, marker in markers.items() if marker.exists()]
