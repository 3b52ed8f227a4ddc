"""A regular install works: the wheel built from this tree, installed (with its dependencies)
into a fresh virtual environment, lists the built-in profiles and launches ``gitbot``.

This is what ``pip install .``/pipx users get; the dev venv's editable install finds the
repository's files and cannot show it. Needs the package index for the dependencies (CI and
``make test`` have it), about 20 s.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..credentials.conftest import SecretService, secret_service  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUILT_IN = ("default", "gitbot")


def _build_wheel(base: Path) -> Path:
    """``pip wheel`` of a copy of the tree (a build in place would write into the repo): the
    helper bench/daemon.py times the installed CLI with."""
    spec = importlib.util.spec_from_file_location("_bench_wheel", REPO / "bench" / "_wheel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wheel: Path = module.build_wheel(base)
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the wheel, the fresh venv's bin/)"""
    base = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(base)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, timeout=600)
    yield wheel, venv / "bin"


def test_the_wheel_carries_the_builtin_profiles(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        for name in BUILT_IN:
            shipped = archive.read(f"nonod/data/profiles/{name}.json")
            assert shipped == (REPO / "profiles" / f"{name}.json").read_bytes()


class _InstalledDaemon:
    def __init__(self, bin_dir: Path, base: Path) -> None:
        self.bin = bin_dir
        self.work = base / "work"
        self.work.mkdir()
        self.env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(base),
                    "LANG": "C.UTF-8", "XDG_RUNTIME_DIR": str(base / "run"),
                    "XDG_STATE_HOME": str(base / "state"),
                    "XDG_CONFIG_HOME": str(base / "config"),
                    "NONO_SOCKET": str(base / "nonod.sock"), "NONO_NO_AUTOSTART": "1"}

    def nonoctl(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "nonoctl"), *args], capture_output=True,
                              text=True, env=self.env, cwd=self.work, timeout=120, check=False,
                              input=stdin)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="nw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(installed: tuple[Path, Path], short_tmp: Path,
           secret_service: SecretService) -> Iterator[_InstalledDaemon]:  # noqa: F811
    """The installed ``nonod`` (in the foreground, its default), ready (READY=1), with a real
    Secret Service on its session bus: gitbot's routes need their secrets to launch."""
    _, bin_dir = installed
    handle = _InstalledDaemon(bin_dir, short_tmp)
    handle.env["DBUS_SESSION_BUS_ADDRESS"] = secret_service.env["DBUS_SESSION_BUS_ADDRESS"]
    notify_path = short_tmp / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        proc = subprocess.Popen([str(bin_dir / "nonod"), "--socket", handle.env["NONO_SOCKET"]],
                                cwd=handle.work,
                                env={**handle.env, "NOTIFY_SOCKET": str(notify_path)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert b"READY=1" in notify.recv(4096)
            yield handle
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def test_an_installed_nonoctl_lists_and_launches_the_builtin_gitbot(
    daemon: _InstalledDaemon,
) -> None:
    where = subprocess.run(
        [str(daemon.bin / "python"), "-c", "import nonod; print(nonod.__file__)"],
        capture_output=True, text=True, env=daemon.env, cwd=daemon.work, check=True).stdout
    assert where.startswith(str(daemon.bin.parent)), where  # the wheel's copy, not the tree

    listed = daemon.nonoctl("profile", "list")
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert set(BUILT_IN) <= names, listed.stdout

    dry = daemon.nonoctl("launch", "gitbot", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "network:     allowlist of 3 hosts" in dry.stdout

    # gitbot's two routes refuse the launch until their secrets are in the daemon's keychain.
    for name in ("gemini", "github_token"):
        stored = daemon.nonoctl("secret", "set", name, stdin=f"test-{name}-value\n")
        assert stored.returncode == 0, stored.stderr
    # The system's python3: the venv's lies outside what gitbot grants.
    ran = daemon.nonoctl("launch", "gitbot", "--", "/usr/bin/python3", "-c",
                         "import os; print('gitbot ran in', os.getcwd())")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"gitbot ran in {daemon.work}"
