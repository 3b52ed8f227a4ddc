"""The kernel audit subsystem over NETLINK_AUDIT: status, enabling, rules, user messages.

``KernelAudit`` makes blocking requests (the kernel answers at once); ``exit_rule`` builds the
``struct audit_rule_data`` of one syscall-exit rule; ``nonod_rules`` finds the rules nonod
instances added (key ``nonod:<pid>``); ``check_host`` says whether this process may use
kernel audit at all (root in the initial user namespace, a known architecture).
"""

from __future__ import annotations

import fcntl
import os
import platform
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, final

from ._kaudit_records import ARCHES

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
AUDIT_UID: Final = 1  # the real uid (the kernel compares kuids: the host's, any namespace)
AUDIT_LOGINUID: Final = 9
AUDIT_ARCH: Final = 11
AUDIT_EXIT: Final = 103
AUDIT_FILTERKEY: Final = 210
AUDIT_EQUAL: Final = 0x40000000
AUDIT_BITMASK_SIZE: Final = 64
AUDIT_MAX_FIELDS: Final = 64

NLMSG = struct.Struct("=IHHII")
STATUS = struct.Struct("=11I")  # struct audit_status, up to backlog_wait_time_actual
#: Rule fields whose value is a length into the rule's string buffer (linux/audit.h).
STRING_FIELDS: Final = frozenset({13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 105, 107, 112, 210})
RULE_HEAD = struct.Struct(f"=3I{AUDIT_BITMASK_SIZE}I{AUDIT_MAX_FIELDS * 3}I I")

KEY_PREFIX: Final = "nonod:"
#: The kernel's unset loginuid; tags are drawn below it.
UNSET_LOGINUID: Final = 0xFFFFFFFF
#: Exists while auditing is on because a nonod instance turned it on (tmpfs: a reboot, which
#: also resets the kernel's audit state, removes it).
ENABLED_MARKER: Final = "/run/nonod-audit-enabled"
#: Held (``flock``) by a nonod instance while it changes the host's audit set-up: its start
#: (enable, rules) and its end (rules removed, the last one out disables) are one step each
#: for the other instances.
SETUP_LOCK: Final = "/run/nonod-audit.lock"


@contextmanager
def host_setup_lock() -> Iterator[None]:
    """The host's audit set-up to this instance alone (``SETUP_LOCK``). Without it, one
    instance ending (its rules gone, none left, so it disables auditing) and one starting
    (auditing on, so it leaves it, and adds its rules) interleave: the new one runs with
    auditing off and reports no denial. Held for a few netlink requests; a host whose /run
    cannot hold the file goes without."""
    try:
        fd = os.open(SETUP_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


class KernelAuditUnavailable(Exception):
    """Kernel audit cannot be used here; the message says why (it becomes the status)."""


# ---------------------------------------------------------------------- netlink client


def exit_rule(arch: int, syscalls: dict[int, str], tag: int, code: int, key: bytes,
              uid: int | None = None) -> bytes:
    """A syscall-exit rule: one of ``syscalls`` on ``arch`` that failed with ``-code``,
    made by a process whose loginuid is ``tag`` (and whose real uid is ``uid``, if given),
    logged under ``key``. No ``syscalls``: a rule that never matches (its mask is empty)."""
    mask = [0] * AUDIT_BITMASK_SIZE
    for nr in syscalls:
        mask[nr // 32] |= 1 << (nr % 32)
    chosen = [(AUDIT_ARCH, arch), (AUDIT_LOGINUID, tag), (AUDIT_EXIT, (-code) & 0xFFFFFFFF),
              *(() if uid is None else ((AUDIT_UID, uid),)), (AUDIT_FILTERKEY, len(key))]
    fields = [0] * AUDIT_MAX_FIELDS
    values = [0] * AUDIT_MAX_FIELDS
    flags = [0] * AUDIT_MAX_FIELDS
    for i, (name, value) in enumerate(chosen):
        fields[i], values[i], flags[i] = name, value, AUDIT_EQUAL
    return RULE_HEAD.pack(AUDIT_FILTER_EXIT, AUDIT_ALWAYS, len(chosen), *mask, *fields,
                          *values, *flags, len(key)) + key


def rule_values(data: bytes) -> dict[int, int]:
    """The fields of a listed rule and their values (a string field's: its length)."""
    head = RULE_HEAD.unpack_from(data)
    count = min(head[2], AUDIT_MAX_FIELDS)
    fields = head[3 + AUDIT_BITMASK_SIZE:3 + AUDIT_BITMASK_SIZE + count]
    values = head[3 + AUDIT_BITMASK_SIZE + AUDIT_MAX_FIELDS:]
    return dict(zip(fields, values, strict=False))


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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_host() -> tuple[int, dict[int, str]]:
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
