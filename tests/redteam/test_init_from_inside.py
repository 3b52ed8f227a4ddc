"""The session's init (``nono-reaper``), reached from the program by another name than its
pid: ``setpriority(PRIO_USER)`` and ``ioprio_set(IOPRIO_WHO_USER)`` change every process of
the uid in the program's namespaces, and the init runs with the program's uid there, so the
program reniced it to 19 and put it in the idle I/O class (the forwarding of its signals, its
answers to the creation guard and the exit record then wait behind everything else). The
filter's ``protect_init`` refused those calls on pid 1 and process group 1 only; it now
refuses the per-uid forms too (redteam18)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from nonod.sandbox import LaunchRequest, _cinit, open_launcher

from ..conftest import SandboxUser
from ..proctree import wait_until
from ..sandbox.test_cinit import POLICY, _c_init_waiting
from ..sandbox.test_createguard import AFTER_REAPER, layout_policy
from ..sandbox.test_createguard import layout as layout  # the fixture
from ..sandbox.test_sandbox import probe

pytestmark = pytest.mark.userns

#: The program renices and re-classes every process of its uid, then reads what its init
#: got: nice 0 and I/O priority 0 (none set) must stay.
BY_UID = (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "IOPRIO_SET, IOPRIO_GET = 251, 252\n"  # x86_64
    "def sc(*a):\n"
    "    r = libc.syscall(*a)\n"
    "    if r < 0:\n"
    "        raise OSError(ctypes.get_errno(), 'syscall')\n"
    "    return r\n"
    "t(lambda: os.setpriority(os.PRIO_USER, 0, 19))\n"
    "t(lambda: os.setpriority(os.PRIO_USER, os.getuid(), 19))\n"
    "t(lambda: sc(IOPRIO_SET, 3, 0, 3 << 13))\n"  # IOPRIO_WHO_USER, the idle class
    "t(lambda: sc(IOPRIO_SET, 3, os.getuid(), 3 << 13))\n"
    "t(lambda: os.setpriority(os.PRIO_PROCESS, 0, 1))\n"  # its own: still its to change
    "print('init', os.getpriority(os.PRIO_PROCESS, 1), sc(IOPRIO_GET, 1, 1), flush=True)\n"
)
WANT = ["EPERM"] * 4 + ["OK ", "init 0 0"]


def test_the_init_is_not_reniced_through_its_uid(sandbox_user: SandboxUser,
                                                 layout: tuple[Path, Path]) -> None:
    """Before: every call ``OK`` and the init at nice 19, I/O priority 24576 (idle)."""
    home, work = layout
    r = sandbox_user.run(layout_policy(home, work), probe(AFTER_REAPER + BY_UID),
                         cwd=str(work), env=(("HOME", str(home)),), timeout=60)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == WANT


async def test_the_c_init_is_not_reniced_through_its_uid(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same from a warm launch the C init (``nono-reaper --init``) covers."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "")
    r, w = os.pipe()
    async with open_launcher("namespaces") as launcher:
        await (await launcher.launch(POLICY, LaunchRequest(argv=("/bin/true",), cwd="/usr"))
               ).wait_exited()
        wait_until("a C init ready", lambda: _c_init_waiting(launcher.pid))
        proc = await launcher.launch(POLICY, LaunchRequest(
            argv=tuple(probe(BY_UID)), cwd="/usr"), stdio=(0, w, 2))
        os.close(w)
        with trio.fail_after(30):
            status = await proc.wait_exited()
    with os.fdopen(r, "rb") as out:
        lines = out.read().decode().splitlines()
    assert status.code == 0, lines
    assert lines == WANT
