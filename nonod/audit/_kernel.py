"""Filesystem denials seen by the kernel's audit subsystem (``fs_denied`` events).

Most refusals in a session never reach Landlock: absent paths are absent from the session's
view (ENOENT), denied paths are masked by mode-000 mounts (EACCES from the permission check),
read-only grants are read-only mounts (EROFS). What all of them share is a failing system
call, so the observer asks the kernel to report exactly that:

  1. At daemon start (root in the initial user namespace only), ``AUDIT_GET`` the status;
     enable auditing if it is off and the mode allows it (remembered, undone at shutdown).
  2. Add syscall-exit rules for the daemon's tag: file system calls, ``auid`` equal to the
     tag, exit code -EACCES, -EPERM or -EROFS, key ``nonod:<daemon pid>``. Rules left by a
     dead daemon (their pid is gone) are removed first.
  3. Each launcher writes the tag to ``/proc/self/loginuid`` before it leaves the initial
     user namespace; the kernel gives it a fresh audit session id (``ses=``), which the
     launcher reports with the init's pid. The program cannot change either.
  4. A reader bound to the audit multicast group gathers records by serial (SYSCALL, CWD,
     PATH..., LANDLOCK_ACCESS, EOE), turns each group into a :class:`Denial`, and hands it to
     the session watching that ``ses``, rate-limited.
  5. At shutdown: our rules removed; the last nonod instance out (no ``nonod:`` rules left)
     disables auditing again if a nonod instance enabled it (``ENABLED_MARKER``).

The record parsing and classification (``parse_record``, ``Assembler``, ``classify``) are pure
and tested without a kernel; ``KernelAudit`` is the netlink client; ``open_fs_denied_monitor``
runs it all for the daemon.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import platform
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Literal, final

import structlog
import trio

from ._events import FsDenied

log = structlog.get_logger()

FsDeniedMode = Literal["auto", "kernel", "off"]
MECHANISM: Final = "kernel-audit"

# -- netlink and audit constants (linux/netlink.h, linux/audit.h)
NETLINK_AUDIT: Final = 9
NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
NLM_F_DUMP: Final = 0x300
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
AUDIT_GET: Final = 1000
AUDIT_SET: Final = 1001
AUDIT_LIST_RULES: Final = 1013
AUDIT_ADD_RULE: Final = 1011
AUDIT_DEL_RULE: Final = 1012
AUDIT_TRUSTED_APP: Final = 1121  # a free-text user message: our flush marker
AUDIT_NLGRP_READLOG: Final = 1
AUDIT_STATUS_ENABLED: Final = 0x1
AUDIT_FILTER_EXIT: Final = 0x04
AUDIT_ALWAYS: Final = 2
AUDIT_LOGINUID: Final = 9
AUDIT_ARCH: Final = 11
AUDIT_EXIT: Final = 103
AUDIT_FILTERKEY: Final = 210
AUDIT_EQUAL: Final = 0x40000000
AUDIT_BITMASK_SIZE: Final = 64
AUDIT_MAX_FIELDS: Final = 64
# record types
SYSCALL: Final = 1300
PATH: Final = 1302
CWD: Final = 1307
EOE: Final = 1320
PROCTITLE: Final = 1327
LANDLOCK_ACCESS: Final = 1423

NLMSG = struct.Struct("=IHHII")
STATUS = struct.Struct("=11I")  # struct audit_status, up to backlog_wait_time_actual
#: Rule fields whose value is a length into the rule's string buffer (linux/audit.h).
STRING_FIELDS: Final = frozenset({13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 105, 107, 112, 210})
RULE_HEAD = struct.Struct(f"=3I{AUDIT_BITMASK_SIZE}I{AUDIT_MAX_FIELDS * 3}I I")

#: Refusals reported: a missing path (ENOENT) is not one (see docs/audit.md).
DENIED_ERRNOS: Final = (_errno.EACCES, _errno.EPERM, _errno.EROFS)
KEY_PREFIX: Final = "nonod:"
#: The kernel's unset loginuid; tags are drawn below it.
UNSET_LOGINUID: Final = 0xFFFFFFFF
#: Exists while auditing is on because a nonod instance turned it on (tmpfs: a reboot, which
#: also resets the kernel's audit state, removes it).
ENABLED_MARKER: Final = "/run/nonod-audit-enabled"

# x86_64 syscall numbers -> the operation they attempt ("open" is decided from the flags).
SYSCALLS_X86_64: Final[dict[int, str]] = {
    2: "open", 257: "openat", 437: "openat2", 85: "create", 76: "truncate", 83: "create",
    258: "create", 133: "create", 259: "create", 88: "create", 266: "create", 86: "create",
    265: "create", 87: "remove", 84: "remove", 263: "remove", 82: "rename", 264: "rename",
    316: "rename", 59: "exec", 322: "exec", 90: "write", 268: "write", 452: "write",
    92: "write", 94: "write", 260: "write", 188: "write", 189: "write", 197: "write",
    132: "write", 235: "write", 280: "write",
}
ARCHES: Final[dict[str, tuple[int, dict[int, str]]]] = {
    "x86_64": (0xC000003E, SYSCALLS_X86_64),
}
O_ACCMODE: Final = 0o3
O_CREAT: Final = 0o100
O_TRUNC: Final = 0o1000


class KernelAuditUnavailable(Exception):
    """Kernel audit cannot be used here; the message says why (it becomes the status)."""


# ------------------------------------------------------------------------- pure parsing


def parse_record(text: str) -> tuple[int, dict[str, str]]:
    """``audit(1700000000.123:42): a=1 b="x y" ...`` -> (serial 42, fields).

    Values keep their raw form (quoted or hex); :func:`untangle` decodes names."""
    if not text.startswith("audit(") or ")" not in text:
        raise ValueError("not an audit record")
    stamp, _, body = text[6:].partition(")")
    serial = int(stamp.rpartition(":")[2])
    fields: dict[str, str] = {}
    rest = body.lstrip(": ").rstrip("\x00\n")
    while rest:
        rest = rest.lstrip(" ")
        key, eq, rest = rest.partition("=")
        if not eq:
            break
        if rest.startswith('"'):
            end = rest.find('"', 1)
            end = len(rest) if end < 0 else end + 1
        elif rest.startswith("'"):
            end = rest.find("'", 1)
            end = len(rest) if end < 0 else end + 1
        else:
            end = rest.find(" ")
            end = len(rest) if end < 0 else end
        fields.setdefault(key, rest[:end])
        rest = rest[end:]
    return serial, fields


def _serial(text: str) -> int | None:
    end = text.find(")", 6)
    if not text.startswith("audit(") or end < 0:
        return None
    try:
        return int(text[6:end].rpartition(":")[2])
    except ValueError:
        return None


def untangle(value: str) -> str | None:
    """A name as the kernel logs it: quoted text, hex (when it has odd bytes) or ``(null)``."""
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return value[1:-1]
    if value in ("(null)", "(none)", "?", ""):
        return None
    try:
        return bytes.fromhex(value).decode("utf-8", "surrogateescape")
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class Denial:
    """One refused call of a tagged process, as the kernel reported it."""

    ses: int
    pid: int
    path: str
    operation: str
    errno: str
    landlock: bool = False


@dataclass(slots=True)
class _Pending:
    syscall: dict[str, str] | None = None
    cwd: str | None = None
    paths: list[dict[str, str]] = field(default_factory=list)
    landlock: dict[str, str] | None = None


@final
class Assembler:
    """Gathers records by serial until EOE; sans-IO: ``feed(type, text)`` returns what ended.

    Only groups keyed ``key`` (our rules) produce a :class:`Denial`; at most ``limit``
    unfinished groups are kept (an EOE lost with a dropped message must not leak memory)."""

    def __init__(self, key: str, syscalls: dict[int, str], *, limit: int = 1024) -> None:
        self._key_field = f'key="{key}"'
        self._syscalls = syscalls
        self._limit = limit
        self._pending: dict[int, _Pending] = {}

    def feed(self, kind: int, text: str) -> Denial | None:
        if kind not in (SYSCALL, PATH, CWD, EOE, LANDLOCK_ACCESS):
            return None
        # Cheap checks first: a flood of records that are not ours must cost little.
        serial = _serial(text)
        if serial is None:
            return None
        group = self._pending.get(serial)
        if kind == SYSCALL and self._key_field not in text:
            self._pending.pop(serial, None)  # a Landlock record of someone else's call
            return None
        if kind in (CWD, PATH, EOE) and (group is None or group.syscall is None):
            if kind == EOE:
                self._pending.pop(serial, None)
            return None
        if kind == EOE:
            del self._pending[serial]
            return classify(group, self._syscalls) if group is not None else None
        try:
            _, fields = parse_record(text)
        except ValueError:
            return None
        if group is None:
            if len(self._pending) >= self._limit:
                self._pending.pop(next(iter(self._pending)))
            group = self._pending[serial] = _Pending()
        if kind == SYSCALL:
            group.syscall = fields
        elif kind == CWD:
            group.cwd = untangle(fields.get("cwd", ""))
        elif kind == PATH:
            group.paths.append(fields)
        else:  # LANDLOCK_ACCESS: logged during the call, before its SYSCALL record
            group.landlock = fields
        return None


def _flags_operation(flags: int, paths: list[dict[str, str]]) -> str:
    if flags & O_CREAT and all(p.get("nametype") == "PARENT" for p in paths):
        return "create"
    if flags & O_ACCMODE or flags & O_TRUNC:
        return "write"
    return "read"


def classify(group: _Pending, syscalls: dict[int, str]) -> Denial | None:
    """The operation, path and errno of one record group; None if it is not a denial."""
    sc = group.syscall
    if sc is None:
        return None
    try:
        number = int(sc.get("syscall", "-1"))
        code = -int(sc.get("exit", "0"))
        ses = int(sc.get("ses", "-1"))
        pid = int(sc.get("pid", "0"))
    except ValueError:
        return None
    if code not in DENIED_ERRNOS or number not in syscalls:
        return None
    operation = syscalls[number]
    if operation in ("open", "openat"):
        raw = sc.get("a1" if operation == "open" else "a2", "0")
        try:
            operation = _flags_operation(int(raw, 16), group.paths)
        except ValueError:
            operation = "read"
    elif operation == "openat2":
        operation = "open"  # the flags are behind a pointer the record does not follow
    named = [p for p in group.paths if p.get("nametype") != "PARENT"] or group.paths
    name = untangle(named[0].get("name", "")) if named else None
    if name is None and group.landlock is not None:
        name = untangle(group.landlock.get("path", ""))
    if name is None:
        name = "?"
    elif not name.startswith("/") and group.cwd:
        name = os.path.join(group.cwd, name)
    if name != "/":
        name = os.path.normpath(name) if name.startswith("/") else name
    return Denial(ses=ses, pid=pid, path=name, operation=operation,
                  errno=_errno.errorcode.get(code, str(code)),
                  landlock=group.landlock is not None)


# ------------------------------------------------------------------------ rate limiting


@final
class RateLimiter:
    """At most ``per_window`` events per ``window`` seconds; the rest are counted, and the
    count comes back once (with the last one suppressed) when the window is over."""

    def __init__(self, per_window: int = 20, window: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = per_window
        self._window = window
        self._clock = clock
        self._start = clock()
        self._count = 0
        self.suppressed = 0
        self.last: Denial | None = None

    def admit(self, denial: Denial) -> tuple[bool, int, Denial | None]:
        """(record this one?, suppressed count to report first, the last suppressed)."""
        now = self._clock()
        owed, last = 0, None
        if now - self._start >= self._window:
            owed, last = self.take_suppressed()
            self._start, self._count = now, 0
        self._count += 1
        if self._count <= self._max:
            return True, owed, last
        self.suppressed += 1
        self.last = denial
        return False, owed, last

    def take_suppressed(self) -> tuple[int, Denial | None]:
        owed, last = self.suppressed, self.last
        self.suppressed, self.last = 0, None
        return owed, last


def to_event(denial: Denial, *, suppressed: int = 0) -> FsDenied:
    return FsDenied(path=denial.path, operation=denial.operation, pid=denial.pid,
                    errno=denial.errno, suppressed=suppressed,
                    mechanism=MECHANISM + ("+landlock" if denial.landlock else ""))


# ---------------------------------------------------------------------- netlink client


def _rule(arch: int, syscalls: dict[int, str], tag: int, code: int, key: bytes) -> bytes:
    mask = [0] * AUDIT_BITMASK_SIZE
    for nr in syscalls:
        mask[nr // 32] |= 1 << (nr % 32)
    chosen = [(AUDIT_ARCH, arch), (AUDIT_LOGINUID, tag), (AUDIT_EXIT, (-code) & 0xFFFFFFFF),
              (AUDIT_FILTERKEY, len(key))]
    fields = [0] * AUDIT_MAX_FIELDS
    values = [0] * AUDIT_MAX_FIELDS
    flags = [0] * AUDIT_MAX_FIELDS
    for i, (name, value) in enumerate(chosen):
        fields[i], values[i], flags[i] = name, value, AUDIT_EQUAL
    return RULE_HEAD.pack(AUDIT_FILTER_EXIT, AUDIT_ALWAYS, len(chosen), *mask, *fields,
                          *values, *flags, len(key)) + key


def rule_key(data: bytes) -> str | None:
    """The key of a listed rule (``struct audit_rule_data``), if it has one."""
    head = RULE_HEAD.unpack_from(data)
    count = head[2]
    fields = head[3 + AUDIT_BITMASK_SIZE:3 + AUDIT_BITMASK_SIZE + AUDIT_MAX_FIELDS]
    values = head[3 + AUDIT_BITMASK_SIZE + AUDIT_MAX_FIELDS:]
    buf = data[RULE_HEAD.size:]
    offset = 0
    for i in range(min(count, AUDIT_MAX_FIELDS)):
        if fields[i] == AUDIT_FILTERKEY:
            return buf[offset:offset + values[i]].decode("utf-8", "replace")
        if fields[i] in STRING_FIELDS:
            offset += values[i]
    return None


@final
class KernelAudit:
    """Blocking requests on a NETLINK_AUDIT socket (the kernel answers at once)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        self._sock.settimeout(5)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: int, payload: bytes = b"", *, dump: bool = False,
                reply: bool = False) -> list[tuple[int, bytes]]:
        self._seq += 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        self._sock.send(NLMSG.pack(NLMSG.size + len(payload), kind, flags, self._seq, 0)
                        + payload)
        out: list[tuple[int, bytes]] = []
        acked = False
        while not (acked and (out or not reply)):
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + NLMSG.size <= len(data):
                length, typ, _, seq, _ = NLMSG.unpack_from(data, offset)
                body = data[offset + NLMSG.size:offset + length]
                offset += (length + 3) & ~3
                if seq != self._seq:
                    continue
                if typ == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", body)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    acked = True
                elif typ == NLMSG_DONE:
                    acked = True
                else:
                    out.append((typ, body))
        return out

    def status(self) -> tuple[int, int]:
        """(enabled: 0, 1 or 2 for locked; the pid of a registered audit daemon or 0)."""
        replies = self.request(AUDIT_GET, reply=True)
        raw = replies[0][1].ljust(STATUS.size, b"\x00")
        values = STATUS.unpack_from(raw)
        return values[1], values[3]

    def set_enabled(self, enabled: int) -> None:
        self.request(AUDIT_SET, STATUS.pack(AUDIT_STATUS_ENABLED, enabled, *([0] * 9)))

    def rules(self) -> list[bytes]:
        return [body for typ, body in self.request(AUDIT_LIST_RULES, dump=True)
                if typ == AUDIT_LIST_RULES]

    def add_rule(self, rule: bytes) -> None:
        self.request(AUDIT_ADD_RULE, rule)

    def delete_rule(self, rule: bytes) -> None:
        self.request(AUDIT_DEL_RULE, rule)

    def user_message(self, text: str) -> None:
        # The kernel logs the payload up to its last byte, which it takes for a NUL.
        self.request(AUDIT_TRUSTED_APP, text.encode() + b"\x00")


