"""Red team, host terminal injection: a session's name, argv, cwd and output are printed on the
user's terminal by ``nonoctl ps``, ``inspect`` and ``logs --output``. Nothing the session chose
may act on that terminal: no OSC (window title, clipboard), no screen clearing or cursor games,
no C1 controls, no bidirectional overrides. Colours (SGR) in program output may pass."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest

from nonoctl._sanitize import OutputFilter
from tests.daemon.test_cli import CLI

# OSC 0 (title), OSC 52 (clipboard write), clear screen, cursor up, 8-bit CSI, RTL override.
HOSTILE = "\x1b]0;owned\x07\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\x1b[1A\u009b31m\u202e"
# Anything that acts on a terminal other than a colour.
_ACTING = re.compile(r"\x1b(?!\[[0-9;:]*m)|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f\u0080-\u009f"
                     r"\u202a-\u202e\u2066-\u2069]")


def _on_a_terminal(run: CLI, *args: str) -> str:
    """nonoctl's stdout and stderr as a terminal would receive them."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "nonoctl", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=run.env, cwd=run.cwd)
    os.close(slave)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer is gone
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(60) == 0, seen
    finally:
        os.close(master)
    return seen.decode("utf-8", "replace")


def test_session_argv_and_output_never_drive_the_host_terminal(run: CLI) -> None:
    # The hostile text leads the argv (ps shows its start) and is the program's output.
    script = f": '{HOSTILE}'; printf '%s\\033[32mgreen\\033[0m\\n' \"$0\"; exec sleep 600"
    started = run("launch", "-d", "--name", "evil", "--allow-cwd", "--", "sh", "-c",
                  script, HOSTILE)
    assert started.returncode == 0, started.stderr
    session = started.stdout.strip()
    try:
        detail = json.loads(run("inspect", session, "--json").stdout)
        assert HOSTILE in detail["argv"]  # the data is intact where it is data
        for args in (("ps",), ("inspect", session), ("logs", "--output", session)):
            shown = _on_a_terminal(run, *args)
            assert not _ACTING.search(shown), (args, shown)
            assert "\\x1b]0;owned" in shown, (args, shown)  # shown, escaped, not obeyed
        shown = _on_a_terminal(run, "logs", "--output", session)
        assert "\x1b[32mgreen\x1b[0m" in shown  # colours still act
        raw = _on_a_terminal(run, "logs", "--output", "--raw", session)
        assert "\x1b]0;owned\x07" in raw  # asked for: the bytes as written
    finally:
        run("stop", "--force", session)


@pytest.mark.parametrize("cut", range(1, 12))
def test_a_sequence_cut_across_chunks_is_judged_whole(cut: int) -> None:
    data = b"a\x1b[31mred\x1b]0;t\x07\r\nz\xc2\x9b"
    safe = OutputFilter()
    out = safe.feed(data[:cut]) + safe.feed(data[cut:]) + safe.feed(b"", final=True)
    assert out == b"a\x1b[31mred\\x1b]0;t\\x07\r\nz\\x9b"
