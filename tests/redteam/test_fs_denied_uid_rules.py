"""Another local user with no session, carrying the daemon's tag, reaches no reader.

The daemon's kernel audit rules matched one loginuid, the daemon's tag, which every
session's processes carry and any user may read (``/proc/<pid>/loginuid``) and write to its
own unset loginuid: that user's refused calls reached the daemon's fs_denied reader
(twenty-sixth pass, its residual risk). Now each rule also names a real uid, held while that
uid has a live session (``nonod.audit._kaudit_rules.UidRules``). Real kernel audit (root),
real ``useradd`` users: the session's user and an outsider with none.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from nonod.audit import FsDenied, _kaudit_rules
from nonod.audit._errors import AuditWriteError
from nonod.audit._kaudit_netlink import AUDIT_UID, KernelAudit, nonod_rules, rule_values
from nonod.audit._kaudit_records import SYSCALL, parse_record
from nonod.audit._kaudit_rules import UidRules
from nonod.audit._kernel import FsDeniedMonitor, open_fs_denied_monitor
from nonod.sessions._audit import SessionAudit
from tests.audit.test_fs_denied import needs_root, needs_unset_loginuid
from tests.daemon.localusers import LocalUser, local_users
from tests.proctree import wait_until
from tests.redteam.test_fs_denied_outsider import ATTACKER as OUTSIDER

from ..daemon.conftest import DaemonThread
from ..daemon.conftest import short_tmp as short_tmp
from ..daemon.test_cli import CLI, cli_env

pytestmark = needs_unset_loginuid

#: A session's process: writes the tag, says its audit session, is refused ``argv[2]``
#: opens (one path each, under root's 0700 home), then waits for its stdin to close.
SESSION = r"""
import os, sys
open("/proc/self/loginuid", "w").write(sys.argv[1])
print(open("/proc/self/sessionid").read(), flush=True)
for i in range(int(sys.argv[2])):
    try:
        os.open(f"/root/nono-kaudit-{i}", os.O_RDONLY)
    except PermissionError:
        pass
print("refused", flush=True)
sys.stdin.read()
"""


@asynccontextmanager
async def _monitor(linger: float = 0) -> AsyncIterator[tuple[FsDeniedMonitor, dict[int, int]]]:
    """The daemon's monitor, and the count by caller uid of the kernel records of its rules
    that reached its reader (``SYSCALL`` records with its key)."""
    async with open_fs_denied_monitor("auto", linger=linger) as monitor:
        if not monitor.active:
            pytest.fail(f"kernel audit should work as root here: {monitor.status}")
        reached: dict[int, int] = {}
        dispatch = monitor.dispatch
        ours = f'key="nonod:{os.getpid()}"'

        def counted(kind: int, text: str) -> None:
            if kind == SYSCALL and ours in text:
                uid = int(parse_record(text)[1]["uid"])
                reached[uid] = reached.get(uid, 0) + 1
            dispatch(kind, text)

        monitor.dispatch = counted  # type: ignore[method-assign]
        yield monitor, reached


async def _read_all_so_far(monitor: FsDeniedMonitor) -> None:
    """Every record the kernel queued so far has been read (a flush marker came back)."""
    assert await monitor.release(monitor.watch(2**31 - 78, lambda _e: None), timeout=30)


def _start_session(user: LocalUser, tag: int, refused: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*user.prefix(), sys.executable, "-S", "-c", SESSION, str(tag),
                             str(refused)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    assert proc.stdout is not None
    ses = int(proc.stdout.readline())
    assert proc.stdout.readline() == "refused\n"
    return proc, ses


async def _tagged_calls(monitor: FsDeniedMonitor, user: LocalUser, refused: int) -> None:
    """A process of ``user`` with the tag, refused ``refused`` opens, over, and read."""
    session, _ = _start_session(user, monitor.tag, refused)
    session.communicate("")
    await _read_all_so_far(monitor)


async def _outsider_flood(outsider: LocalUser, target: int, count: int) -> None:
    done = await trio.run_process([*outsider.prefix(), sys.executable, "-S", "-c", OUTSIDER,
                                   str(target), str(count)], capture_stdout=True, cwd="/")
    assert done.stdout == b"done\n"


async def _removal_under_way(monitor: FsDeniedMonitor, uid: int) -> UidRules:
    """A session of ``uid`` admitted and over: its rules' removal has begun (linger 0)."""
    rules = monitor.rules
    assert rules is not None
    assert await monitor.admit(uid)
    monitor.leave(uid)
    await trio.testing.wait_all_tasks_blocked()  # its removal task is in the kernel
    assert uid in rules._removing, "the removal is not under way"
    return rules


