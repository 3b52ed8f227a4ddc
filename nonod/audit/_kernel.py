"""Filesystem denials seen by the kernel's audit subsystem (``fs_denied`` events).

Most refusals in a session never reach Landlock: absent paths are absent from the session's
view (ENOENT), denied paths are masked by mode-000 mounts (EACCES from the permission check),
read-only grants are read-only mounts (EROFS). What all of them share is a failing system
call, so the observer asks the kernel to report exactly that:

  1. At daemon start (root in the initial user namespace only), ``AUDIT_GET`` the status;
     enable auditing if it is off and the mode allows it (remembered, undone at shutdown).
  2. Rules left by a dead daemon (their pid is gone) are removed; a presence rule (it
     matches no call) says the instance needs auditing on. For each uid with a live session
     (``_kaudit_rules.UidRules``, added before its first session's program runs, removed
     after its last): syscall-exit rules for file system calls, ``auid`` equal to the tag,
     real ``uid`` equal to that uid, exit code -EACCES, -EPERM or -EROFS, key
     ``nonod:<daemon pid>``. (The tag alone is readable and writable by any user whose
     loginuid is unset: the uid keeps users with no session out.)
  3. Each launcher writes the tag to ``/proc/self/loginuid`` before it leaves the initial
     user namespace (or the fork server lends it its own for the init's ``clone``:
     ``nonod.sandbox._loginuid``); the kernel gives it a fresh audit session id (``ses=``),
     which the launch reports with the init's pid. The program cannot change either.
  4. A reader bound to the audit multicast group gathers records by serial (SYSCALL, CWD,
     PATH..., LANDLOCK_ACCESS, EOE), turns each group into a :class:`Denial`, and hands it to
     the session watching that ``ses``, rate-limited.
  5. At shutdown: every rule of our key removed; the last nonod instance out (no ``nonod:``
     rules left) disables auditing again if a nonod instance enabled it (``ENABLED_MARKER``).

The record parsing and classification (``_kaudit_records``) are pure and tested without a
kernel; ``_kaudit_netlink`` is the netlink client; this module's ``open_fs_denied_monitor``
runs it all for the daemon.
"""

from __future__ import annotations

import array
import contextlib
import errno as _errno
import functools
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, Literal, NamedTuple, final

import outcome
import structlog
import trio

from . import _kaudit_rules
from ._events import FsDenied
from ._kaudit_netlink import (
    AUDIT_NLGRP_READLOG,
    AUDIT_TRUSTED_APP,
    ENABLED_MARKER,
    KEY_PREFIX,
    NETLINK_AUDIT,
    NLMSG,
    KernelAudit,
    KernelAuditUnavailable,
    check_host,
    host_setup_lock,
    nonod_rules,
    pid_alive,
)
from ._kaudit_records import (
    ASSEMBLED,
    MECHANISM,
    Assembler,
    Denial,
    RateLimiter,
    to_event,
)
from ._kaudit_rules import UidRules, presence_rule

log = structlog.get_logger()

FsDeniedMode = Literal["auto", "kernel", "off"]

# ----------------------------------------------------------------------------- monitor

Sink = Callable[[FsDenied], None]
EARLY_SESSIONS: Final = 64
DROP_WARN_INTERVAL: Final = 10.0
READ_BATCH: Final = 64  # records read per wake-up of the reader
EARLY_PER_SESSION: Final = 64
#: Audit sessions whose early denials were dropped (``_keep_early``), remembered so that
#: their watch says some are missing; past this many, the oldest is forgotten and every
#: session up to its id is told so (ids only grow).
EARLY_DROPPED_KEPT: Final = 4096


@final
class Watch:
    """One session's subscription to its denials (see :meth:`FsDeniedMonitor.watch`)."""

    def __init__(self, ses: int, sink: Sink, limiter: RateLimiter) -> None:
        self.ses = ses
        self._sink = sink
        self._limiter = limiter
        self.delivered = 0
        #: Times records of this session may have been missed: an overrun of the reader while
        #: it was watched (the kernel dropped records, whose unknown), or the flush marker
        #: at its end not back in time.
        self.lost = 0

    def deliver(self, denial: Denial) -> None:
        record, owed, last = self._limiter.admit(denial)
        if owed and last is not None:
            self._sink(to_event(last, suppressed=owed))
        if record:
            self.delivered += 1
            self._sink(to_event(denial))

    def count_dropped(self) -> bool:
        return self._limiter.count_dropped()

    def finish(self) -> None:
        owed, last = self._limiter.take_suppressed()
        if owed and last is not None:
            self._sink(to_event(last, suppressed=owed))
        if self.lost:  # the session's record says that some of its denials may be missing
            self._sink(FsDenied(path="", operation="", mechanism=MECHANISM, lost=self.lost))