def nonod_rules(audit: KernelAudit) -> list[tuple[str, bytes]]:
    """Every rule a nonod instance added, with its key."""
    found = []
    for body in audit.rules():
        key = rule_key(body)
        if key is not None and key.startswith(KEY_PREFIX):
            found.append((key, body))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_host() -> tuple[int, dict[int, str]]:
    if os.geteuid() != 0:
        raise KernelAuditUnavailable("the daemon is not root (kernel audit needs "
                                     "CAP_AUDIT_CONTROL and CAP_AUDIT_READ)")
    try:
        with open("/proc/self/uid_map") as f:
            initial = f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        initial = False
    if not initial:
        raise KernelAuditUnavailable("the daemon is not in the initial user namespace")
    if not os.path.exists("/proc/self/loginuid"):
        raise KernelAuditUnavailable("the kernel has no audit syscall support "
                                     "(CONFIG_AUDITSYSCALL)")
    machine = platform.machine()
    if machine not in ARCHES:
        raise KernelAuditUnavailable(f"no syscall table for {machine}")
    return ARCHES[machine]


# ----------------------------------------------------------------------------- monitor

Sink = Callable[[FsDenied], None]
EARLY_SESSIONS: Final = 64
DROP_WARN_INTERVAL: Final = 10.0
EARLY_PER_SESSION: Final = 64


