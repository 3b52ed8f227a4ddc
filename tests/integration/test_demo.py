"""``make demo`` end to end: the seed's story runs on this machine and every expectation holds.

The demo is run as a user runs it (``python -m nonoctl.demo``, a subprocess): a real keyring, a
real ``nonod``, a real sandboxed bot, fake APIs. Besides its exit status, the lines that carry
the story are checked here, so that a demo that says ``[ok]`` too easily is caught too.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nonoctl.demo import GEMINI_KEY, GITHUB_TOKEN

TOOLS = ("dbus-run-session", "gnome-keyring-daemon", "secret-tool")


@pytest.fixture(scope="module")
def demo() -> str:
    """The demo's output, run once for the module's tests."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make system-deps installs them)")
    process = subprocess.Popen([sys.executable, "-m", "nonoctl.demo"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the demo then stops nonod, the keyring and the session itself.
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"the demo took more than 60 s:\n{out}{err}")
    assert process.returncode == 0, out + err
    return out


def test_every_check_passes_and_everything_is_removed(demo: str) -> None:
    assert "[FAIL]" not in demo
    assert re.search(r"^nono demo: all \d+ checks passed", demo, re.MULTILINE)
    base = re.search(r"^\s+\$DEMO = (/tmp/nono-demo-\S+)$", demo, re.MULTILINE)
    assert base is not None
    assert not Path(base.group(1)).exists()


def test_the_fake_apis_received_the_real_keys(demo: str) -> None:
    assert re.search(r"POST /v1beta/models/[\w.-]+:generateContent  "
                     rf"x-goog-api-key: {re.escape(GEMINI_KEY)}$", demo, re.MULTILINE)
    for what in ("labels", "comments"):
        assert re.search(rf"POST /repos/[\w-]+/[\w-]+/issues/42/{what}  "
                         rf"Authorization: Bearer {re.escape(GITHUB_TOKEN)}$",
                         demo, re.MULTILINE)
    assert '200 {"triaged": 42, "label": "bug"' in demo
    assert '401 {"error": "bad signature"}' in demo


def test_the_bot_only_ever_had_phantom_tokens(demo: str) -> None:
    shown = re.search(r"^\s+in full: ([0-9a-f]{64})$", demo, re.MULTILINE)
    assert shown is not None
    phantom = shown.group(1)
    assert phantom != GITHUB_TOKEN
    assert re.search(rf"^\s+GITHUB_TOKEN={phantom}$", demo, re.MULTILINE)
    assert re.search(r"^\s+GEMINI=[0-9a-f]{64}$", demo, re.MULTILINE)
    # The real values appear only where the demo stores them and where the fakes got them.
    for line in demo.splitlines():
        if GITHUB_TOKEN in line or GEMINI_KEY in line:
            assert re.search(r"secret-tool store|Bearer ghp_|x-goog-api-key|401 unless", line), line


def test_ssh_is_out_of_reach_and_the_audit_record_verifies(demo: str) -> None:
    assert '403 {"read_ssh": "denied"' in demo
    assert re.search(r"credential_injected\s+gemini \(keychain\)", demo)
    assert re.search(r"^\s+OK [0-9a-f]{8}: \d+ events", demo, re.MULTILINE)
    assert "[ok]   nonod shut down cleanly (exit 0)" in demo
