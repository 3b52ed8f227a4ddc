"""Kernel audit records -> filesystem denials: parsing, grouping, classification, rate limit.

Pure functions and small state machines, tested without a kernel: ``parse_record`` reads one
record's text, ``Assembler`` gathers a syscall's records by serial (SYSCALL, CWD, PATH...,
LANDLOCK_ACCESS, EOE) and ``classify`` turns the group into a :class:`Denial` (operation from
the syscall and its flags, path joined with the cwd); ``RateLimiter`` keeps one session from
flooding its audit file. ``_kernel`` runs them on what the netlink socket delivers.
"""

from __future__ import annotations

import errno as _errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, final

from ._events import FsDenied

MECHANISM: Final = "kernel-audit"

# record types
SYSCALL: Final = 1300
PATH: Final = 1302
CWD: Final = 1307
EOE: Final = 1320
PROCTITLE: Final = 1327
LANDLOCK_ACCESS: Final = 1423
#: The types :class:`Assembler` reads; the rest are passed over (and dropped by the reader
#: socket's filter before they reach the daemon: ``_kernel._reader_socket``).
ASSEMBLED: Final = frozenset({SYSCALL, PATH, CWD, EOE, LANDLOCK_ACCESS})

#: Refusals reported: a missing path (ENOENT) is not one (see docs/audit.md).
DENIED_ERRNOS: Final = (_errno.EACCES, _errno.EPERM, _errno.EROFS)

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


def _ses(text: str) -> int:
    """The ``ses=`` of a SYSCALL record, without parsing the rest (-1: none)."""
    start = text.find(" ses=")
    if start < 0:
        return -1
    end = text.find(" ", start + 5)
    value = text[start + 5:end if end >= 0 else len(text)]
    return int(value) if value.isdigit() else -1


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


def readable(name: str) -> str:
    """``name`` (from :func:`untangle`) as a record may hold it: bytes that are not UTF-8
    (a program may name its files so) as ``\\xNN`` text. Their surrogates cannot be
    encoded as JSON: before, one such name ended the daemon's reader, and the daemon. A
    backslash of the name is written ``\\x5c``, so that ``\\xNN`` always stands for one
    byte (before, a file named with the four characters ``\\xff`` read as the byte)."""
    escaped = name.replace("\\", "\\x5c")
    return escaped.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Denial:
    """One refused call of a tagged process, as the kernel reported it."""

    ses: int
    pid: int
    path: str
    operation: str
    errno: str
    landlock: bool = False
    uid: int = -1  # the caller's uid, as the initial user namespace sees it


@dataclass(slots=True)
class _Pending:
    syscall: dict[str, str] | None = None
    cwd: str | None = None
    paths: list[dict[str, str]] = field(default_factory=list)
    #: The LANDLOCK_ACCESS record as read: parsed only if the group proves ours (every
    #: landlocked process of the host has its denials logged, no rule or tag needed).
    landlock: str | None = None


@final
class Assembler:
    """Gathers records by serial until EOE; sans-IO: ``feed(type, text)`` returns what ended.

    Only groups keyed ``key`` (our rules) produce a :class:`Denial`; at most ``limit``
    unfinished groups are kept (an EOE lost with a dropped message must not leak memory)."""

    def __init__(self, key: str, syscalls: dict[int, str], *, limit: int = 1024,
                 counted: Callable[[int], bool] = lambda _ses: False) -> None:
        self._key_field = f'key="{key}"'
        self._syscalls = syscalls
        self._limit = limit
        self._pending: dict[int, _Pending] = {}
        #: Asked with the ``ses`` of each of our SYSCALL records: True if it was counted
        #: as dropped (its session is over its rate limit), so not worth parsing at all.
        self._counted = counted

    def feed(self, kind: int, text: str) -> Denial | None:
        if kind not in ASSEMBLED:
            return None
        # Cheap checks first: a flood of records that are not ours must cost little.
        serial = _serial(text)
        if serial is None:
            return None
        group = self._pending.get(serial)
        if kind == SYSCALL and (self._key_field not in text or self._counted(_ses(text))):
            # A Landlock record of someone else's call, or a call of a session over its
            # rate limit: its CWD, PATH and EOE records then find no group and cost a lookup.
            self._pending.pop(serial, None)
            return None
        if kind in (CWD, PATH, EOE) and (group is None or group.syscall is None):
            if kind == EOE:
                self._pending.pop(serial, None)
            return None
        if kind == EOE:
            del self._pending[serial]
            return classify(group, self._syscalls) if group is not None else None
        if kind == LANDLOCK_ACCESS:  # logged during the call, before its SYSCALL record
            self._group(serial, group).landlock = text
            return None
        try:
            _, fields = parse_record(text)
        except ValueError:
            return None
        group = self._group(serial, group)
        if kind == SYSCALL:
            group.syscall = fields
        elif kind == CWD:
            group.cwd = untangle(fields.get("cwd", ""))
        else:
            group.paths.append(fields)
        return None

    def _group(self, serial: int, group: _Pending | None) -> _Pending:
        if group is None:
            if len(self._pending) >= self._limit:
                self._pending.pop(next(iter(self._pending)))
            group = self._pending[serial] = _Pending()
        return group


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
        uid = int(sc.get("uid", "-1"))
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
        try:
            name = untangle(parse_record(group.landlock)[1].get("path", ""))
        except ValueError:
            name = None
    if name is None:
        name = "?"
    elif not name.startswith("/") and group.cwd:
        name = os.path.join(group.cwd, name)
    if name != "/":
        name = os.path.normpath(name) if name.startswith("/") else name
    return Denial(ses=ses, pid=pid, path=name, operation=operation,
                  errno=_errno.errorcode.get(code, str(code)),
                  landlock=group.landlock is not None, uid=uid)


# ------------------------------------------------------------------------ rate limiting


@final
class RateLimiter:
    """At most ``per_window`` events per ``window`` seconds; the rest are counted, and the
    count comes back once (with the first one suppressed) when the window is over."""

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

    def count_dropped(self) -> bool:
        """Count one more denial as dropped, without it, if this window has dropped one
        already (that one, parsed, stands for the rest); False: it must be parsed and given
        to :meth:`admit` (the window may be over, or the limit not reached)."""
        if self.last is None or self._clock() - self._start >= self._window:
            return False
        self.suppressed += 1
        return True

    def take_suppressed(self) -> tuple[int, Denial | None]:
        owed, last = self.suppressed, self.last
        self.suppressed, self.last = 0, None
        return owed, last


def to_event(denial: Denial, *, suppressed: int = 0) -> FsDenied:
    return FsDenied(path=readable(denial.path), operation=denial.operation, pid=denial.pid,
                    errno=denial.errno, suppressed=suppressed,
                    mechanism=MECHANISM + ("+landlock" if denial.landlock else ""))