@final
class Watch:
    """One session's subscription to its denials (see :meth:`FsDeniedMonitor.watch`)."""

    def __init__(self, ses: int, sink: Sink, limiter: RateLimiter) -> None:
        self.ses = ses
        self._sink = sink
        self._limiter = limiter
        self.delivered = 0

    def deliver(self, denial: Denial) -> None:
        record, owed, last = self._limiter.admit(denial)
        if owed and last is not None:
            self._sink(to_event(last, suppressed=owed))
        if record:
            self.delivered += 1
            self._sink(to_event(denial))

    def finish(self) -> None:
        owed, last = self._limiter.take_suppressed()
        if owed and last is not None:
            self._sink(to_event(last, suppressed=owed))


@final
class FsDeniedMonitor:
    """The daemon's observer. ``status`` is ``kernel-audit`` or ``unavailable: <why>``;
    ``tag`` is the loginuid launchers write (0 when unavailable)."""

    def __init__(self, status: str, tag: int = 0, *, syscalls: dict[int, str] | None = None,
                 per_second: int = 20) -> None:
        self.status = status
        self.tag = tag
        self._per_second = per_second
        self._watches: dict[int, Watch] = {}
        # Denials of a session not watched yet: the program runs before the launch returns.
        self._early: dict[int, list[Denial]] = {}
        self._assembler = Assembler(f"{KEY_PREFIX}{os.getpid()}", syscalls or {})
        self._markers: dict[str, trio.Event] = {}
        self._audit: KernelAudit | None = None

    @property
    def active(self) -> bool:
        return self.tag != 0

    def statistics(self) -> dict[str, int]:
        return {"sessions": len(self._watches)}

    def watch(self, ses: int, sink: Sink) -> Watch:
        """Deliver the denials of audit session ``ses`` to ``sink`` until :meth:`release`."""
        w = Watch(ses, sink, RateLimiter(self._per_second))
        self._watches[ses] = w
        for denial in self._early.pop(ses, ()):
            w.deliver(denial)
        return w

    async def release(self, watch: Watch, *, timeout: float = 2.0) -> bool:
        """Wait until every record the kernel queued so far has been read (a marker sent
        now comes back after them), then stop delivering to ``watch``. False: the marker
        did not come back in time (denials queued before it may be missing)."""
        flushed = self._audit is None
        try:
            if self._audit is not None:
                nonce = secrets.token_hex(8)
                arrived = self._markers[nonce] = trio.Event()
                try:
                    self._audit.user_message(f"nonod-flush={nonce}")
                    with trio.move_on_after(timeout):
                        await arrived.wait()
                    flushed = arrived.is_set()
                    if not flushed:
                        log.warning("fs_denied: flush marker did not come back",
                                    timeout=timeout)
                except OSError as exc:
                    log.warning("fs_denied: flush marker refused", errno=exc.errno)
                finally:
                    self._markers.pop(nonce, None)
        finally:
            self._watches.pop(watch.ses, None)
            watch.finish()
        return flushed

    def dispatch(self, kind: int, text: str) -> None:
        """One record from the multicast group."""
        if kind == AUDIT_TRUSTED_APP:
            for nonce, event in self._markers.items():
                if f"nonod-flush={nonce}" in text:
                    event.set()
            return
        denial = self._assembler.feed(kind, text)
        if denial is not None:
            w = self._watches.get(denial.ses)
            if w is not None:
                w.deliver(denial)
            else:
                self._keep_early(denial)

    def _keep_early(self, denial: Denial) -> None:
        early = self._early.get(denial.ses)
        if early is None:
            if len(self._early) >= EARLY_SESSIONS:
                self._early.pop(next(iter(self._early)))
            early = self._early[denial.ses] = []
        if len(early) < EARLY_PER_SESSION:
            early.append(denial)

    async def _read(self, sock: trio.socket.SocketType) -> None:
        overruns, warned = 0, -DROP_WARN_INTERVAL
        while True:
            try:
                data = await sock.recv(1 << 16)
            except OSError as exc:
                if exc.errno != _errno.ENOBUFS:
                    raise
                # A flood outran us: some records are lost (suppressed counts become lower
                # bounds). Said at most every DROP_WARN_INTERVAL seconds.
                overruns += 1
                if time.monotonic() - warned >= DROP_WARN_INTERVAL:
                    warned = time.monotonic()
                    log.warning("fs_denied: audit records were dropped (reader too slow)",
                                overruns=overruns)
                continue
            offset = 0
            while offset + NLMSG.size <= len(data):
                length, kind, _, _, _ = NLMSG.unpack_from(data, offset)
                if length < NLMSG.size:
                    break
                body = data[offset + NLMSG.size:offset + length]
                offset += (length + 3) & ~3
                self.dispatch(kind, body.rstrip(b"\x00").decode("utf-8", "replace"))