@final
class _Flush:
    """One flush marker and the releases waiting for it (``FsDeniedMonitor.release_started``).
    ``arrived`` is set when it comes back, or when its send failed (``refused``)."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(8)
        self.arrived = trio.Event()
        self.refused: BaseException | None = None
        self.waiters = 0


@final
class FsDeniedMonitor:
    """The daemon's observer. ``status`` is ``kernel-audit`` or ``unavailable: <why>``;
    ``tag`` is the loginuid launchers write (0 when unavailable)."""

    def __init__(self, status: str, tag: int = 0, *, syscalls: dict[int, str] | None = None,
                 per_second: int = 20, rules: UidRules | None = None) -> None:
        self.status = status
        self.tag = tag
        #: The tag's rules of each uid with a live session (None: no kernel audit).
        self.rules = rules
        self._per_second = per_second
        self._watches: dict[int, Watch] = {}
        # Denials of a session not watched yet: the program runs before the launch returns.
        self._early: dict[int, list[Denial]] = {}
        self._early_by_uid: dict[int, dict[int, None]] = {}  # uid: its early sessions, in order
        self._early_dropped: dict[int, None] = {}  # in the order they were dropped
        self._dropped_upto = 0  # the highest id forgotten from ``_early_dropped``
        self._assembler = Assembler(f"{KEY_PREFIX}{os.getpid()}", syscalls or {},
                                    counted=self._counted)
        self._markers: dict[str, _Flush] = {}
        self._audit: KernelAudit | None = None
        # One request at a time on the audit socket, from a thread: see ``_send_queued``.
        self._sending = False
        #: The marker not sent yet that the releases asked now wait for (``release_started``).
        self._queued: _Flush | None = None

    @property
    def active(self) -> bool:
        return self.tag != 0

    def statistics(self) -> dict[str, int]:
        return {"sessions": len(self._watches)}

    async def admit(self, uid: int) -> bool:
        """A session of ``uid`` is about to start: the kernel reports its refused calls once
        this returns True (``UidRules.admit``; its first session waits for the rules). Each
        True is matched by one :meth:`leave` at the session's end."""
        return self.rules is None or await self.rules.admit(uid)

    def leave(self, uid: int) -> None:
        """A session :meth:`admit` let in is over (its uid's rules go after its last)."""
        if self.rules is not None:
            self.rules.leave(uid)

    def watch(self, ses: int, sink: Sink) -> Watch:
        """Deliver the denials of audit session ``ses`` to ``sink`` until :meth:`release`."""
        w = Watch(ses, sink, RateLimiter(self._per_second))
        self._watches[ses] = w
        if ses in self._early_dropped or ses <= self._dropped_upto:
            self._early_dropped.pop(ses, None)
            w.lost += 1  # denials of its start were dropped before it was watched
        early = self._early.pop(ses, ())
        if early:
            self._early_forget(early[0].uid, ses)
        for denial in early:
            w.deliver(denial)
        return w

    async def release(self, watch: Watch, *, timeout: float = 2.0) -> bool:
        """Wait until every record the kernel queued so far has been read (a marker sent
        now comes back after them), then stop delivering to ``watch``. False: the marker
        did not come back in time (denials queued before it may be missing)."""
        return await self.release_started(watch, timeout=timeout)()

    def release_started(self, watch: Watch, *, timeout: float = 2.0
                        ) -> Callable[[], Awaitable[bool]]:
        """:meth:`release` as a wait the caller awaits once (always: it stops the delivery).
        The marker goes out now, from a worker thread (see ``_send_queued``), never from the
        event loop: the kernel's round trip overlaps whatever the caller does before it waits
        (a session's end reads its usage meanwhile).

        One marker serves every release asked before it goes out: while the one request
        thread is busy (the previous marker is still in the kernel) the releases asked
        meanwhile join one queued marker, sent the moment the thread is free. One user's
        hundreds of sessions ending at once used to queue as many markers, one at a time,
        ahead of another user's end."""
        if self._audit is None:
            async def finish() -> bool:
                self._stop(watch)
                return True

            return finish
        flush = self._queued
        if flush is None:
            flush = self._queued = _Flush()
            self._markers[flush.nonce] = flush
            self._send_queued()
        flush.waiters += 1

        async def wait() -> bool:
            flushed = False
            try:
                with trio.move_on_after(timeout):
                    await flush.arrived.wait()
                if flush.refused is not None:
                    if not isinstance(flush.refused, OSError):
                        raise flush.refused
                    log.warning("fs_denied: flush marker refused", errno=flush.refused.errno)
                else:
                    flushed = flush.arrived.is_set()
                    if not flushed:
                        log.warning("fs_denied: flush marker did not come back",
                                    timeout=timeout)
            finally:
                flush.waiters -= 1
                if not flush.waiters:  # nobody waits for it any more
                    self._markers.pop(flush.nonce, None)
                    if self._queued is flush:
                        self._queued = None
                if not flushed:  # denials still queued in the kernel are not read now
                    watch.lost += 1
                self._stop(watch)
            return flushed

        return wait

    def _send_queued(self) -> None:
        """Hand the queued marker to a worker thread, unless the one request thread is busy
        (it comes back here when it is free). From then on, a release waits for the next
        marker: this one may already be in the kernel.

        Sent from a thread: while the kernel's audit backlog is full (a session looping on
        refused calls fills it) the kernel makes every sender of an audit request sleep,
        uninterruptibly, until it drains: that must stall the sessions' ends, not the
        daemon's event loop. The thread may outlive the waits (a full backlog, the
        timeout); no other marker goes out before it returns. What the send raised ends the
        waits for that marker."""
        flush, audit = self._queued, self._audit
        if flush is None or self._sending:
            return
        self._queued = None
        if audit is None:  # the monitor is closing: the marker would never come back
            flush.refused = OSError(_errno.ESHUTDOWN, "the fs_denied monitor is closing")
            flush.arrived.set()
            return
        self._sending = True
        token = trio.lowlevel.current_trio_token()

        def finished(result: outcome.Outcome[None]) -> None:  # back on the event loop
            self._sending = False
            if isinstance(result, outcome.Error):
                flush.refused = result.error
                flush.arrived.set()
            self._send_queued()

        def deliver(result: outcome.Outcome[None]) -> None:  # in the worker thread
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(finished, result)

        trio.lowlevel.start_thread_soon(
            functools.partial(audit.user_message, f"nonod-flush={flush.nonce}"), deliver,
            name="nonod fs_denied flush")

    def _stop(self, watch: Watch) -> None:
        """Stop delivering to ``watch`` (what its rate limit suppressed is reported first)."""
        self._watches.pop(watch.ses, None)
        watch.finish()

    def _counted(self, ses: int) -> bool:
        """Whether a call of audit session ``ses`` was counted as dropped (its session over
        its rate limit) without being parsed: a session looping on refused calls costs the
        daemon's loop a lookup per record past its limit, not a parse. So does one not
        watched (yet, or ever: another user's, see ``_keep_early``) past its early bound:
        what it would have kept is dropped, and its watch will say so."""
        watch = self._watches.get(ses)
        if watch is None:
            return (ses in self._early_dropped
                    and len(self._early.get(ses, ())) >= EARLY_PER_SESSION)
        return watch.count_dropped()

    def dispatch(self, kind: int, text: str) -> None:
        """One record from the multicast group."""
        if kind == AUDIT_TRUSTED_APP:
            for nonce, flush in self._markers.items():
                if f"nonod-flush={nonce}" in text:
                    flush.arrived.set()
            return
        try:
            denial = self._assembler.feed(kind, text)
            if denial is None:
                return
            w = self._watches.get(denial.ses)
            if w is None:
                self._keep_early(denial)
            else:
                w.deliver(denial)
        except Exception:  # one record never ends the reader, nor with it the daemon
            log.exception("fs_denied: a kernel record could not be handled", kind=kind)

    def _keep_early(self, denial: Denial) -> None:
        """Keep a denial for the session that will watch its ``ses``, bounded. Anyone whose
        loginuid is unset may write the daemon's tag (readable in any session process's
        ``/proc/<pid>/loginuid``) and make denials under audit sessions of its own, as many
        as it likes: past the bound, the uid with the most early sessions loses its oldest
        (``_early_evict``), and what is dropped is remembered by session, so that its watch
        says so."""
        early = self._early.get(denial.ses)
        if early is None:
            if len(self._early) >= EARLY_SESSIONS:
                self._early_dropped_for(self._early_evict())
            early = self._early[denial.ses] = []
            self._early_by_uid.setdefault(denial.uid, {})[denial.ses] = None
        if len(early) < EARLY_PER_SESSION:
            early.append(denial)
        else:
            self._early_dropped_for(denial.ses)

    def _early_evict(self) -> int:
        """Drop the oldest early session of the uid that has the most (one user making
        audit sessions by the hundred pushes out its own first, not another user's)."""
        uid = max(self._early_by_uid, key=lambda u: len(self._early_by_uid[u]))
        ses = self._early_forget(uid)
        del self._early[ses]
        return ses

    def _early_forget(self, uid: int, ses: int | None = None) -> int:
        """Take ``ses`` (the oldest of ``uid``'s when None) off ``uid``'s early sessions."""
        of_uid = self._early_by_uid[uid]
        if ses is None:
            ses = next(iter(of_uid))
        del of_uid[ses]
        if not of_uid:
            del self._early_by_uid[uid]
        return ses

    def _early_dropped_for(self, ses: int) -> None:
        self._early_dropped[ses] = None
        if len(self._early_dropped) > EARLY_DROPPED_KEPT:
            forgotten = next(iter(self._early_dropped))
            del self._early_dropped[forgotten]
            self._dropped_upto = max(self._dropped_upto, forgotten)

    async def _read(self, sock: trio.socket.SocketType) -> None:
        """Each record is a datagram of its own: up to READ_BATCH are read per wake-up, with
        plain reads (not a trip through the event loop each), then the loop's other tasks
        (every session's proxy) have their turn."""
        overruns, warned = 0, -DROP_WARN_INTERVAL
        fd = sock.fileno()
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(READ_BATCH):
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != _errno.ENOBUFS:
                        raise
                    # A flood outran us: some records are lost (suppressed counts become
                    # lower bounds), of any session watched now (the flood's or another's):
                    # each one's audit says so at its end. Logged at most every
                    # DROP_WARN_INTERVAL seconds.
                    overruns += 1
                    for watch in self._watches.values():
                        watch.lost += 1
                    if time.monotonic() - warned >= DROP_WARN_INTERVAL:
                        warned = time.monotonic()
                        log.warning("fs_denied: audit records were dropped (reader too slow)",
                                    overruns=overruns)
                    continue
                self._records(data)

    def _records(self, data: bytes) -> None:
        """The netlink messages in one datagram."""
        offset = 0
        while offset + NLMSG.size <= len(data):
            length, kind, _, _, _ = NLMSG.unpack_from(data, offset)
            if length < NLMSG.size:
                break
            body = data[offset + NLMSG.size:offset + length]
            offset += (length + 3) & ~3
            self.dispatch(kind, body.rstrip(b"\x00").decode("utf-8", "replace"))