def _rule_uids() -> list[int]:
    """The uids this process's rules name (one entry per rule), as the kernel lists them."""
    audit = KernelAudit()
    try:
        return sorted(rule_values(body)[AUDIT_UID] for key, body in nonod_rules(audit)
                      if key == f"nonod:{os.getpid()}" and AUDIT_UID in rule_values(body))
    finally:
        audit.close()


@needs_root
async def test_a_user_without_a_session_carrying_the_tag_reaches_no_reader(
        short_tmp: Path) -> None:
    """A session of one user is live (its rules in the kernel); another user, with no
    session, reads the tag from the session's process and makes refused calls under it.
    Before: each one reached the daemon's reader (parsed on its loop, kept as early denials
    of an audit session nobody has). Now: none does; the session's own still do."""
    async with _monitor() as (monitor, reached):
        with local_users(short_tmp, 2) as (member, outsider):
            assert await monitor.admit(member.uid)
            session, _ = _start_session(member, monitor.tag, 3)
            try:
                await _outsider_flood(outsider, session.pid, 40)
                await _read_all_so_far(monitor)
            finally:
                session.communicate("")
    assert reached.get(outsider.uid, 0) == 0, reached  # before: 40
    assert reached.get(member.uid, 0) == 3, reached


@needs_root
async def test_a_session_gets_every_denial_while_an_outsider_floods(short_tmp: Path) -> None:
    """The uid rules leave a session's own denials whole: each of its refused opens is in
    its watch, none said missing, while a user with no session floods under the tag."""
    async with _monitor() as (monitor, _):
        with local_users(short_tmp, 2) as (member, outsider):
            assert await monitor.admit(member.uid)
            seen: list[FsDenied] = []
            session, ses = _start_session(member, monitor.tag, 12)
            try:
                watch = monitor.watch(ses, seen.append)
                await _outsider_flood(outsider, session.pid, 80)
            finally:
                session.communicate("")
            assert await monitor.release(watch, timeout=30)
            monitor.leave(member.uid)
    assert sorted(e.path for e in seen) == sorted(f"/root/nono-kaudit-{i}" for i in range(12))
    assert not [e for e in seen if e.lost or e.suppressed]


@needs_root
async def test_a_users_rules_go_after_its_last_session(short_tmp: Path) -> None:
    """Two sessions of one user: its three rules are added at the first, kept while either
    lives, and removed after the last; from then on its tagged calls reach no reader."""
    async with _monitor(linger=0) as (monitor, reached):
        with local_users(short_tmp, 1) as (member,):
            assert await monitor.admit(member.uid)
            assert await monitor.admit(member.uid)
            assert _rule_uids() == [member.uid] * 3
            monitor.leave(member.uid)
            assert monitor.rules is not None
            await monitor.rules.settled()
            assert _rule_uids() == [member.uid] * 3  # its other session is live
            monitor.leave(member.uid)
            await monitor.rules.settled()
            assert _rule_uids() == []
            assert monitor.rules.installed() == frozenset()
            await _tagged_calls(monitor, member, 5)  # no session of it now
    assert reached.get(member.uid, 0) == 0, reached


