"""The service definitions: systemd units pass `systemd-analyze verify`, the plist parses."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("nonod.service", "nonod.socket", "nonod-system.service")


def _installed_copy(tmp: Path) -> Path:
    """The units as an installation would place them: ExecStart points at our nonod."""
    nonod = Path(sys.executable).with_name("nonod")
    assert nonod.exists(), "the nonod console script is not installed in this environment"
    out = tmp / "units"
    out.mkdir()
    for name in UNITS:
        text = (REPO / "systemd" / name).read_text()
        text = text.replace("%h/.local/bin/nonod", str(nonod))
        text = text.replace("/usr/local/bin/nonod", str(nonod))
        (out / name).write_text(text)
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian: apt install systemd)")
def test_systemd_units_verify(tmp_path: Path) -> None:
    units = _installed_copy(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / name) for name in UNITS)],
        capture_output=True, text=True, check=False, cwd=units,
    )
    problems = [line for line in done.stderr.splitlines()
                if any(name in line for name in UNITS)]
    assert done.returncode == 0 and not problems, done.stderr


def test_units_keep_what_the_daemon_relies_on() -> None:
    user = (REPO / "systemd" / "nonod.service").read_text()
    system = (REPO / "systemd" / "nonod-system.service").read_text()
    for text in (user, system):
        assert "Type=notify" in text
        assert "KillMode=mixed" in text
        assert "\nRestrictNamespaces=" not in text and "\nPrivateUsers=" not in text
        assert "\nProtectHome=" not in text and "\nPrivateNetwork=" not in text
    # nonod stays in the foreground by default: Type=notify needs the daemon's own pid.
    assert "ExecStart=/usr/local/bin/nonod --system\n" in system
    assert "ExecStart=%h/.local/bin/nonod\n" in user
    assert "--daemonize" not in user + system
    assert "ListenStream=%t/nono/nonod.sock" in (REPO / "systemd" / "nonod.socket").read_text()


def test_launchd_plist_parses() -> None:
    with open(REPO / "launchd" / "sh.nono.nonod.plist", "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "sh.nono.nonod"
    assert plist["ProgramArguments"] == ["/usr/local/bin/nonod"]  # foreground by default
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
