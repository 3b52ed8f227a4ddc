"""Red team, core dumps handed to the host's helper: where ``core_pattern`` is a pipe
(systemd-coredump, apport), the kernel runs that helper as root, in the host's namespaces, for
any crashing process whose core limit is not exactly 1 byte, and feeds it the process's
memory; a limit of 0 stops only file dumps. Sessions ran with 0 (soft and hard), which they
could not raise but could keep, so a session's crash reached the host's helper. They run with
1 byte now, the kernel's "no dump at all", and seccomp keeps them from lowering it to 0.

The pipe itself is exercised only when ``NONO_TEST_CORE_PATTERN=1`` (it changes the host's
``core_pattern`` for a few seconds, for every process on the machine)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_cli import CLI
from tests.redteam._programs import ATTEMPT

pytestmark = pytest.mark.root

#: Prints the core limit as the kernel shows it and what changing it answers, then crashes.
CRASH = ATTEMPT + r'''
import os, resource, signal, sys
def checked(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), "")
def limit(soft, hard):
    return ctypes.byref((ctypes.c_ulong * 2)(soft, hard))
CORE = resource.RLIMIT_CORE
line = next(l for l in open("/proc/self/limits") if l.startswith("Max core file size"))
print("limits", *line.split()[4:6])
attempt("setrlimit-0", lambda: checked(libc.setrlimit(CORE, limit(0, 0))))
attempt("setrlimit-soft-0", lambda: checked(libc.setrlimit(CORE, limit(0, 1))))
attempt("prlimit-0", lambda: checked(libc.prlimit(0, CORE, limit(0, 0), None)))
attempt("prlimit-read", lambda: checked(libc.prlimit(0, CORE, None, limit(0, 0))))
print("after", *resource.getrlimit(resource.RLIMIT_CORE))
sys.stdout.flush()
if sys.argv[1:] == ["crash"]:
    os.kill(os.getpid(), signal.SIGSEGV)
'''


def test_a_session_keeps_its_one_byte_core_limit(run: CLI, short_tmp: Path) -> None:
    (short_tmp / "crash.py").write_text(CRASH)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "crash.py", "crash")
    assert done.returncode == 128 + signal.SIGSEGV, done
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines == {"limits": "1 1", "setrlimit-0": "EPERM", "setrlimit-soft-0": "EPERM",
                     "prlimit-0": "EPERM", "prlimit-read": "ok", "after": "1 1"}, done.stdout
    assert not [p for p in short_tmp.iterdir() if p.name.startswith("core")]


@pytest.fixture
def pipe_pattern(short_tmp: Path) -> Iterator[Path]:
    """The host's ``core_pattern`` pointed at a helper that records each crash it is handed."""
    if os.environ.get("NONO_TEST_CORE_PATTERN") != "1":
        pytest.skip("changes the host's core_pattern: set NONO_TEST_CORE_PATTERN=1")
    marks = short_tmp / "marks"
    marks.mkdir()
    helper = short_tmp / "helper.sh"
    helper.write_text(f"#!/bin/sh\nhead -c 4 > {marks}/$1.$2\n")
    helper.chmod(0o755)
    pattern = Path("/proc/sys/kernel/core_pattern")
    before = pattern.read_text()
    pattern.write_text(f"|{helper} %e %P")
    try:
        yield marks
    finally:
        pattern.write_text(before)


def test_a_crashing_session_never_reaches_a_pipe_helper(run: CLI, short_tmp: Path,
                                                        pipe_pattern: Path) -> None:
    # The control: a host process with a core limit of 0 is handed to the helper.
    control = subprocess.run(["/usr/bin/python3", "-S", "-c", "import os, resource, signal;"
                              "resource.setrlimit(resource.RLIMIT_CORE, (0, 0));"
                              "os.kill(os.getpid(), signal.SIGSEGV)"], check=False)
    assert control.returncode == -signal.SIGSEGV
    # The kernel feeds the helper before the crashing process is gone: its mark is there.
    assert list(pipe_pattern.iterdir()), "the helper never ran for the control"
    for path in pipe_pattern.iterdir():
        path.unlink()
    (short_tmp / "crash.py").write_text(CRASH)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "crash.py", "crash")
    assert done.returncode == 128 + signal.SIGSEGV, done
    assert list(pipe_pattern.iterdir()) == []