def _setup(mode: FsDeniedMode, tag: int) -> tuple[KernelAudit, list[bytes], bool, dict[int, str]]:
    arch, syscalls = _check_host()
    try:
        audit = KernelAudit()
    except OSError as exc:
        raise KernelAuditUnavailable(f"no audit netlink socket ({os.strerror(exc.errno or 0)})"
                                     ) from exc
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
            if owner.isdigit() and not _pid_alive(int(owner)):
                audit.delete_rule(body)  # left by a daemon that died without cleaning up
        ours = f"{KEY_PREFIX}{os.getpid()}".encode()
        rules = [_rule(arch, syscalls, tag, code, ours) for code in DENIED_ERRNOS]
        added: list[bytes] = []
        try:
            for rule in rules:
                audit.add_rule(rule)
                added.append(rule)
        except OSError:
            for rule in added:
                audit.delete_rule(rule)
            raise
        if audit.status()[0] == 0:  # another instance disabled it while we were adding
            _enable(audit)
            enabled_here = True
    except OSError as exc:
        _teardown(audit, [], enabled_here)
        raise KernelAuditUnavailable(
            f"the kernel refused the audit set-up ({os.strerror(exc.errno or 0)})") from exc
    except BaseException:
        _teardown(audit, [], enabled_here)
        raise
    return audit, rules, enabled_here, syscalls