class _HostSetup(NamedTuple):
    """What ``_setup`` made: its socket, whether it enabled auditing, the syscall table."""

    audit: KernelAudit
    enabled_here: bool
    arch: int
    syscalls: dict[int, str]


def _our_key() -> bytes:
    return f"{KEY_PREFIX}{os.getpid()}".encode()


def _setup(mode: FsDeniedMode, tag: int) -> _HostSetup:
    arch, syscalls = check_host()
    try:
        audit = KernelAudit()
    except OSError as exc:
        raise KernelAuditUnavailable(f"no audit netlink socket ({os.strerror(exc.errno or 0)})"
                                     ) from exc
    with host_setup_lock():
        enabled_here = _setup_locked(audit, mode, tag, arch)
    return _HostSetup(audit, enabled_here, arch, syscalls)


def _setup_locked(audit: KernelAudit, mode: FsDeniedMode, tag: int, arch: int) -> bool:
    """Auditing on, dead instances' rules gone, this one's presence rule added (the rules
    that report calls are each uid's, ``UidRules``). True: auditing was enabled here."""
    enabled_here = False
    try:
        enabled, auditd = audit.status()
        if enabled == 2:
            raise KernelAuditUnavailable("the audit configuration is locked (enabled=2)")
        if enabled == 0:
            if mode == "auto" and auditd:
                raise KernelAuditUnavailable(
                    f"auditing is disabled and an audit daemon (pid {auditd}) manages it; "
                    'set [audit] fs_denied = "kernel" to enable it anyway')
            _enable(audit)
            enabled_here = True
        for key, body in nonod_rules(audit):
            owner = key.removeprefix(KEY_PREFIX)
            if owner.isdigit() and not pid_alive(int(owner)):
                audit.delete_rule(body)  # left by a daemon that died without cleaning up
        audit.add_rule(presence_rule(arch, tag, _our_key()))
        if audit.status()[0] == 0:  # another instance disabled it while we were adding
            _enable(audit)
            enabled_here = True
    except OSError as exc:
        _teardown_locked(audit, enabled_here)
        raise KernelAuditUnavailable(
            f"the kernel refused the audit set-up ({os.strerror(exc.errno or 0)})") from exc
    except BaseException:
        _teardown_locked(audit, enabled_here)
        raise
    return enabled_here