@needs_root
async def test_a_launch_after_a_removal_began_waits_for_it_and_adds_them_again(
        short_tmp: Path) -> None:
    """A user's last session ends and its rules' removal is under way (the kernel takes
    milliseconds per rule) when its next session is admitted: the admission waits for the
    removal and adds the rules again, so the new session's denials are reported."""
    async with _monitor(linger=0) as (monitor, reached):
        with local_users(short_tmp, 1) as (member,):
            await _removal_under_way(monitor, member.uid)
            assert await monitor.admit(member.uid)
            assert _rule_uids() == [member.uid] * 3
            await _tagged_calls(monitor, member, 2)
    assert reached.get(member.uid, 0) == 2, reached


@needs_root
async def test_a_session_ending_after_the_daemon_was_cancelled_leaves_without_error(
        short_tmp: Path) -> None:
    """A daemon cancelled from outside (its nursery's cancel) ends the monitor's tasks at
    once, its sessions' shielded ends after: their leave raised (the removal tasks' nursery
    was closed), which hung the daemon's shutdown with a session's record left unwritten.
    Now it schedules nothing, and the monitor's teardown removes the uid's rules."""
    with local_users(short_tmp, 1) as (member,):
        with trio.CancelScope() as daemon:
            async with _monitor(linger=60) as (monitor, _):
                assert await monitor.admit(member.uid)
                assert monitor.rules is not None
                daemon.cancel()
                with trio.CancelScope(shield=True):  # as ``Registry.shutdown`` runs
                    await trio.testing.wait_all_tasks_blocked()  # the monitor's tasks ended
                    monitor.leave(member.uid)
                    await monitor.rules.settled()
                    assert _rule_uids() == [member.uid] * 3  # not removed yet
        assert _rule_uids() == []


@needs_root
async def test_a_launch_refused_while_it_waited_for_the_rules_is_not_counted(
        short_tmp: Path) -> None:
    """A launch cancelled while its admission waits (here for a removal under way) leaves
    no live session counted: the uid's rules still go."""
    async with _monitor(linger=0) as (monitor, _):
        with local_users(short_tmp, 1) as (member,):
            rules = await _removal_under_way(monitor, member.uid)
            with trio.move_on_after(0):
                await monitor.admit(member.uid)
            await rules.settled()
            # The user's next session: its rules come and go with it alone.
            assert await monitor.admit(member.uid)
            assert _rule_uids() == [member.uid] * 3
            monitor.leave(member.uid)
            await rules.settled()
            assert _rule_uids() == []
            assert rules.installed() == frozenset()


@needs_root
def test_the_daemon_holds_a_users_rules_while_its_session_lives(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the daemon: a launch adds the rules of the uid its program runs as before
    the program runs (its first call's denial is reported), they stay while it runs, and
    the session's end removes them. (Before: the tag's rules named no uid.)"""
    monkeypatch.setattr(_kaudit_rules, "RULE_LINGER", 0.0)
    work = short_tmp / "work"
    work.mkdir()
    daemon = DaemonThread(short_tmp, config='[audit]\nfs_denied = "auto"\n').start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp), work)
        assert _rule_uids() == []
        started = run("launch", "-d", "--allow-cwd", "--", "/usr/bin/python3", "-S", "-c",
                      "import os, time\ntry: os.open('/usr/nono-kaudit', os.O_CREAT)\n"
                      "except OSError: pass\ntime.sleep(600)\n")
        assert started.returncode == 0, started.stderr
        assert _rule_uids() == [os.geteuid()] * 3  # its program runs as the daemon's user
        assert run("stop", "--force", started.stdout.strip()).returncode == 0
        assert run("wait", started.stdout.strip()).returncode == 128 + 9
        wait_until("the session's user's rules are removed", lambda: _rule_uids() == [])
    finally:
        daemon.stop()
    [audit_file] = list(daemon.state_dir.rglob("audit.ndjson"))
    assert "/usr/nono-kaudit" in audit_file.read_text()


@needs_root
def test_a_launch_refused_after_its_program_started_keeps_no_rules(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch whose enforcement record cannot be written (the daemon's disk full; the
    write's failure is injected here) kills its program and is refused after the program
    ran: its admission was never left, so its uid's rules stayed in the kernel until the
    daemon stopped, and its fs_denied watch in the monitor. Now the refusal releases both."""
    monkeypatch.setattr(_kaudit_rules, "RULE_LINGER", 0.0)

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise AuditWriteError("cannot write to audit.ndjson: No space left on device")

    monkeypatch.setattr(SessionAudit, "started", disk_full)
    work = short_tmp / "work"
    work.mkdir()
    daemon = DaemonThread(short_tmp, config='[audit]\nfs_denied = "auto"\n').start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp), work)
        refused = run("launch", "-d", "--allow-cwd", "--", "/usr/bin/sleep", "600")
        assert refused.returncode != 0, refused.stdout
        assert "No space left" in refused.stderr, refused.stderr
        # before: the uid's three rules stayed for as long as the daemon ran
        wait_until("the refused launch's user's rules are removed",
                   lambda: _rule_uids() == [], timeout=5)
    finally:
        daemon.stop()