def _enable(audit: KernelAudit) -> None:
    audit.set_enabled(1)
    with open(ENABLED_MARKER, "w") as f:
        f.write(f"{os.getpid()}\n")


def _teardown(audit: KernelAudit, rules: list[bytes], enabled_here: bool) -> None:
    try:
        for rule in rules:
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


def _reader_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    try:
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


@asynccontextmanager
async def open_fs_denied_monitor(mode: FsDeniedMode) -> AsyncIterator[FsDeniedMonitor]:
    """The daemon's observer for its lifetime; never raises for an unusable host: the
    monitor then says ``unavailable: <why>`` and sessions report it."""
    if mode == "off":
        yield FsDeniedMonitor('unavailable: [audit] fs_denied = "off"')
        return
    tag = 0x80000000 + secrets.randbelow(0x7FFF0000)  # never 0xFFFFFFFF (unset)
    why = ""
    try:
        audit, rules, enabled_here, syscalls = _setup(mode, tag)
    except KernelAuditUnavailable as exc:
        why = str(exc)
    else:
        try:
            reader = _reader_socket()
        except KernelAuditUnavailable as exc:
            _teardown(audit, rules, enabled_here)
            why = str(exc)
    if why:
        log.info("fs_denied observation unavailable", reason=why)
        yield FsDeniedMonitor(f"unavailable: {why}")
        return
    monitor = FsDeniedMonitor(MECHANISM, tag, syscalls=syscalls)
    monitor._audit = audit
    log.info("fs_denied observation active", mechanism=MECHANISM, enabled_audit=enabled_here)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor._read, trio.socket.from_stdlib_socket(reader))
            try:
                yield monitor
            finally:
                nursery.cancel_scope.cancel()
    finally:
        monitor._audit = None
        reader.close()
        _teardown(audit, rules, enabled_here)


__all__ = ["Denial", "FsDeniedMonitor", "KernelAudit", "open_fs_denied_monitor"]
