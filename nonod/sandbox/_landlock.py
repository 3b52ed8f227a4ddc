"""Landlock through ctypes: probe the ABI, compile a plan in the parent, apply it in the child.

Two halves with different rules:

* :func:`probe_abi` and :func:`compile_plan` run in the daemon (or fork server) before fork.
  They turn grants into a :class:`LandlockPlan` of plain ints, bytes and tuples, decide what
  this kernel can enforce, and refuse (``EnforcementUnavailable``) when the policy requires a
  feature the kernel lacks.
* :func:`apply_plan` runs in the child between fork and ``execve``. It uses only ``os``,
  ``ctypes`` and ``struct``, imports nothing, and raises ``OSError`` on the first failure;
  nothing is skipped. The caller has already set ``PR_SET_NO_NEW_PRIVS``.

How access modes map to rights, and what Landlock leaves to other layers: ``docs/landlock.md``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from nonod.errors import EnforcementUnavailable

from ._report import LayerReport, applied, partial, unavailable

if TYPE_CHECKING:
    from nonod.policy import Grant

# Syscall numbers come from the generic table, identical on x86_64 and aarch64.
_NR_LANDLOCK_CREATE_RULESET: Final = 444
_NR_LANDLOCK_ADD_RULE: Final = 445
_NR_LANDLOCK_RESTRICT_SELF: Final = 446
_NR_OPENAT2: Final = 437

LANDLOCK_CREATE_RULESET_VERSION: Final = 1 << 0
LANDLOCK_RULE_PATH_BENEATH: Final = 1
LANDLOCK_RULE_NET_PORT: Final = 2

# ABI 7 audit flags for landlock_restrict_self. nono passes 0: see docs/landlock.md.
LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF: Final = 1 << 0
LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON: Final = 1 << 1
LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF: Final = 1 << 2

FS_EXECUTE: Final = 1 << 0
FS_WRITE_FILE: Final = 1 << 1
FS_READ_FILE: Final = 1 << 2
FS_READ_DIR: Final = 1 << 3
FS_REMOVE_DIR: Final = 1 << 4
FS_REMOVE_FILE: Final = 1 << 5
FS_MAKE_CHAR: Final = 1 << 6
FS_MAKE_DIR: Final = 1 << 7
FS_MAKE_REG: Final = 1 << 8
FS_MAKE_SOCK: Final = 1 << 9
FS_MAKE_FIFO: Final = 1 << 10
FS_MAKE_BLOCK: Final = 1 << 11
FS_MAKE_SYM: Final = 1 << 12
FS_REFER: Final = 1 << 13  # ABI 2
FS_TRUNCATE: Final = 1 << 14  # ABI 3
FS_IOCTL_DEV: Final = 1 << 15  # ABI 5

NET_BIND_TCP: Final = 1 << 0  # ABI 4
NET_CONNECT_TCP: Final = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
SCOPE_SIGNAL: Final = 1 << 1  # ABI 6

# The newest ABI whose rights this module knows. A newer kernel is driven as this one.
KNOWN_ABI: Final = 7

_FS_V1: Final = (1 << 13) - 1  # EXECUTE .. MAKE_SYM

# Rights that make sense on a non-directory; anything else on a file rule is EINVAL.
FS_FILE_RIGHTS: Final = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

FS_READ: Final = FS_READ_FILE | FS_READ_DIR | FS_EXECUTE
# IOCTL_DEV goes with write: a program that may write under /dev (ttys, /dev/null) needs
# terminal ioctls; the dangerous ones (TIOCSTI, TIOCLINUX) are refused by seccomp.
FS_WRITE: Final = (
    FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_CHAR
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_BLOCK
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
    | FS_IOCTL_DEV
)

_O_PATH_FLAGS: Final = os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW
_AT_FDCWD: Final = -100
_RESOLVE_NO_SYMLINKS: Final = 0x04
_OPEN_HOW: Final = struct.pack("=QQQ", _O_PATH_FLAGS, 0, _RESOLVE_NO_SYMLINKS)
_PATH_BENEATH: Final = struct.Struct("=Qi")  # struct landlock_path_beneath_attr (packed)
_NET_PORT: Final = struct.Struct("=QQ")  # struct landlock_net_port_attr
_S_IFMT: Final = 0o170000
_S_IFDIR: Final = 0o040000
_S_IFLNK: Final = 0o120000


class _Feature(NamedTuple):
    name: str
    abi: int
    kernel: str
    what: str


# Names a profile can put in ``required``; the first one is Landlock itself.
FEATURES: Final = (
    _Feature("landlock", 1, "5.13", "Landlock filesystem rules"),
    _Feature("landlock_refer", 2, "5.19", "rename and link across directories (REFER)"),
    _Feature("landlock_truncate", 3, "6.2", "truncation control (TRUNCATE)"),
    _Feature("landlock_net", 4, "6.7", "TCP bind/connect port rules"),
    _Feature("landlock_ioctl_dev", 5, "6.10", "device ioctl control (IOCTL_DEV)"),
    _Feature("landlock_scopes", 6, "6.12", "abstract Unix socket and signal scopes"),
)


def fs_rights_for_abi(abi: int) -> int:
    """Every filesystem right the given ABI knows (0 without Landlock)."""
    if abi < 1:
        return 0
    rights = _FS_V1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def net_rights_for_abi(abi: int) -> int:
    return NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0


def scopes_for_abi(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def ruleset_attr_size(abi: int) -> int:
    """Size of ``struct landlock_ruleset_attr`` as the given ABI defines it."""
    if abi >= 6:
        return 24  # + scoped
    if abi >= 4:
        return 16  # + handled_access_net
    return 8


def rights_for_grant(grant: Grant, abi: int) -> int:
    """The Landlock rights nono gives one grant, trimmed to what ``abi`` knows."""
    mask = 0
    if grant.access.reads:
        mask |= FS_READ
    if grant.access.writes:
        mask |= FS_WRITE
    if grant.is_file:
        mask &= FS_FILE_RIGHTS
    return mask & fs_rights_for_abi(abi)


class LandlockPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything :func:`apply_plan` needs, computed before fork.

    ``abi`` 0 means Landlock is not applied at all (``report`` says why). ``rules`` are
    ``(path, allowed_access, is_file)``; ``net_rules`` are ``(port, allowed_access)``.
    ``handled_access_net`` is 0 when Landlock does not restrict the network.
    """

    abi: int
    handled_access_fs: int
    handled_access_net: int
    scoped: int
    rules: tuple[tuple[bytes, int, bool], ...]
    net_rules: tuple[tuple[int, int], ...]
    report: LayerReport


