"""Thin ctypes wrappers for the system calls the launcher makes that ``os`` lacks.

Imports only ctypes, os and errno (the launcher's budget). Each wrapper raises ``OSError`` with
the kernel's errno; nothing here retries or falls back.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import Final, TypeVar

from ._syscalls import native_arch

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
# Looked up here, at import (in the fork server): ``CDLL`` makes a function pointer on a
# name's first use, which each forked launcher would otherwise do again.
for _name in ("unshare", "mount", "umount2", "ioctl", "statx", "inotify_init1",
              "inotify_add_watch", "inotify_rm_watch"):
    getattr(_libc, _name)
del _name


def _numbers(*names: str) -> dict[str, int]:
    arch = native_arch()
    out = {}
    for name in names:
        nr = arch.nr(name)
        if nr is None:
            raise OSError(errno.ENOSYS, f"no syscall number for {name} on {arch.name}")
        out[name] = nr
    return out


_NR = _numbers("pivot_root", "keyctl", "capset", "capget", "prctl", "close_range",
                "mount_setattr", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
                "clone")

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 4

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

KEYCTL_JOIN_SESSION_KEYRING = 1


def _check(result: int, what: str = "") -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what) if what else OSError(err, os.strerror(err))
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)))


# ``syscall`` called the ``PyDLL`` way: the GIL stays held across the call, so both processes
# of a ``clone`` come back holding it, as ``os.fork``'s do.
_held_syscall = ctypes.PyDLL(None, use_errno=True).syscall
_held_syscall.restype = ctypes.c_long
_SIGCHLD = 17


#: ``clone``: share the parent's descriptor table; ``close_range``: take a table of one's
#: own first, holding only the descriptors below the range (the rest are never copied).
CLONE_FILES = 0x00000400
CLOSE_RANGE_UNSHARE = 1 << 1
_ALL_ABOVE = ctypes.c_uint(0xFFFFFFFF)


def fork_into(flags: int, below: int = 0) -> int:
    """``os.fork()`` with the new namespaces ``flags`` names (``CLONE_NEW*``): the child
    starts in them (as pid 1 of a new pid namespace), which ``unshare`` cannot do for the
    caller's own pid namespace. Returns 0 in the child, its pid in the parent. The
    interpreter is prepared and told as ``os.fork`` does (``PyOS_BeforeFork``...). For a
    single-threaded caller only (the fork server): a bare ``clone`` skips libc's fork
    handlers, which only matter for locks another thread could hold.

    With ``below``: the child's descriptor table holds only our descriptors below
    ``below``, none of the others copied or referenced (``_lowfds``): it shares ours at the
    clone, and its first act is ``close_range(below, ~0U, CLOSE_RANGE_UNSHARE)``; a child
    that cannot take its own table ends at once (status 126). The caller must not change
    its descriptors below ``below`` until the child has said something after that, or
    ended."""
    api = ctypes.pythonapi
    nr_close_range, start = ctypes.c_long(_NR["close_range"]), ctypes.c_uint(below)
    unshare = ctypes.c_uint(CLOSE_RANGE_UNSHARE)
    shared = CLONE_FILES if below > 0 else 0
    api.PyOS_BeforeFork()
    # newsp 0: the child goes on on a copy of our stack, as after fork
    pid = _held_syscall(ctypes.c_long(_NR["clone"]), ctypes.c_ulong(flags | shared | _SIGCHLD),
                        None, None, None, None)
    if pid == 0:
        if shared and _held_syscall(nr_close_range, start, _ALL_ABOVE, unshare) != 0:
            os._exit(126)  # still sharing the server's table: nothing may run on it
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, os.strerror(err), "clone")
    return int(pid)


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    _check(_libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data is not None else None,
    ), target)


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(_NR["pivot_root"], new_root.encode(), put_old.encode()), new_root)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, *, recursive: bool) -> None:
    """Set mount attributes (read-only, nosuid...) without touching the locked ones."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    _check(_syscall(_NR["mount_setattr"], ctypes.c_int(-100), path.encode(), ctypes.c_uint(flags),
                    ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), path)


def open_tree_clone(path: str) -> int:
    """A detached copy of the mount tree at ``path`` (recursive), as a close-on-exec fd."""
    return _check(_syscall(_NR["open_tree"], ctypes.c_int(-100), path.encode(),
                           ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC)), path)


def idmap_tree(tree: int, attr_set: int, userns: int) -> None:
    """Idmap the detached tree ``tree`` (and every mount in it) through the user namespace
    ``userns``, setting ``attr_set`` as well."""
    attr = _MountAttr(attr_set | MOUNT_ATTR_IDMAP, 0, 0, userns)
    _check(_syscall(_NR["mount_setattr"], ctypes.c_int(tree), b"",
                    ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE), ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr))), "idmap")


