"""Red team, a working-directory grant of the whole host: ``--allow-cwd`` (and a profile's
``workdir.access``) grant whatever directory the launch runs in. Run from ``/``, from
``$HOME`` or from a system tree, that was the whole host (or every project and dotfile of the
user) writable, without a word. Such a grant is refused unless the directory is named."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.daemon.test_cli import CLI


def _write_here(run: CLI, where: Path, *flags: str) -> tuple[int, str, Path]:
    """Launch from ``where`` a program that writes a file there; the exit status, stderr
    and the file it tried to write."""
    marker = where / f"nono-broad-{secrets.token_hex(4)}"
    done = CLI(run.env, where)("launch", *flags, "--block-net", "--",
                               "/bin/sh", "-c", f"echo planted > {marker}")
    return done.returncode, done.stderr, marker


@pytest.mark.parametrize("where", ["/", "HOME", "/usr", "/etc", "/home"])
def test_allow_cwd_from_a_broad_directory_is_refused(run: CLI, where: str) -> None:
    home = Path(run.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    place = home if where == "HOME" else Path(where)
    status, stderr, marker = _write_here(run, place, "--allow-cwd")
    try:
        assert status != 0
        assert f"would grant {place}" in stderr, stderr
        assert f"--allow {place}" in stderr  # the way to do it on purpose
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def test_a_profile_that_writes_its_workdir_is_refused_from_home(run: CLI) -> None:
    home = Path(run.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    status, stderr, marker = _write_here(run, home, "--profile", "python-dev")
    assert status != 0
    assert f"would grant {home}" in stderr, stderr
    assert not marker.exists()


@pytest.mark.parametrize("how", ["$WORKDIR", "${WORKDIR}/.."])
def test_a_profile_path_through_workdir_is_refused_too(
        run: CLI, short_tmp: Path, how: str) -> None:
    # The same directory reached through a profile's $WORKDIR (from $HOME, or from a
    # project in $HOME for `..`).
    home = Path(run.env["HOME"])
    (home / "project").mkdir(parents=True, exist_ok=True)
    where = home / "project" if how.endswith("..") else home
    profile = short_tmp / "wd.json"
    profile.write_text(json.dumps({"meta": {"name": "wd"}, "filesystem": {"allow": [how]}}))
    status, stderr, _ = _write_here(run, where, "--profile", str(profile))
    assert status != 0
    assert f"would grant {home}" in stderr, stderr
    assert not [p for p in home.rglob("nono-broad-*")]


def test_a_broad_directory_named_on_purpose_is_granted(run: CLI, short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    status, stderr, marker = _write_here(run, home, "--allow-cwd", "--allow", str(home))
    assert status == 0, stderr
    assert marker.read_text() == "planted\n"
    # an ordinary project directory needs nothing more
    status, stderr, marker = _write_here(run, short_tmp, "--allow-cwd")
    assert status == 0, stderr
    assert marker.read_text() == "planted\n"