def _enable(audit: KernelAudit) -> None:
    audit.set_enabled(1)
    with open(ENABLED_MARKER, "w") as f:
        f.write(f"{os.getpid()}\n")


def _teardown(audit: KernelAudit, enabled_here: bool) -> None:
    with host_setup_lock():
        _teardown_locked(audit, enabled_here)


def _teardown_locked(audit: KernelAudit, enabled_here: bool) -> None:
    """Every rule of this instance removed (its presence rule, each uid's still held: as
    listed by the kernel, whatever a removal left), auditing disabled again by the last
    instance out if one of them enabled it; ``audit`` closed."""
    ours = _our_key().decode()
    try:
        for key, rule in nonod_rules(audit):
            if key != ours:
                continue
            try:
                audit.delete_rule(rule)
            except OSError as exc:
                log.warning("fs_denied: could not remove an audit rule", errno=exc.errno)
        # The last nonod instance out disables auditing if one of us enabled it, whichever.
        if (enabled_here or os.path.exists(ENABLED_MARKER)) and not nonod_rules(audit):
            audit.set_enabled(0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ENABLED_MARKER)
    except OSError as exc:
        log.warning("fs_denied: could not restore the audit status", errno=exc.errno)
    finally:
        audit.close()


#: The record types the reader is given (``_reader_socket``): those the assembler reads, and
#: the flush markers.
READ_TYPES: Final = frozenset({*ASSEMBLED, AUDIT_TRUSTED_APP})
_SO_ATTACH_FILTER: Final = 26
_BPF_INSN: Final = struct.Struct("HBBI")
_BPF_LDH_ABS: Final = 0x28  # BPF_LD | BPF_H | BPF_ABS: A = the 16 bits at k (big-endian)
_BPF_JEQ_K: Final = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_RET_K: Final = 0x06  # BPF_RET | BPF_K
_NLMSG_TYPE_AT: Final = 4  # nlmsghdr: u32 length, then u16 type (host order)