def move_mount(tree: int, target: str) -> None:
    """Attach the detached tree ``tree`` at ``target``."""
    _check(_syscall(_NR["move_mount"], ctypes.c_int(tree), b"", ctypes.c_int(-100),
                    target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), target)


_NR_OPENAT2 = 437  # the same on every architecture (the syscall tables' common part)
_RESOLVE_NO_SYMLINKS = 0x04
_MOVE_MOUNT_T_EMPTY_PATH = 0x40


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def open_path(path: str) -> int:
    """``path`` as an ``O_PATH`` descriptor, with no symbolic link followed anywhere on the
    way (``ELOOP`` if there is one)."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_NO_SYMLINKS)
    return _check(_syscall(_NR_OPENAT2, ctypes.c_int(-100), path.encode(),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))), path)


def bind_read_only(fd: int, path: str) -> None:
    """Bind what ``fd`` (an ``O_PATH`` descriptor) is onto itself, read-only, nosuid and
    nodev, and what is mounted below it with it: no second lookup of ``path`` (named in
    errors only) that a rename could redirect."""
    tree = _check(_syscall(_NR["open_tree"], ctypes.c_int(fd), b"",
                           ctypes.c_uint(OPEN_TREE_CLONE | AT_EMPTY_PATH | AT_RECURSIVE
                                         | os.O_CLOEXEC)), path)
    try:
        attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
        _check(_syscall(_NR["mount_setattr"], ctypes.c_int(tree), b"",
                        ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE), ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr))), path)
        _check(_syscall(_NR["move_mount"], ctypes.c_int(tree), b"", ctypes.c_int(fd), b"",
                        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH)),
               path)
    finally:
        os.close(tree)


def bind_link(path: str) -> None:
    """Bind the symbolic link ``path`` onto itself, not what it leads to (the final
    component is followed neither by ``open_tree`` nor by ``move_mount``): a mount point
    cannot be removed, or renamed over, from the mount namespace it is in."""
    tree = _check(_syscall(_NR["open_tree"], ctypes.c_int(-100), path.encode(),
                           ctypes.c_uint(OPEN_TREE_CLONE | _AT_SYMLINK_NOFOLLOW
                                         | os.O_CLOEXEC)), path)
    try:
        move_mount(tree, path)
    finally:
        os.close(tree)


_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6


def overlay(lower: str, upper: str, work: str, attrs: int) -> int:
    """A detached overlay mount (``userxattr``: it may be made in a user namespace) of
    ``lower`` under ``upper``, with ``attrs`` (``MOUNT_ATTR_*``), as a close-on-exec fd for
    :func:`move_mount`. The paths are passed as they are (the new mount API): no ``,``,
    ``:`` or ``\\`` in them needs escaping."""
    fs = _check(_syscall(_NR["fsopen"], b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC)), "overlay")
    try:
        for key, value in ((b"lowerdir+", lower), (b"upperdir", upper), (b"workdir", work)):
            _check(_syscall(_NR["fsconfig"], ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_SET_STRING),
                            key, value.encode(), ctypes.c_int(0)), value)
        _check(_syscall(_NR["fsconfig"], ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_SET_FLAG),
                        b"userxattr", None, ctypes.c_int(0)), "userxattr")
        _check(_syscall(_NR["fsconfig"], ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_CMD_CREATE),
                        None, None, ctypes.c_int(0)), lower)
        return _check(_syscall(_NR["fsmount"], ctypes.c_int(fs), ctypes.c_uint(_FSMOUNT_CLOEXEC),
                               ctypes.c_uint(attrs)), lower)
    finally:
        os.close(fs)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_syscall(_NR["prctl"], ctypes.c_int(option), ctypes.c_ulong(arg2),
                           ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)))


#: ``RLIMIT_CORE`` (soft, hard) of the daemon, the fork server and every session: 1 byte. No
#: file dump fits in it (the kernel wants at least a page), and 1 is the kernel's sentinel
#: for "no dump at all" that also stops a pipe ``core_pattern`` (systemd-coredump, apport),
#: whose helper runs as root on the host whatever the limit otherwise (0 included).
NO_CORE_DUMP: Final = (1, 1)


def set_no_core_dump() -> None:
    """``RLIMIT_CORE`` to :data:`NO_CORE_DUMP`; to 0 where the hard limit we were given is 0
    and cannot be raised (an unprivileged process started with ``LimitCORE=0``)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, NO_CORE_DUMP)
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def forbid_core_dumps() -> None:
    """No core dump of this process, ever: it holds real credentials (the daemon) or launch
    plans (the fork server). Not dumpable (which also keeps other processes of our uid out of
    its memory and ``/proc/<pid>/*``), and ``RLIMIT_CORE`` :data:`NO_CORE_DUMP`, which also
    holds with a ``suid_dumpable`` of 2 and is inherited by everything started from here
    (sessions set the same limit for themselves, and their seccomp filter keeps it)."""
    set_no_core_dump()
    prctl(PR_SET_DUMPABLE, 0)