def _check_required(required: frozenset[str], abi: int) -> None:
    known = {feature.name for feature in FEATURES}
    unknown = sorted(name for name in required if name.startswith("landlock") and name not in known)
    if unknown:
        raise ValueError(f"unknown Landlock feature(s) required: {', '.join(unknown)}")
    lacking = [f for f in FEATURES if f.name in required and abi < f.abi]
    if not lacking:
        return
    have = f"Landlock ABI v{abi}" if abi else "no Landlock"
    needs = "; ".join(
        f"{f.what} ({f.name}) requires Landlock ABI v{f.abi}+ (Linux {f.kernel}+)" for f in lacking
    )
    raise EnforcementUnavailable(
        f"this kernel has {have}, but the policy requires: {needs}",
        step="landlock",
        detail=",".join(f.name for f in lacking),
        hint="run on a newer kernel with Landlock enabled (lsm=...,landlock), or let the profile "
        "accept partial enforcement of these features",
    )


def _check_ports(ports: Sequence[int], what: str) -> None:
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"invalid {what} port for Landlock: {port!r}")


def compile_plan(
    grants: Sequence[Grant],
    *,
    abi: int,
    net_connect_ports: Sequence[int] | None = None,
    net_bind_ports: Sequence[int] | None = None,
    scope_signals: bool,
    scope_abstract_unix: bool,
    required: frozenset[str],
) -> LandlockPlan:
    """Compile grants into a plan for ``abi`` (from :func:`probe_abi`).

    Every filesystem right the ABI knows is handled, so whatever no grant allows is denied.
    A port list of ``None`` leaves that direction of TCP to other layers; an empty list
    denies it. Raises ``EnforcementUnavailable`` when a feature named in ``required`` needs a
    newer ABI; a missing feature that is not required makes the report ``partial``.
    """
    if abi < 0:
        raise ValueError(f"invalid Landlock ABI {abi}")
    _check_required(required, abi)
    if net_connect_ports is not None:
        _check_ports(net_connect_ports, "connect")
    if net_bind_ports is not None:
        _check_ports(net_bind_ports, "bind")

    if abi == 0:
        return LandlockPlan(
            abi=0,
            handled_access_fs=0,
            handled_access_net=0,
            scoped=0,
            rules=(),
            net_rules=(),
            report=unavailable(
                "landlock",
                "the kernel has no Landlock (needs Linux 5.13+ with landlock in the lsm= list)",
            ),
        )
    abi = min(abi, KNOWN_ABI)
    missing: list[str] = []

    merged: dict[tuple[bytes, bool], int] = {}
    for grant in grants:
        path = os.fsencode(grant.path)
        if not path.startswith(b"/") or b"\0" in path:
            raise ValueError(f"Landlock grant path must be absolute: {grant.path!r}")
        key = (path, grant.is_file)
        merged[key] = merged.get(key, 0) | rights_for_grant(grant, abi)
    rules = tuple((path, mask, is_file) for (path, is_file), mask in merged.items())

    if abi < 2:
        missing.append("files cannot be renamed or linked across directories (REFER needs v2+)")
    if abi < 3:
        missing.append("truncate(2) is not restricted (TRUNCATE needs v3+)")
    if abi < 5:
        missing.append("device ioctls are not restricted (IOCTL_DEV needs v5+)")

    handled_net = 0
    net_masks: dict[int, int] = {}
    if net_connect_ports is not None or net_bind_ports is not None:
        if abi < 4:
            missing.append("TCP ports are not restricted (needs v4+)")
        else:
            directions = ((net_connect_ports, NET_CONNECT_TCP), (net_bind_ports, NET_BIND_TCP))
            for ports, right in directions:
                if ports is None:
                    continue
                handled_net |= right
                for port in ports:
                    net_masks[port] = net_masks.get(port, 0) | right
    net_rules = tuple(sorted(net_masks.items()))

    wanted_scopes = (SCOPE_SIGNAL if scope_signals else 0) | (
        SCOPE_ABSTRACT_UNIX_SOCKET if scope_abstract_unix else 0
    )
    scoped = wanted_scopes & scopes_for_abi(abi)
    if scoped != wanted_scopes:
        missing.append("signals and abstract Unix sockets are not scoped (needs v6+)")

    detail = _describe(abi, len(rules), net_rules, handled_net, scoped)
    if missing:
        report = partial("landlock", f"ABI {abi}: " + "; ".join(missing), detail=detail)
    else:
        report = applied("landlock", detail=detail)
    return LandlockPlan(
        abi=abi,
        handled_access_fs=fs_rights_for_abi(abi),
        handled_access_net=handled_net,
        scoped=scoped,
        rules=rules,
        net_rules=net_rules,
        report=report,
    )


