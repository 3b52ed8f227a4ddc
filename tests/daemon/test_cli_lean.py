"""``nonoctl launch`` on the lean path (``nonoctl._lean``) against a real daemon: the same
output, errors and exit statuses as the full path, and none of the full client's imports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

import nonoctl

from .conftest import DaemonThread
from .test_cli import cli_env

#: The tree and the dependencies' site-packages, as a wheel install's ``sys.path`` has them.
_PATH = os.pathsep.join(str(Path(package.__file__).parents[1]) for package in (nonoctl, msgspec))
#: ``nonoctl`` as the console script runs it (the lean path first), and the full path alone.
_LEAN = "{prelude}\nfrom nonoctl.__main__ import main\nmain()\n"
_FULL = "import sys\nfrom nonoctl._cli import main\nsys.exit(main(sys.argv[1:]))\n"
#: What the full client imports and the lean path must not.
_FULL_ONLY = ("msgspec", "nonod.protocol", "typing", "re", "socket", "enum", "json", "datetime",
              "argparse", "pathlib", "signal", "nonoctl._cli", "nonoctl.client")


def _nonoctl(daemon: DaemonThread, cwd: Path, code: str, *words: str,
             **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**cli_env(daemon.socket, cwd), "PYTHONPATH": _PATH, **env}
    return subprocess.run([sys.executable, "-S", "-c", code, *words], env=environ, cwd=cwd,
                          capture_output=True, text=True, check=False, timeout=60,
                          stdin=subprocess.DEVNULL)


_IMPORTED = ("import atexit, sys\natexit.register(lambda: print(sorted(\n"
             f"    m for m in sys.modules if m in {_FULL_ONLY!r}), file=sys.stderr))")


def test_an_attached_launch_imports_none_of_the_full_client(daemon_thread: DaemonThread,
                                                            short_tmp: Path) -> None:
    done = _nonoctl(daemon_thread, short_tmp, _LEAN.format(prelude=_IMPORTED), "launch",
                    "--allow-cwd", "--", "sh", "-c", "echo ran; exit 4")
    assert (done.returncode, done.stdout) == (4, "ran\n"), done.stderr
    assert done.stderr.splitlines()[-1] == "[]"


def test_ps_imports_none_of_the_full_client(daemon_thread: DaemonThread,
                                            short_tmp: Path) -> None:
    _nonoctl(daemon_thread, short_tmp, _LEAN.format(prelude="pass"), "launch", "--allow-cwd",
             "--", "true")
    done = _nonoctl(daemon_thread, short_tmp, _LEAN.format(prelude=_IMPORTED), "ps", "-a")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "ID", "NAME", "STATE", "PID", "PROFILE", "STARTED", "COMMAND"]
    assert "exited (0)" in done.stdout and "true" in done.stdout
    assert done.stderr == "['datetime']\n"  # the start times; nothing else of the above


@pytest.mark.parametrize("words", [
    ("launch", "--allow-cwd", "--", "sh", "-c", "echo out; echo err >&2; exit 3"),
    ("run", "--allow-cwd", "--", "sh", "-c", "kill -TERM $$"),
    ("launch", "--allow-cwd", "--", "/no/such/program"),
    ("launch", "--allow-cwd", "--", "."),
    ("launch", "no-such-profile", "--", "true"),
    ("launch", "--allow-cwd", "--memory", "1K", "--", "true"),  # the daemon refuses it
    ("launch", "--allow-cwd", "--name", "bad name", "--", "true"),
    ("launch", "--allow-cwd"),
])
def test_the_lean_path_says_and_exits_as_the_full_path(
        words: tuple[str, ...], daemon_thread: DaemonThread, short_tmp: Path) -> None:
    lean = _nonoctl(daemon_thread, short_tmp, _LEAN.format(prelude="pass"), *words)
    full = _nonoctl(daemon_thread, short_tmp, _FULL, *words)
    assert (lean.returncode, lean.stdout, lean.stderr) == (
        full.returncode, full.stdout, full.stderr)
    assert lean.returncode != 0 or words[0] != "launch"



def _no_ages(text: str) -> str:
    return re.sub(r"\b(\d+[smhd] ago|just now)", "AGE", text)


def test_ps_lists_as_the_full_path_lists(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    lean = _LEAN.format(prelude="pass")
    for command in (["sleep", "60"], ["sh", "-c", "kill -TERM $$"], ["sh", "-c", "exit 3"],
                    ["printf", "tab\\tthere"]):
        _nonoctl(daemon_thread, short_tmp, lean, "launch", "-d", "--allow-cwd", "--name",
                 f"s{len(command[-1])}", "--", *command)
    # The three short ones end on their own: compare once they have (CI once listed printf's
    # as running on the lean path, a moment before the full path's list).
    deadline = time.monotonic() + 60
    while len(_nonoctl(daemon_thread, short_tmp, _FULL, "ps", "-q").stdout.split()) > 1:
        assert time.monotonic() < deadline, "the short sessions did not end"
        time.sleep(0.05)
    # (``--json`` declines: the full path's own; its usage figures move between two runs)
    for words in (("ps",), ("ps", "-a"), ("ps", "-q"), ("ps", "-a", "-q"), ("ps", "extra")):
        got = _nonoctl(daemon_thread, short_tmp, lean, *words)
        want = _nonoctl(daemon_thread, short_tmp, _FULL, *words)
        assert (got.returncode, _no_ages(got.stdout), got.stderr) == (
            want.returncode, _no_ages(want.stdout), want.stderr), words
    _nonoctl(daemon_thread, short_tmp, lean, "stop", "s2")


def test_version_is_the_full_paths(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    lean = _nonoctl(daemon_thread, short_tmp, _LEAN.format(prelude=_IMPORTED), "--version")
    full = _nonoctl(daemon_thread, short_tmp, _FULL, "--version")
    assert (lean.returncode, lean.stdout) == (full.returncode, full.stdout) == (0, lean.stdout)
    assert lean.stdout.startswith("nonoctl ") and lean.stderr == "[]\n"