#: ``mlockall`` flags: what is mapped now, what will be, each page as it is first touched.
MCL_CURRENT: Final = 1
MCL_FUTURE: Final = 2
MCL_ONFAULT: Final = 4
_LOCK_FLAGS: Final = MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT
#: The capability that lifts ``RLIMIT_MEMLOCK`` for ``mlock``.
CAP_IPC_LOCK: Final = 14
#: Did :func:`keep_out_of_swap` lock this process?
_locked = False


def keep_out_of_swap() -> bool:
    """Lock this process's pages in memory, those mapped now and later, each once touched:
    the daemon's real credentials (and the fork server's launch plans) never reach a swap
    device, where they would outlive the process. Only where the lock cannot run into
    ``RLIMIT_MEMLOCK`` (``CAP_IPC_LOCK`` in effect, as for root, or no limit): under a finite
    limit a later allocation past it would fail. The limit is never raised, since every
    session inherits it; the lock itself is not inherited. True if locked."""
    import resource

    if resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/status", encoding="ascii") as status:
                effective = next(int(line.split()[1], 16) for line in status
                                 if line.startswith("CapEff:"))
        except (OSError, StopIteration, ValueError):
            return False
        if not effective >> CAP_IPC_LOCK & 1:
            return False
    global _locked
    result: int = _libc.mlockall(ctypes.c_int(_LOCK_FLAGS))
    _locked = result == 0
    return _locked


def while_unlocked(work: Callable[[], T]) -> T:
    """``work()`` with this process's memory unlocked for its length, if
    :func:`keep_out_of_swap` locked it, then locked again. The kernel will not discard locked
    pages (``MADV_DONTNEED``), so ``malloc_trim`` gives nothing of a locked heap back."""
    if not _locked:
        return work()
    _libc.munlockall()
    try:
        return work()
    finally:
        _libc.mlockall(ctypes.c_int(_LOCK_FLAGS))


def close_range(first: int, last: int) -> None:
    _check(_syscall(_NR["close_range"], ctypes.c_uint(first), ctypes.c_uint(last),
                    ctypes.c_uint(0)))


def join_new_session_keyring() -> None:
    _check(_syscall(_NR["keyctl"], ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), None))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


# ctypes array types, made here once (in the fork server) rather than in each launcher: a
# new array type is a class, about 0.2 ms and a hundred page faults for a launcher's first.
_CapPair = _CapData * 2
_IFREQ = 40  # struct ifreq
_IfReq = ctypes.c_char * _IFREQ


_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SECBITS_LOCKED_NOROOT = 0x3F  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS each with its lock bit
_SECBIT_NO_CAP_AMBIENT_RAISE_AND_LOCK = 0xC0


_cap_last: list[int] = []  # once read: the kernel's CAP_LAST_CAP, fixed when it was built


def cap_last() -> int:
    """The highest capability number this kernel knows (``/proc/sys/kernel/cap_last_cap``,
    a constant of the running kernel). Read once per process; the fork server reads it at
    its start, so that launchers (its children) do not each read it again in their fresh
    ``/proc``. 40 (Linux 5.9 onwards) when it cannot be read, then asked again next time."""
    if not _cap_last:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _cap_last.append(int(f.read()))
        except (OSError, ValueError):
            return 40
    return _cap_last[0]