def record_type_filter(kinds: frozenset[int]) -> bytes:
    """A classic BPF socket filter (``SO_ATTACH_FILTER``'s instructions) that keeps the
    netlink messages whose type is one of ``kinds`` and drops the others in the kernel.

    The audit multicast group carries every audit record of the host: each session's own
    ``LOGIN`` and ``PROCTITLE`` (its launcher writes the tag to ``loginuid``), other
    programs' (``sshd``, PAM, other rules). The assembler passes over all of them, but only
    after each woke the daemon's reader and was read, decoded and looked at on its event
    loop; dropped here they cost neither, nor a place in the socket's receive buffer."""
    wanted = sorted(kinds)
    # ``ld h`` loads the type in network byte order; the kernel writes it in the host's.
    swap = sys.byteorder == "little"
    program = [_BPF_INSN.pack(_BPF_LDH_ABS, 0, 0, _NLMSG_TYPE_AT)]
    for i, kind in enumerate(wanted):
        value = ((kind & 0xFF) << 8 | kind >> 8) if swap else kind
        # Equal: jump to the last instruction (keep); else on to the next comparison.
        program.append(_BPF_INSN.pack(_BPF_JEQ_K, len(wanted) - i, 0, value))
    program.append(_BPF_INSN.pack(_BPF_RET_K, 0, 0, 0))  # none matched: drop
    program.append(_BPF_INSN.pack(_BPF_RET_K, 0, 0, 0xFFFFFFFF))  # keep it whole
    return b"".join(program)


