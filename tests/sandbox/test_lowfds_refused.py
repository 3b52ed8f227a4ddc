"""A direct warm init that ends before it says ``r`` (its ``close_range(...,
CLOSE_RANGE_UNSHARE)`` refused, killed, its setup failed) must not leave the fork server
waiting: the server's own low slot holds a copy of the init's end of the ``go`` socket
until the init said ``r`` (``_lowfds``), so the end of the init alone is no end of file there.

The kernel refuses the unshare here for real: the script runs the fork server under a
seccomp filter that answers ``close_range`` with ``CLOSE_RANGE_UNSHARE`` ``ENOMEM``, what
the kernel says when it cannot allocate the new table (a memory cgroup at its limit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nonod.sandbox._cinit import FORCE_PYTHON

pytestmark = pytest.mark.userns

ROOT = Path(__file__).resolve().parents[2]  # the script imports the tests' policy from here

SCRIPT = r"""
import errno, struct, trio
from nonod.sandbox import LaunchRequest, _libc, open_launcher
from nonod.sandbox._seccomp import (SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, install_filter)
from nonod.sandbox._syscalls import native_arch

insn = struct.Struct("=HBBI")
close_range = native_arch().nr("close_range")
program = b"".join(insn.pack(*i) for i in (
    (0x20, 0, 0, 0),                 # A = nr
    (0x15, 0, 3, close_range),       # nr == close_range, else allow
    (0x20, 0, 0, 32),                # A = low word of the third argument (flags)
    (0x45, 0, 1, _libc.CLOSE_RANGE_UNSHARE),
    (0x06, 0, 0, SECCOMP_RET_ERRNO | errno.ENOMEM),
    (0x06, 0, 0, SECCOMP_RET_ALLOW),
))
_libc.prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
install_filter(program)

from tests.sandbox.test_warm_direct import POLICY as policy

async def main():
    async with open_launcher("namespaces") as launcher:
        for _ in range(3):
            proc = await launcher.launch(policy, LaunchRequest(argv=("/bin/true",), cwd="/"))
            print((await proc.wait_exited()).code, flush=True)

trio.run(main)
"""


def test_a_direct_init_that_cannot_take_its_own_table_does_not_stall_the_server() -> None:
    """Each launch is served (cold, once the warm direct init failed) within the timeout;
    before, the fork server waited for the dead init's ``r`` for ever after the first."""
    env = {**os.environ, FORCE_PYTHON: "1"}  # the Python direct init (``_Warm._direct``)
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                              timeout=60, env=env, check=False, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fork server stalled: {exc.stdout!r}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "0", "0"], proc.stdout
