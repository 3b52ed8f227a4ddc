"""Another local user, with no part in nono, pushes a session's first denials out of the
daemon's audit unsaid.

The daemon's kernel audit rules match one loginuid, the daemon's tag, which every session's
processes carry; ``/proc/<pid>/loginuid`` is readable by every user, and a process whose
loginuid is unset may write any value to its own (no privilege needed: the kernel gives it a
fresh audit session). So any local user whose processes have no loginuid (a service's, a
container's) can make refused calls that the daemon's rules report, each under an audit
session of its own. The daemon keeps the denials of sessions it does not watch yet (a
program runs before its launch returns) for 64 sessions at most: 64 such processes pushed a
session's early denials out, and the session's audit had neither them nor a word that some
were missing. Now the user with the most early sessions loses its oldest first, and what is
dropped is said at the session's watch. Real kernel audit (root), a real second user
(``useradd``) as the attacker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from nonod.audit import FsDenied
from nonod.audit._kernel import EARLY_SESSIONS, FsDeniedMonitor
from nonod.audit._render import summarize
from tests.audit.test_fs_denied import needs_root, needs_unset_loginuid
from tests.daemon.localusers import local_users

pytestmark = needs_unset_loginuid

VICTIM = r"""
import os, sys
open("/proc/self/loginuid", "w").write(sys.argv[1])
print(open("/proc/self/sessionid").read(), flush=True)
if os.getuid() == 0:  # the first test: the session is uid 65534
    os.setgid(65534); os.setuid(65534)
try:
    os.open("/etc/shadow", os.O_RDONLY)
except PermissionError:
    print("refused", flush=True)
sys.stdin.readline()
"""

#: The attacker: reads the tag from the victim's process, then makes N refused opens, each
#: in a fresh process that wrote the tag to its own loginuid (a fresh audit session each).
ATTACKER = r"""
import os, sys
tag = open(f"/proc/{sys.argv[1]}/loginuid").read()
for _ in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:
        open("/proc/self/loginuid", "w").write(tag)
        try:
            os.open("/etc/shadow", os.O_RDONLY)
        except PermissionError:
            os._exit(0)
        os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0
print("done", flush=True)
"""


async def _read_all_so_far(monitor: FsDeniedMonitor) -> None:
    """Wait until the reader has read every record the kernel queued so far (a flush
    marker comes back after them), through a watch of an audit session nobody has."""
    assert await monitor.release(monitor.watch(2**31 - 77, lambda _e: None), timeout=30)


async def _victims_audit_after_a_flood(base: Path, *, by_its_own_user: bool
                                       ) -> list[FsDenied]:
    """A session's first denial kept for its watch, then a flood of ``EARLY_SESSIONS + 8``
    audit sessions by a fresh real user (the session's own user too, or not); what the
    session's watch then gets."""
    from nonod.audit import _kernel

    async with _kernel.open_fs_denied_monitor("auto") as monitor:
        if not monitor.active:
            pytest.fail(f"kernel audit should work as root here: {monitor.status}")
        with local_users(base, 1) as (flooder,):
            # The session's user has a live session (its rules are in the kernel).
            assert await monitor.admit(flooder.uid if by_its_own_user else 65534)
            victim = subprocess.Popen(
                [*(flooder.prefix() if by_its_own_user else []), sys.executable, "-S", "-c",
                 VICTIM, str(monitor.tag)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
            assert victim.stdin is not None and victim.stdout is not None
            try:
                ses = int(victim.stdout.readline())
                assert victim.stdout.readline() == "refused\n"
                await _read_all_so_far(monitor)  # its denial is kept for its watch now
                done = await trio.run_process(
                    [*flooder.prefix(), sys.executable, "-S", "-c", ATTACKER,
                     str(victim.pid), str(EARLY_SESSIONS + 8)],
                    capture_stdout=True, cwd="/")
                assert done.stdout == b"done\n"
                await _read_all_so_far(monitor)
                seen: list[FsDenied] = []
                assert await monitor.release(monitor.watch(ses, seen.append), timeout=30)
            finally:
                victim.communicate("\n")
    return seen


@needs_root
async def test_another_users_audit_sessions_do_not_push_a_sessions_denials_out(
        short_tmp: Path) -> None:
    seen = await _victims_audit_after_a_flood(short_tmp, by_its_own_user=False)
    # Its refused open is in its audit: the other user's audit sessions were pushed out, not
    # the session's (before: nothing at all, not even that denials may be missing).
    assert [(e.path, e.lost) for e in seen] == [("/etc/shadow", 0)], seen


@needs_root
async def test_a_users_own_audit_sessions_pushed_out_are_said_missing(short_tmp: Path) -> None:
    """The same flood by the session's own user: its first denial is pushed out by that
    user's other audit sessions, and its audit says that denials may be missing."""
    seen = await _victims_audit_after_a_flood(short_tmp, by_its_own_user=True)
    assert [e.path for e in seen if not e.lost] == []
    (lost,) = [e for e in seen if e.lost]
    assert summarize(lost).startswith("some denials may be missing"), summarize(lost)