#: A daemon's monitor in a process of its own: a session of uid 65534 admitted, then it
#: says so and waits to be killed.
CRASHING = r"""
import sys, trio
from nonod.audit._kernel import open_fs_denied_monitor

async def main():
    async with open_fs_denied_monitor("auto") as monitor:
        assert monitor.active and await monitor.admit(65534)
        print("admitted", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


@needs_root
async def test_a_crashed_daemons_uid_rules_go_at_the_next_start() -> None:
    """A daemon killed while a uid's rules are held leaves them; the next one to start
    removes every rule of the dead pid, its presence rule and the uid's."""
    crashed = subprocess.Popen([sys.executable, "-c", CRASHING], stdout=subprocess.PIPE,
                               text=True, cwd=Path(__file__).resolve().parents[2])
    assert crashed.stdout is not None
    try:
        assert "admitted\n" in iter(crashed.stdout.readline, ""), "it did not start"
    finally:
        crashed.kill()
        crashed.wait()
    audit = KernelAudit()
    try:
        left = [body for key, body in nonod_rules(audit) if key == f"nonod:{crashed.pid}"]
        assert sorted(rule_values(body).get(AUDIT_UID, -1) for body in left) == [
            -1, 65534, 65534, 65534]
        async with open_fs_denied_monitor("auto") as monitor:
            assert monitor.active
            assert not [key for key, _ in nonod_rules(audit)
                        if key == f"nonod:{crashed.pid}"]
    finally:
        audit.close()


@needs_root
async def test_a_users_rules_outlive_its_last_session_by_the_linger_not_its_first(
        short_tmp: Path, autojump_clock: trio.testing.MockClock) -> None:
    """review22: each last session's end scheduled a removal ``linger`` seconds later, and
    the first to wake removed the rules if no session of the uid was live at that moment,
    though a later one had ended only now: a user's sessions one after another (a short
    one every 6 s with a 10 s linger) lost and added again their rules every 10 s, the
    next launch waiting for the removal. Now the rules go ``linger`` seconds after the
    uid's last session ended."""
    async with _monitor(linger=10) as (monitor, _):
        rules = monitor.rules
        assert rules is not None
        with local_users(short_tmp, 1) as (member,):
            assert await monitor.admit(member.uid)
            monitor.leave(member.uid)  # t=0: its first session is over
            await trio.sleep(6)
            assert await monitor.admit(member.uid)
            monitor.leave(member.uid)  # t=6: its next, over too
            await trio.sleep(6)  # t=12: 6 s after its last session
            assert _rule_uids() == [member.uid] * 3
            await rules.settled()  # t=16: 10 s after its last session
            assert _rule_uids() == []