def _describe(
    abi: int, n_rules: int, net_rules: tuple[tuple[int, int], ...], handled_net: int, scoped: int
) -> str:
    parts = [f"abi={abi}", f"fs_rules={n_rules}"]
    for right, label in ((NET_CONNECT_TCP, "connect"), (NET_BIND_TCP, "bind")):
        if handled_net & right:
            ports = ",".join(str(port) for port, mask in net_rules if mask & right)
            parts.append(f"tcp_{label}={ports or 'none'}")
    scope_names = ((SCOPE_SIGNAL, "signal"), (SCOPE_ABSTRACT_UNIX_SOCKET, "abstract_unix"))
    names = [name for bit, name in scope_names if scoped & bit]
    if names:
        parts.append("scopes=" + ",".join(names))
    return " ".join(parts)


# --- probe ------------------------------------------------------------------------------------


def _make_syscall() -> Callable[..., int]:
    # dlopen(NULL): the process's own libc, already mapped; nothing is loaded from disk.
    fn = ctypes.CDLL(None, use_errno=True).syscall
    fn.restype = ctypes.c_long
    return fn


#: Made once, at import: in the fork server, for every launcher it forks. A ``CDLL`` made
#: per call defines a new function-pointer class each time (one per rule of a ruleset), in
#: each launcher, on pages it then copies from the fork server.
_SYSCALL: Final = _make_syscall()


def probe_abi() -> int:
    """The Landlock ABI version of this kernel, or 0 when Landlock is unavailable."""
    ret = _SYSCALL(
        ctypes.c_long(_NR_LANDLOCK_CREATE_RULESET),
        ctypes.c_long(0),
        ctypes.c_long(0),
        ctypes.c_long(LANDLOCK_CREATE_RULESET_VERSION),
    )
    if ret >= 0:
        return int(ret)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EOPNOTSUPP):
        return 0
    raise OSError(err, f"{os.strerror(err)} (landlock_create_ruleset version probe)")


# --- child side: os, ctypes, struct and errno only ---------------------------------------------


def _call(sc: Callable[..., int], nr: int, *args: int | bytes, what: str,
          path: bytes | None = None) -> int:
    """``args``: numbers, or bytes the kernel reads (passed as a pointer to their buffer:
    no ctypes array, whose type each size would otherwise make anew in each launcher)."""
    ret = sc(ctypes.c_long(nr), *[arg if isinstance(arg, bytes) else ctypes.c_long(arg)
                                  for arg in args])
    if ret < 0:
        err = ctypes.get_errno()
        raise _error(err, f"{os.strerror(err)} ({what})", path)
    return int(ret)


def _error(err: int, message: str, path: bytes | None) -> OSError:
    # A str filename: the launcher's error record carries only str details.
    return OSError(err, message, None if path is None else os.fsdecode(path))