def _attach_filter(sock: socket.socket, kinds: frozenset[int]) -> None:
    """Attach :func:`record_type_filter` to ``sock``; a kernel that refuses it only costs
    the reader the records it would have dropped (the assembler passes over them)."""
    code = array.array("B", record_type_filter(kinds))  # the kernel copies it at the call
    # struct sock_fprog: unsigned short len; (padding;) struct sock_filter *filter
    fprog = struct.pack("HL", len(code) // _BPF_INSN.size, code.buffer_info()[0])
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        log.info("fs_denied: the reader takes every audit record (no socket filter)",
                 errno=exc.errno)


def _reader_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    try:
        _attach_filter(sock, READ_TYPES)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((0, AUDIT_NLGRP_READLOG))
    except OSError as exc:
        sock.close()
        raise KernelAuditUnavailable(
            f"cannot read the audit multicast group ({os.strerror(exc.errno or 0)}; "
            "needs CAP_AUDIT_READ)") from exc
    return sock


def _rule_sockets() -> tuple[KernelAudit, KernelAudit]:
    """The sockets ``UidRules`` adds and removes rules on (each one request at a time)."""
    try:
        adder = KernelAudit()
    except OSError as exc:
        raise KernelAuditUnavailable(f"no audit netlink socket ({os.strerror(exc.errno or 0)})"
                                     ) from exc
    try:
        return adder, KernelAudit()
    except OSError as exc:
        adder.close()
        raise KernelAuditUnavailable(f"no audit netlink socket ({os.strerror(exc.errno or 0)})"
                                     ) from exc


@asynccontextmanager
async def open_fs_denied_monitor(mode: FsDeniedMode, *, linger: float | None = None
                                 ) -> AsyncIterator[FsDeniedMonitor]:
    """The daemon's observer for its lifetime; never raises for an unusable host: the
    monitor then says ``unavailable: <why>`` and sessions report it. ``linger``: seconds a
    uid's rules outlive its last session (``UidRules``; None: ``_kaudit_rules.RULE_LINGER``)."""
    if mode == "off":
        yield FsDeniedMonitor('unavailable: [audit] fs_denied = "off"')
        return
    tag = 0x80000000 + secrets.randbelow(0x7FFF0000)  # never 0xFFFFFFFF (unset)
    why = ""
    try:
        setup = _setup(mode, tag)
    except KernelAuditUnavailable as exc:
        why = str(exc)
    else:
        try:
            adder, remover = _rule_sockets()
            try:
                reader = _reader_socket()
            except KernelAuditUnavailable:
                adder.close()
                remover.close()
                raise
        except KernelAuditUnavailable as exc:
            _teardown(setup.audit, setup.enabled_here)
            why = str(exc)
    if why:
        log.info("fs_denied observation unavailable", reason=why)
        yield FsDeniedMonitor(f"unavailable: {why}")
        return
    audit = setup.audit
    uid_rules = UidRules(adder, remover, arch=setup.arch, syscalls=setup.syscalls, tag=tag,
                         key=_our_key(),
                         linger=_kaudit_rules.RULE_LINGER if linger is None else linger)
    monitor = FsDeniedMonitor(MECHANISM, tag, syscalls=setup.syscalls, rules=uid_rules)
    try:  # the markers' own socket: a send left in a thread never shares the teardown's
        markers = KernelAudit()
    except OSError:
        markers = None
    monitor._audit = markers or audit
    log.info("fs_denied observation active", mechanism=MECHANISM,
             enabled_audit=setup.enabled_here)
    # The reader outlives a cancel from outside until the monitor closes: a daemon cancelled
    # so stops its sessions in a shielded scope, and each end's flush marker must be read.
    reading = trio.CancelScope(shield=True)

    async def read() -> None:
        with reading:
            await monitor._read(trio.socket.from_stdlib_socket(reader))

    try:
        async with trio.open_nursery() as nursery:
            try:
                nursery.start_soon(read)
                # (The first await: a cancel from outside can land here, the reader started.)
                await nursery.start(uid_rules.run)
                yield monitor
            finally:
                reading.cancel()
                nursery.cancel_scope.cancel()
    finally:
        monitor._audit = None
        reader.close()
        for sock in (markers, adder, remover):
            if sock is not None:
                sock.close()
        _teardown(audit, setup.enabled_here)  # (every rule still held: see _teardown_locked)


__all__ = ["FsDeniedMode", "FsDeniedMonitor", "Watch", "open_fs_denied_monitor"]
