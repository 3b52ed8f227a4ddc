"""Which users' refused calls the kernel reports to the daemon: the uids with live sessions.

The daemon's tag (the loginuid every session process carries) is no secret: any local user
may read it from a session process's ``/proc/<pid>/loginuid`` and, its own loginuid being
unset, write it to its own. Rules that matched the tag alone reported that user's refused
calls too (red team's twenty-sixth pass). So each rule also names a real uid: the daemon
holds the tag's rules of the uids that have a live session, and of those only.

- ``admit(uid)``: one more live session of ``uid``; at its first (no rule for it yet) the
  rules are added, in a worker thread, before the call returns: the launch path waits for
  them (about 25 µs each here), the program runs after. Later sessions of the uid cost a
  dictionary lookup.
- ``leave(uid)``: one less; after the last, a task of the monitor removes the uid's rules
  once ``linger`` seconds passed with no session of it, counted from the end of its last
  session, not of an earlier one (a user's sessions launched one after another keep them),
  off every launch's and end's path (a removal takes the kernel about 10 ms). A launch of
  that uid meanwhile waits for the removal, then adds them again.
- ``remaining()``: the rules still held, for the monitor's teardown.

The kernel compares the rule's uid with the calling task's real kuid, the host's uid
whatever user namespace the task is in (a session's namespace maps its uid to itself only).
Adds and removals are requests on two sockets of their own, one request on each at a time.
"""

from __future__ import annotations

import functools
import math
from typing import Final, final

import structlog
import trio

from ._kaudit_netlink import KernelAudit, exit_rule
from ._kaudit_records import DENIED_ERRNOS

log = structlog.get_logger()

#: Seconds a uid's rules outlive its last session (``leave``).
RULE_LINGER: Final = 10.0


def presence_rule(arch: int, tag: int, key: bytes) -> bytes:
    """The rule an instance holds while it runs, sessions or not: it matches no call (no
    syscall in its mask) and says to the other instances that this one needs auditing on
    (``_teardown_locked``: the last one out disables it)."""
    return exit_rule(arch, {}, tag, DENIED_ERRNOS[0], key)


@final
class UidRules:
    """The tag's rules of each uid with a live session (see the module's docstring)."""

    def __init__(self, adder: KernelAudit, remover: KernelAudit, *, arch: int,
                 syscalls: dict[int, str], tag: int, key: bytes,
                 linger: float = RULE_LINGER) -> None:
        self._adder = adder
        self._remover = remover
        self._rules = functools.partial(_uid_rules, arch, syscalls, tag, key)
        self.linger = linger
        self._live: dict[int, int] = {}  # uid: its live sessions
        self._installed: dict[int, list[bytes]] = {}  # uid: its rules in the kernel
        self._removing: dict[int, trio.Event] = {}  # uid: set when its rules are gone
        #: uid: when its last session ended (trio time): its removal is due ``linger`` later.
        self._left: dict[int, float] = {}
        self._adding = trio.Lock()
        self._removals = trio.Lock()
        self._retiring = 0  # removal tasks not done
        self._settled = trio.Event()
        self._settled.set()
        self._nursery: trio.Nursery | None = None

    def installed(self) -> frozenset[int]:
        return frozenset(self._installed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Hold the removal tasks until cancelled (``open_fs_denied_monitor``'s nursery).
        Once it is over, a :meth:`leave` schedules no removal: the monitor's teardown removes
        every rule of its key (a daemon cancelled from outside ends this task before its
        sessions' shielded ends leave)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def admit(self, uid: int) -> bool:
        """Count a live session of ``uid``; its rules are in the kernel when this returns
        True. False: the kernel refused them (logged; the session is not counted)."""
        self._live[uid] = self._live.get(uid, 0) + 1
        try:
            while uid not in self._installed:
                removed = self._removing.get(uid)
                if removed is not None:  # wait for the removal, then add them again
                    await removed.wait()
                    continue
                async with self._adding:
                    if uid in self._installed or uid in self._removing:
                        continue
                    rules = self._rules(uid)
                    try:
                        await trio.to_thread.run_sync(_add_all, self._adder, rules)
                    except OSError as exc:
                        log.warning("fs_denied: the kernel refused a user's audit rules",
                                    uid=uid, errno=exc.errno)
                        self.leave(uid)
                        return False
                    self._installed[uid] = rules
        except BaseException:  # cancelled (the launch is refused): not counted
            self.leave(uid)
            raise
        return True

    def leave(self, uid: int) -> None:
        """One session of ``uid`` is over (admitted before); after its last, its rules are
        removed ``linger`` seconds later if no session of it started meanwhile."""
        if not self._forget(uid) or self._nursery is None:
            return
        self._left[uid] = trio.current_time()
        self._retiring += 1
        self._settled = trio.Event()
        try:
            self._nursery.start_soon(self._retire, uid)
        except RuntimeError:  # closed to new tasks: ``run`` is ending (the teardown removes)
            self._retired()

    def _retired(self) -> None:
        self._retiring -= 1
        if not self._retiring:
            self._settled.set()

    async def settled(self) -> None:
        """Wait until every removal asked so far is done (or found needless)."""
        await self._settled.wait()

    def remaining(self) -> list[bytes]:
        """Every rule still in the kernel (the monitor's teardown removes them)."""
        return [rule for rules in self._installed.values() for rule in rules]

    def _forget(self, uid: int) -> bool:
        """One live session of ``uid`` less; True when it was the last."""
        left = self._live[uid] - 1
        if left:
            self._live[uid] = left
            return False
        del self._live[uid]
        return True

    async def _retire(self, uid: int) -> None:
        try:
            await trio.sleep(self.linger)
            if uid in self._live or uid in self._removing:
                return
            if trio.current_time() < self._left.get(uid, -math.inf) + self.linger:
                return  # a later last session ended since: its own removal is due later
            self._left.pop(uid, None)
            if uid not in self._installed:
                return
            rules = self._installed.pop(uid)
            removed = self._removing[uid] = trio.Event()
            try:
                async with self._removals:
                    await trio.to_thread.run_sync(_remove_all, self._remover, rules)
            finally:
                del self._removing[uid]
                removed.set()
        finally:
            self._retired()


def _uid_rules(arch: int, syscalls: dict[int, str], tag: int, key: bytes, uid: int
               ) -> list[bytes]:
    return [exit_rule(arch, syscalls, tag, code, key, uid) for code in DENIED_ERRNOS]


def _add_all(audit: KernelAudit, rules: list[bytes]) -> None:
    """Add ``rules``, all or none (those added are removed again if one is refused). One
    already there (a removal the kernel refused) counts as added."""
    added: list[bytes] = []
    try:
        for rule in rules:
            try:
                audit.add_rule(rule)
            except FileExistsError:
                pass
            added.append(rule)
    except OSError:
        _remove_all(audit, added)
        raise


def _remove_all(audit: KernelAudit, rules: list[bytes]) -> None:
    for rule in rules:
        try:
            audit.delete_rule(rule)
        except OSError as exc:
            log.warning("fs_denied: could not remove an audit rule", errno=exc.errno)


__all__ = ["RULE_LINGER", "UidRules", "presence_rule"]