def drop_bounding_set() -> bool:
    """Empty the bounding set (what ``execve`` could give back; the capabilities held now
    stay, so a warm launcher's init does this ahead of its launch). False if this process
    may not: a uid other than 0 holding no capability, outside any user namespace of its own
    (landlock-only mode), which has nothing to drop, and with no_new_privs nothing to gain."""
    for cap in range(cap_last() + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno == errno.EPERM and uid_without_capabilities():
                return False
            if exc.errno != errno.EINVAL:
                raise
    return True


def drop_all_capabilities(bounding_dropped: bool = False) -> None:
    """Empty every capability set and lock root out of regaining them at execve
    (``bounding_dropped``: :func:`drop_bounding_set` has already emptied the bounding set).

    Needed even for a non-root uid: inside its user namespace the launcher holds every
    capability until here, and a session allowed to run as uid 0 would regain them at exec
    without the securebits.
    """
    # A process that may not touch the bounding set may not set securebits either, and
    # needs neither (see drop_bounding_set).
    unprivileged = not bounding_dropped and not drop_bounding_set()
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    if not unprivileged:
        prctl(PR_SET_SECUREBITS, _SECBITS_LOCKED_NOROOT | _SECBIT_NO_CAP_AMBIENT_RAISE_AND_LOCK)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapPair()
    _check(_syscall(_NR["capset"], ctypes.byref(header), ctypes.byref(data)))


def keep_capabilities_across_exec() -> None:
    """Raise every permitted capability into the inheritable and ambient sets, so that a
    process holding them as a user namespace's owner (not uid 0 there) keeps them through
    ``execve`` (the launcher's outer process becoming ``nono-reaper --outer``)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapPair()
    _check(_syscall(_NR["capget"], ctypes.byref(header), ctypes.byref(data)))
    for half in data:
        half.inheritable = half.permitted
    _check(_syscall(_NR["capset"], ctypes.byref(header), ctypes.byref(data)))
    for cap in range(64):
        if data[cap // 32].permitted & (1 << (cap % 32)):
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def uid_without_capabilities() -> bool:
    """Whether this process has a uid other than 0 (all four), no permitted capability and
    no_new_privs set."""
    if 0 in os.getresuid() or prctl(PR_GET_NO_NEW_PRIVS) != 1:
        return False
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapPair()
    _check(_syscall(_NR["capget"], ctypes.byref(header), ctypes.byref(data)))
    return not any(d.permitted or d.effective for d in data)


def set_loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (SIOCSIFFLAGS, no netlink needed)."""
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = bytearray(struct.pack("16sH22x", b"lo", 0))
        buf = _IfReq.from_buffer(req)
        _check(_libc.ioctl(ctypes.c_int(s.fileno()), ctypes.c_ulong(siocgifflags), buf), "lo")
        flags = struct.unpack_from("16sH", req)[1] | iff_up
        struct.pack_into("16sH", req, 0, b"lo", flags)
        _check(_libc.ioctl(ctypes.c_int(s.fileno()), ctypes.c_ulong(siocsifflags), buf), "lo")


def set_controlling_tty(fd: int) -> None:
    tiocsctty = 0x540E
    _check(_libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(tiocsctty), ctypes.c_int(0)), "tty")


IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_ONLYDIR = 0x01000000


def inotify_init1(flags: int) -> int:
    return _check(_libc.inotify_init1(ctypes.c_int(flags)), "inotify")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(_libc.inotify_add_watch(ctypes.c_int(fd), path.encode(),
                                          ctypes.c_uint32(mask)), path)


def inotify_rm_watch(fd: int, wd: int) -> None:
    _libc.inotify_rm_watch(ctypes.c_int(fd), ctypes.c_int(wd))  # a gone watch is not an error


_CLOCK_MONOTONIC = 1
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_NONBLOCK = os.O_NONBLOCK


def timerfd() -> int:
    """A non-blocking monotonic timerfd (``os.timerfd_create`` is Python 3.13's)."""
    return _check(_libc.timerfd_create(ctypes.c_int(_CLOCK_MONOTONIC),
                                       ctypes.c_int(_TFD_CLOEXEC | _TFD_NONBLOCK)), "timerfd")


def timerfd_after(fd: int, seconds: float) -> None:
    """Arm ``fd`` to become readable once, ``seconds`` from now (0 disarms it)."""
    whole, rest = divmod(round(seconds * 1e9), 1_000_000_000)
    spec = (ctypes.c_long * 4)(0, 0, whole, rest)  # struct itimerspec: interval, value
    _check(_libc.timerfd_settime(ctypes.c_int(fd), ctypes.c_int(0), spec, None), "timerfd")


_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_MODE = 0x2
_STATX_MNT_ID = 0x1000
_STATX_BUF = 256
_StatxBuf = ctypes.c_char * _STATX_BUF  # (see ``_CapPair``)
_STATX_MODE_OFFSET = 28
_STATX_MNT_ID_OFFSET = 144


def mount_id(path: str) -> tuple[int, int]:
    """(mount id, st_mode) of what ``path`` names, without following a final symlink: the
    id is that of the mount whose root ``path`` is if something is mounted on it, else of the
    mount containing it."""
    buf = _StatxBuf()
    _check(_libc.statx(ctypes.c_int(-100), path.encode(), ctypes.c_int(_AT_SYMLINK_NOFOLLOW),
                       ctypes.c_uint(_STATX_MODE | _STATX_MNT_ID), buf), path)
    raw = buf.raw
    mode = int.from_bytes(raw[_STATX_MODE_OFFSET:_STATX_MODE_OFFSET + 2], "little")
    mnt = int.from_bytes(raw[_STATX_MNT_ID_OFFSET:_STATX_MNT_ID_OFFSET + 8], "little")
    return mnt, mode