def _open_rule_path(sc: Callable[..., int], path: bytes) -> int:
    """An O_PATH fd for ``path``, refusing symlinks anywhere in it.

    Grant paths are canonical, so a symlink here means the tree changed after the policy was
    resolved; following it could move a grant onto another directory.
    """
    if b"\0" in path:
        raise _error(errno.EINVAL, "NUL in a Landlock rule path", path)
    # bytes go to the kernel as pointers to their buffer (NUL-terminated, read only)
    ret = sc(ctypes.c_long(_NR_OPENAT2), ctypes.c_long(_AT_FDCWD), path, _OPEN_HOW,
             ctypes.c_long(len(_OPEN_HOW)))
    if ret >= 0:
        return int(ret)
    err = ctypes.get_errno()
    if err != errno.ENOSYS:
        raise _error(err, f"{os.strerror(err)} (open Landlock rule path)", path)
    # openat2 hidden by a seccomp filter (an old container runtime): the last component
    # can still be checked.
    try:
        return os.open(path, _O_PATH_FLAGS)
    except OSError as exc:
        raise _error(exc.errno or 0, exc.strerror or "", path) from None


def create_ruleset(handled_fs: int, handled_net: int = 0, scoped: int = 0, *,
                   abi: int = KNOWN_ABI) -> int:
    """A new ruleset descriptor handling these rights (child side)."""
    size = ruleset_attr_size(abi)
    attr = struct.pack("=QQQ", handled_fs, handled_net, scoped)[:size]
    return _call(_SYSCALL, _NR_LANDLOCK_CREATE_RULESET, attr, size, 0,
                 what="landlock_create_ruleset")


def add_path_rule(ruleset_fd: int, fd: int, allowed: int, path: bytes | None = None) -> None:
    """Allow ``allowed`` beneath the file or directory open on ``fd`` (child side)."""
    _call(_SYSCALL, _NR_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH,
          _PATH_BENEATH.pack(allowed, fd), 0, what="landlock_add_rule", path=path)


def restrict_self(ruleset_fd: int) -> None:
    """Enforce the ruleset on the calling thread, as one more layer (child side)."""
    _call(_SYSCALL, _NR_LANDLOCK_RESTRICT_SELF, ruleset_fd, 0, what="landlock_restrict_self")


def apply_plan(plan: LandlockPlan) -> None:
    """Enforce ``plan`` on the calling thread. Runs in the child between fork and execve.

    Raises ``OSError`` (with the rule's path when there is one) on the first failure; the
    caller must then abort the launch. A plan with ``abi`` 0 applies nothing.
    """
    if plan.abi == 0:
        return
    ruleset_fd, _ = build_ruleset(plan)
    try:
        restrict_self(ruleset_fd)
    finally:
        os.close(ruleset_fd)


RuleIds = tuple[tuple[int, int], ...]


def build_ruleset(plan: LandlockPlan) -> tuple[int, RuleIds]:
    """The ruleset of ``plan`` (abi > 0), not enforced yet, and the (device, inode) each path
    rule was put on ((0, 0): the path was gone): a warm launcher builds it ahead and
    enforces it at launch if :func:`rules_current` still holds. Raises like
    :func:`apply_plan`."""
    sc = _SYSCALL
    ruleset_fd = create_ruleset(plan.handled_access_fs, plan.handled_access_net, plan.scoped,
                                abi=plan.abi)
    ids: list[tuple[int, int]] = []
    try:
        for path, allowed, is_file in plan.rules:
            try:
                fd = _open_rule_path(sc, path)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    # Gone since the plan was made (an entry of a split grant, a temporary
                    # directory): no rule means no access there, which is never more than
                    # the plan allowed. Every other failure aborts the launch.
                    ids.append((0, 0))
                    continue
                raise
            try:
                st = os.fstat(fd)
                kind = st.st_mode & _S_IFMT
                if kind == _S_IFLNK:
                    raise _error(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if is_file and kind == _S_IFDIR:
                    raise _error(errno.EISDIR, "file grant names a directory", path)
                if not is_file and kind != _S_IFDIR:
                    raise _error(errno.ENOTDIR, "directory grant names a file", path)
                add_path_rule(ruleset_fd, fd, allowed, path)
                ids.append((st.st_dev, st.st_ino))
            finally:
                os.close(fd)
        for port, allowed in plan.net_rules:
            _call(sc, _NR_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_NET_PORT,
                  _NET_PORT.pack(allowed, port), 0, what=f"landlock_add_rule tcp port {port}")
    except BaseException:
        os.close(ruleset_fd)
        raise
    return ruleset_fd, tuple(ids)


def rules_current(plan: LandlockPlan, ids: RuleIds) -> bool:
    """Whether every path rule of ``plan`` still names what :func:`build_ruleset` put its
    rule on (a path replaced since, by an editor's rename, would otherwise get no rule)."""
    for (path, _, _), want in zip(plan.rules, ids, strict=True):
        try:
            st = os.lstat(path)
        except OSError:
            if want != (0, 0):
                return False
            continue
        if (st.st_dev, st.st_ino) != want:
            return False
    return True
