"""Red team, thirty-first pass: a uid 0 session in the landlock-only mode and the host's
files' metadata (docs/security-model.md). Landlock (ABI 7) does not check ``chmod``,
``utimes``, ACLs or extended attributes, and without a mount namespace every path of the
host is the session's to name; the kernel lets a file's owner change its mode without any
capability, and root owns the system. A root session ran and set the modes of
``/etc/passwd``, ``/etc/shadow`` and ``/usr/bin/passwd`` (here to what they were: ``OK``
each; ``chmod 0666 /etc/passwd`` would have given every local user root). The mode's report
said only that "chmod ... are not checked by Landlock".

Closed as the mode's other missing protections are: a uid 0 session in the landlock-only
mode is refused unless its profile accepts the layer by name, ``host_metadata``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nonod.sandbox import LaunchRequest
from tests.conftest import SandboxUser
from tests.redteam import _landlock_only as landlock_only
from tests.redteam._landlock_only import PYTHON

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root session needs root")

#: Each file's mode set to what it is: nothing changes, whoever may.
SAME_MODE = r"""
import errno, os, sys
for path in sys.argv[1:]:
    try:
        os.chmod(path, os.stat(path).st_mode & 0o7777)
        print(path, "OK")
    except OSError as e:
        print(path, errno.errorcode[e.errno])
"""
SYSTEM = ("/etc/passwd", "/etc/shadow", "/usr/bin/passwd")
BASE = ("persistence", "creation_guard", "host_proc")


def _run(work: Path, accept: tuple[str, ...]) -> tuple[int, str, str]:
    root = SandboxUser("root", 0, [sys.executable], {})
    before = {p: os.stat(p).st_mode for p in SYSTEM}
    r = root.run_request(landlock_only.policy(work, accept=accept),
                         LaunchRequest(argv=(PYTHON, "-S", "-c", SAME_MODE, *SYSTEM),
                                       cwd=str(work)), nouserns=True)
    assert before == {p: os.stat(p).st_mode for p in SYSTEM}
    return r.code, r.stdout, r.stderr


def test_a_root_session_without_a_view_needs_accepting(world_tmp: Path) -> None:
    """Before: it ran, ``OK`` for each of the three."""
    code, out, err = _run(world_tmp, BASE)
    assert code == 125 and "OK" not in out, out
    assert "host_metadata:" in err and "every file root owns" in err, err
    assert '"allow_degraded": ["host_metadata"]' in err, err


def test_a_root_session_that_accepts_it_runs_and_says_so(world_tmp: Path) -> None:
    code, out, err = _run(world_tmp, (*BASE, "host_metadata"))
    assert code == 0, err
    # A set-id file's mode is not set again with its set-id bit: the seccomp filter refuses
    # any mode with S_ISUID/S_ISGID (docs/seccomp.md, set-id programs), whoever owns it.
    assert out.split() == [w for p in SYSTEM for w in (
        p, "EPERM" if os.stat(p).st_mode & 0o6000 else "OK")]
    assert "accepted by the profile: " in err and "host_metadata (" in err, err
