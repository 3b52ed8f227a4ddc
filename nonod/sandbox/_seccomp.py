"""The seccomp layer: a classic-BPF syscall filter, built before fork and installed last.

We write the BPF program ourselves instead of using libseccomp. The launcher path must stay
dependency-free (it imports only the standard library, STYLE item 9), the program is small and
fixed, and spelling it out instruction by instruction keeps visible the details that a generic
rule compiler would hide from review: the architecture check comes first, integer arguments are
compared on their low 32 bits only (the kernel truncates ``int`` and ``unsigned int`` arguments,
so high bits must not let a value slip past), and every jump is range-checked.

Two halves, on either side of ``fork``:

- :func:`build_filter` runs in the parent and returns the packed ``struct sock_filter[]``.
- :func:`install_filter` runs in the child between fork and ``execve``, after
  ``PR_SET_NO_NEW_PRIVS``; it uses only ``ctypes``, ``os``, ``struct`` and ``errno``.

What the filter does, in order (default allow: programs must run normally, so this is a list of
refusals, each answered with an errno the program can handle):

1. A syscall from a foreign ABI kills the process: an ``arch`` other than the native one (i386
   ``int 0x80`` on x86_64, AArch32 on aarch64) or, on x86_64, an x32 syscall number. Syscall
   numbers mean something else there, so no errno answer could be trusted to cover them.
   A number above the newest the tables know (``Arch.newest``) fails with ``ENOSYS``.
2. The rows of the deny table (``_seccomp_table.SYSCALLS``) fail with their errno: ``clone3``
   with ``ENOSYS`` (its flags sit behind a pointer a filter cannot read; libc then falls back to
   ``clone``), the rest with ``EPERM``. ``clone`` with a ``CLONE_NEW*`` flag fails with
   ``EPERM``; ``personality`` is allowed only as a query or to set ``PER_LINUX``.
3. ``ioctl`` requests of the table's ``IOCTLS`` (``TIOCSTI``, ``TIOCLINUX``, ``TIOCSETD``...)
   fail with their errno; ``fcntl(F_SETLEASE)`` fails with ``EPERM`` (a file lease stalls
   every other process's opens of a shared file).
4. ``socket`` allows ``AF_UNIX``, ``AF_INET`` and ``AF_INET6`` (and ``AF_NETLINK`` with
   ``NETLINK_ROUTE`` when asked); other families fail with ``EAFNOSUPPORT``. See
   :class:`SeccompOptions` for the inet socket types and protocols and the Landlock-only
   network fallback. ``setsockopt`` of a TCP signature key (``TCP_KEY_OPTIONS``) fails with
   ``ENOPROTOOPT``. Both keep the kernel from loading modules (through modprobe on the
   host) for a protocol or a hash the session names.

``docs/seccomp.md`` explains each refusal and errno; :func:`describe_filter` lists them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from typing import Final, final

from ._seccomp_table import HOST_INOTIFY, HOST_IPC, IOCTLS, SYSCALLS, TRACING
from ._syscalls import Arch, arch_for_machine, native_arch

# -- classic BPF and seccomp ABI (linux/bpf_common.h, linux/filter.h, linux/seccomp.h) ----------

_INSN: Final = struct.Struct("=HBBI")  # struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
BPF_MAXINSNS: Final = 4096
_MAX_JUMP: Final = 0xFF
_U32: Final = 0xFFFFFFFF

_LD_W_ABS: Final = 0x20
_ALU_AND_K: Final = 0x54
_JEQ_K: Final = 0x15
_JGE_K: Final = 0x35
_JSET_K: Final = 0x45
_RET_K: Final = 0x06

SECCOMP_RET_KILL_PROCESS: Final = 0x80000000
SECCOMP_RET_ERRNO: Final = 0x00050000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
SECCOMP_SET_MODE_FILTER: Final = 1

# struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
_NR_OFFSET: Final = 0
_ARCH_OFFSET: Final = 4


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of ``args[index]`` (every supported ABI is little-endian)."""
    return 16 + 8 * index


def _arg_high(index: int) -> int:
    """Offset of the high 32 bits of ``args[index]``."""
    return _arg_low(index) + 4


# -- values the filter compares against ----------------------------------------------------------

CLONE_NEWTIME: Final = 0x00000080  # inside CSIGNAL for clone(2): only clone3/unshare take it
CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000
_CLONE_NAMESPACES: Final = (
    CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    | CLONE_NEWCGROUP | CLONE_NEWTIME
)

PERSONALITY_QUERY: Final = 0xFFFFFFFF
PER_LINUX: Final = 0

AF_UNIX: Final = 1
AF_INET: Final = 2
AF_INET6: Final = 10
AF_NETLINK: Final = 16
NETLINK_ROUTE: Final = 0

_SOCK_TYPE_MASK: Final = 0xF  # the low bits of socket(2)'s type; the rest are SOCK_* flags
SOCK_STREAM: Final = 1
SOCK_DGRAM: Final = 2
SOCK_RAW: Final = 3
SOCK_SEQPACKET: Final = 5
SOCK_PACKET: Final = 10  # socket(AF_INET, SOCK_PACKET) is turned into an AF_PACKET socket

IPPROTO_IP: Final = 0
IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58
IPPROTO_MPTCP: Final = 262
TCP_FASTOPEN: Final = 23
TCP_FASTOPEN_CONNECT: Final = 30
#: TCP signature keys (RFC 2385 MD5, RFC 5925 TCP-AO): setting one allocates the hash the
#: caller names (TCP-AO: any name, as ``hmac(...)``), which the crypto API loads as a module
#: (``crypto-<name>``) through modprobe on the host when the kernel lacks it.
TCP_KEY_OPTIONS: Final = (14, 32, 38, 39, 40)  # MD5SIG, MD5SIG_EXT, AO_ADD_KEY, _DEL_KEY, _INFO
MSG_FASTOPEN: Final = 0x20000000

# chmod(path, mode), fchmod(fd, mode), fchmodat(dirfd, path, mode), fchmodat2(..., mode, flags),
# and the creations that take a mode: open(path, flags, mode), openat(dirfd, path, flags, mode),
# creat(path, mode), mknod(path, mode, dev), mknodat(dirfd, path, mode, dev). (mkdir's is not:
# set-user-ID means nothing on a directory, set-group-ID there only passes its group on.)
_MODE_ARG: Final = (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2),
                    ("open", 2), ("openat", 3), ("creat", 1), ("mknod", 1), ("mknodat", 2))
S_ISUID: Final = 0o4000
S_ISGID: Final = 0o2000

# bind(fd, addr, int addrlen) without socket(AF_UNIX): a socket of a socketpair binds an
# abstract name, in the host's network namespace for a session without one of its own, which
# the host's service that wants it then cannot bind (EADDRINUSE). The filter cannot read the
# address, only its length: an inet or netlink one is 12 (sockaddr_nl), 16 (sockaddr_in), 24
# or 28 (sockaddr_in6) bytes, or a larger buffer (sockaddr_storage, 128), which no Unix
# address can be (sockaddr_un is 110 bytes). Abstract names of those four lengths less 3
# bytes stay reachable.
BIND_LENGTHS: Final = (12, 16, 24, 28)
_UNIX_ADDR_MAX: Final = 110  # sizeof(struct sockaddr_un)

# fcntl(fd, unsigned int cmd, arg): a file lease makes every open of the file that conflicts
# with it (any open, for a write lease; a write or truncation, for a read lease) wait for the
# holder, up to fs.lease-break-time (45 s), or fail EWOULDBLOCK if non-blocking. Only the
# file's owner needs to ask: a session leasing a file of a grant it shares with the host or
# another session stalled their opens, and the daemon's reads of a workdir's files.
F_SETLEASE: Final = 1024

# setrlimit(resource, rlim) and prlimit64(pid, resource, new_rlim, old_rlim): the session's
# RLIMIT_CORE stays at 1 byte, the kernel's "no dump at all" (``_libc.NO_CORE_DUMP``): lowered
# to 0, a pipe ``core_pattern`` would run the host's helper on the session's memory again.
RLIMIT_CORE: Final = 4

# Calls that act on another process named by pid (arg0, or ``who`` after ``which``) with no
# check beyond the same uid: no Landlock scope or ptrace check covers them, and without a pid
# namespace every process of the uid on the host is named (``refuse_host_pids``).
_PID_ARG0: Final = ("sched_setaffinity", "sched_setscheduler", "sched_setparam",
                    "sched_setattr")
_WHICH_WHO: Final = (("setpriority", 2), ("ioprio_set", 3))  # (call, its "every process of
# the uid" which: PRIO_USER, IOPRIO_WHO_USER, where who 0 means the caller's own uid)

# The session's init in its own pid namespace (``protect_init``).
INIT_PID: Final = 1

# sendto(fd, buf, len, flags, ...), sendmsg(fd, msg, flags), sendmmsg(fd, vec, vlen, flags)
_SEND_FLAGS_ARG: Final = (("sendto", 3), ("sendmsg", 2), ("sendmmsg", 3))


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class SeccompOptions:
    """What varies between sessions' filters.

    ``landlock_net_fallback``: the session has no private network namespace and relies on
    Landlock's TCP rules, which see nothing but TCP. Then inet sockets must be plain TCP:
    other types (UDP, raw) fail with ``EPERM``, other stream protocols (MPTCP, SCTP, SMC) with
    ``EPROTONOSUPPORT``, and TCP fast open (``TCP_FASTOPEN``/``TCP_FASTOPEN_CONNECT`` options,
    ``MSG_FASTOPEN`` sends, which connect without a connect call) with ``EOPNOTSUPP``.
    Without it, inet sockets of TCP, UDP and ping (ICMP datagrams) are allowed (the network
    namespace contains them), raw and packet ones fail with ``EPERM``, and any other protocol
    or a seqpacket socket with ``EPROTONOSUPPORT``: the kernel would run modprobe on the
    host for a protocol it lacks, and load its module where the host has one.

    ``allow_netlink_route``: ``AF_NETLINK`` sockets with protocol ``NETLINK_ROUTE`` are allowed
    (other netlink protocols fail with ``EPROTONOSUPPORT``); otherwise the whole family fails
    with ``EAFNOSUPPORT``.

    ``allow_unix_sockets``: ``socket(AF_UNIX, ...)`` is allowed. Otherwise it fails with
    ``EPERM``: Landlock (ABI 7) does not mediate connecting to a pathname socket and a
    read-only mount does not stop it, so any agent or service socket in the session's view
    would be reachable. ``socketpair(AF_UNIX)`` is always allowed (it reaches nothing); a
    ``bind`` whose address length no inet or netlink address has (``BIND_LENGTHS``, and 111
    bytes or more) fails with ``EPERM`` then: it could only name a Unix socket, and a socket
    of a ``socketpair`` would take an abstract name of the host's network namespace.

    ``allow_ptrace``: ``ptrace`` and ``process_vm_readv`` are allowed, for ``nonoctl learn``'s
    recording sessions only, where strace runs inside the session as the program's parent.
    Everything else of the first denial group (``process_vm_writev``, ``pidfd_getfd``) stays
    refused. Which processes can be traced is still bounded by the session: its own pid
    namespace, the same Landlock domain, and no capabilities. Never set from a profile.

    ``refuse_host_ipc``: the rows of ``HOST_IPC`` (System V IPC, POSIX message queues) fail
    with ``EPERM``: the session shares the host's IPC namespace (landlock-only mode).

    ``refuse_host_pids``: calls that change another process by pid, checked by the kernel for
    the same uid only, fail with ``EPERM`` unless they name the caller (pid 0): ``prlimit64``
    setting a limit, ``setpriority`` and ``ioprio_set`` (and their every-process-of-the-uid
    forms), ``sched_setaffinity``, ``sched_setscheduler``, ``sched_setparam``,
    ``sched_setattr``. The session shares the host's pid namespace (landlock-only mode).

    ``protect_init``: the same calls fail with ``EPERM`` when they name pid 1 (and
    ``setpriority``/``ioprio_set`` process group 1, or every process of a uid: ``PRIO_USER``,
    ``IOPRIO_WHO_USER``), the session's init in its own pid namespace: it runs with the
    program's uid in the program's user namespace, so the kernel would let the program lower
    its limits (``RLIMIT_CPU``: the kernel kills it; ``NOFILE``) or starve it (``SCHED_IDLE``,
    nice 19, the idle I/O class), and with it the exit record and the signals it forwards.

    ``refuse_host_inotify``: the rows of ``HOST_INOTIFY`` fail with ``ENOSYS``: the session
    sees the host's tree, not a view of its grants, and shares the host's inotify counts.

    ``refuse_listen``: ``listen`` fails with ``EACCES`` (what a refused ``bind`` gets from
    Landlock). On an unbound TCP socket ``listen`` binds an ephemeral port on every address
    without the kernel asking Landlock (ABI 7 checks ``bind`` only): a session that may bind
    nothing would accept connections from the host's network. Set where the session has the
    host's network, may bind no port and creates no Unix sockets (the only other sockets a
    program could listen on).
    """

    landlock_net_fallback: bool = False
    allow_netlink_route: bool = False
    allow_unix_sockets: bool = False
    allow_ptrace: bool = False
    refuse_host_ipc: bool = False
    refuse_host_pids: bool = False
    protect_init: bool = False
    refuse_host_inotify: bool = False
    refuse_listen: bool = False


def _errno(value: int) -> int:
    return SECCOMP_RET_ERRNO | value


def _errno_name(value: int) -> str:
    """The errno's name as the docs spell it (Python calls Linux's ``EOPNOTSUPP`` ``ENOTSUP``)."""
    return "EOPNOTSUPP" if value == errno.EOPNOTSUPP else errno.errorcode[value]


def _label(value: int) -> str:
    """The label of the instruction that returns errno ``value`` (``EPERM`` -> ``eperm``)."""
    return _errno_name(value).lower()


def _refused(arch: Arch, options: SeccompOptions) -> list[tuple[int, int, str, str]]:
    """The deny table's rows for ``arch``: (number, errno, name, why), in table order."""
    rows = (*SYSCALLS, *(HOST_IPC if options.refuse_host_ipc else ()),
            *(HOST_INOTIFY if options.refuse_host_inotify else ()))
    return [(number, row.errno, row.name, row.why) for row in rows
            if (number := arch.nr(row.name)) is not None
            and not (options.allow_ptrace and row.name in TRACING)]


@final
class Assembler:
    """A classic-BPF assembler with forward labels, for seccomp programs.

    Conditional jumps name their targets (``None`` means the next instruction). Classic BPF
    jumps only forward, by at most 255 instructions; :meth:`assemble` checks every jump and
    raises ``ValueError`` for one it cannot encode, rather than letting an offset wrap around.
    """

    def __init__(self) -> None:
        self._insns: list[tuple[int, str | None, str | None, int]] = []
        self._labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._insns)

    def label(self, name: str) -> None:
        """Mark the next instruction as ``name``."""
        if name in self._labels:
            raise ValueError(f"label {name!r} is defined twice")
        self._labels[name] = len(self._insns)

    def load(self, offset: int) -> None:
        """A = the 32-bit word at ``offset`` in ``seccomp_data``."""
        self._emit(_LD_W_ABS, None, None, offset)

    def and_(self, mask: int) -> None:
        """A &= ``mask``."""
        self._emit(_ALU_AND_K, None, None, mask)

    def jeq(self, k: int, *, jt: str | None = None, jf: str | None = None) -> None:
        """Go to ``jt`` if A == k, else to ``jf``."""
        self._emit(_JEQ_K, jt, jf, k)

    def jge(self, k: int, *, jt: str | None = None, jf: str | None = None) -> None:
        """Go to ``jt`` if A >= k (unsigned), else to ``jf``."""
        self._emit(_JGE_K, jt, jf, k)

    def jset(self, k: int, *, jt: str | None = None, jf: str | None = None) -> None:
        """Go to ``jt`` if A & k is not zero, else to ``jf``."""
        self._emit(_JSET_K, jt, jf, k)

    def ret(self, value: int) -> None:
        """Return ``value`` (a ``SECCOMP_RET_*`` action) for this syscall."""
        self._emit(_RET_K, None, None, value)

    def assemble(self) -> bytes:
        """The program as packed ``struct sock_filter`` instructions, native byte order."""
        if not self._insns:
            raise ValueError("empty BPF program")
        if len(self._insns) > BPF_MAXINSNS:
            raise ValueError(
                f"BPF program has {len(self._insns)} instructions; the kernel takes at most "
                f"{BPF_MAXINSNS}"
            )
        if self._insns[-1][0] != _RET_K:
            raise ValueError("BPF program must end with a return")
        out = bytearray()
        for index, (code, jt, jf, k) in enumerate(self._insns):
            out += _INSN.pack(code, self._offset(index, jt), self._offset(index, jf), k)
        return bytes(out)

    def _emit(self, code: int, jt: str | None, jf: str | None, k: int) -> None:
        if not 0 <= k <= _U32:
            raise ValueError(f"BPF operand {k:#x} does not fit in 32 bits")
        self._insns.append((code, jt, jf, k))

    def _offset(self, index: int, target: str | None) -> int:
        if target is None:
            return 0
        position = self._labels.get(target)
        if position is None:
            raise ValueError(f"jump to undefined label {target!r}")
        if position >= len(self._insns):
            raise ValueError(f"label {target!r} marks no instruction")
        offset = position - index - 1
        if offset < 0:
            raise ValueError(
                f"jump from instruction {index} back to {target!r}: BPF jumps only forward"
            )
        if offset > _MAX_JUMP:
            raise ValueError(
                f"jump from instruction {index} to {target!r} skips {offset} instructions; "
                f"classic BPF allows at most {_MAX_JUMP}"
            )
        return offset


def _nr(arch: Arch, name: str) -> int:
    number = arch.nr(name)
    if number is None:
        raise ValueError(f"no syscall {name!r} in the {arch.name} table")
    return number


def build_filter(options: SeccompOptions, *, arch: Arch | None = None) -> bytes:
    """Build the session's seccomp program (runs in the parent, before fork).

    ``arch`` defaults to the running machine's (:func:`native_arch`, which raises
    ``EnforcementUnavailable`` on an unsupported machine); passing one builds for another
    architecture, as the tests do. Returns the bytes :func:`install_filter` takes.
    """
    arch = arch if arch is not None else native_arch()
    fallback = options.landlock_net_fallback
    a = Assembler()

    # 1. The ABI, before anything reads a syscall number.
    a.load(_ARCH_OFFSET)
    a.jeq(arch.audit_arch, jt="native_arch")
    a.ret(SECCOMP_RET_KILL_PROCESS)
    a.label("native_arch")
    a.load(_NR_OFFSET)
    if arch.x32_bit:
        a.jge(arch.x32_bit, jf="known")
        a.ret(SECCOMP_RET_KILL_PROCESS)
    a.label("known")
    # Syscalls newer than the table: what a kernel without them answers.
    a.jge(arch.newest + 1, jt=_label(errno.ENOSYS))

    # Syscalls whose arguments decide, then the deny table. A holds the syscall number.
    a.jeq(_nr(arch, "clone"), jt="clone")
    a.jeq(_nr(arch, "ioctl"), jt="ioctl")
    a.jeq(_nr(arch, "socket"), jt="socket")
    a.jeq(_nr(arch, "socketpair"), jt="socketpair")
    a.jeq(_nr(arch, "personality"), jt="personality")
    a.jeq(_nr(arch, "setrlimit"), jt="setrlimit")
    a.jeq(_nr(arch, "prlimit64"), jt="prlimit64")
    host_pids = options.refuse_host_pids
    init_pid = options.protect_init and not host_pids  # refusing every pid but 0 covers it
    if host_pids or init_pid:
        for name in _PID_ARG0:
            if (number := arch.nr(name)) is not None:
                a.jeq(number, jt="pid_arg0")
        for name, _ in _WHICH_WHO:
            a.jeq(_nr(arch, name), jt=name)
    mode_args = sorted({index for name, index in _MODE_ARG if arch.nr(name) is not None})
    for name, index in _MODE_ARG:
        if (number := arch.nr(name)) is not None:
            a.jeq(number, jt=f"mode_arg{index}")
    a.jeq(_nr(arch, "setsockopt"), jt="setsockopt")
    a.jeq(_nr(arch, "fcntl"), jt="fcntl")
    if not options.allow_unix_sockets:
        a.jeq(_nr(arch, "bind"), jt="bind")
    if fallback:
        for name, _ in _SEND_FLAGS_ARG:
            a.jeq(_nr(arch, name), jt=name)
    if options.refuse_listen:
        a.jeq(_nr(arch, "listen"), jt=_label(errno.EACCES))
    refused = _refused(arch, options)
    for number, value, _, _ in refused:
        a.jeq(number, jt=_label(value))
    a.ret(SECCOMP_RET_ALLOW)

    # 2. clone(flags, ...): flags is arg0 on both ABIs; the kernel reads its low 32 bits.
    a.label("clone")
    a.load(_arg_low(0))
    a.jset(_CLONE_NAMESPACES, jt="eperm", jf="allow")

    # 3. personality(unsigned int persona).
    a.label("personality")
    a.load(_arg_low(0))
    a.jeq(PERSONALITY_QUERY, jt="allow")
    a.jeq(PER_LINUX, jt="allow", jf="eperm")

    # 4. A mode with the set-user-ID or set-group-ID bit: a file the session writes would
    # run as its owner (root, for a root session) for any user of the host who runs it.
    for index in mode_args:
        a.label(f"mode_arg{index}")
        a.load(_arg_low(index))
        a.jset(S_ISUID | S_ISGID, jt="eperm", jf="allow")

    # 4b. The core dump limit is set for the session (1 byte: no dump, not even through a
    # pipe helper); reading it stays allowed (prlimit64 with no new limit).
    a.label("setrlimit")
    a.load(_arg_low(0))
    a.jeq(RLIMIT_CORE, jt="eperm", jf="allow")
    # prlimit64 with a new limit: not RLIMIT_CORE, and (refuse_host_pids) only for pid 0.
    a.label("prlimit64")
    a.load(_arg_low(2))
    a.jeq(0, jf="prlimit64_set")
    a.load(_arg_high(2))
    a.jeq(0, jt="allow")
    a.label("prlimit64_set")
    a.load(_arg_low(1))
    a.jeq(RLIMIT_CORE, jt="eperm")
    if host_pids:
        a.load(_arg_low(0))
        a.jeq(0, jt="allow", jf="eperm")
    elif init_pid:
        a.load(_arg_low(0))
        a.jeq(INIT_PID, jt="eperm", jf="allow")
    else:
        a.ret(SECCOMP_RET_ALLOW)

    # 4c. Another process by pid (refuse_host_pids): only pid 0, the caller, is allowed;
    # (protect_init) any but the init, pid 1 (or its process group, 1, or its uid's every
    # process).
    if host_pids:
        a.label("pid_arg0")
        a.load(_arg_low(0))
        a.jeq(0, jt="allow", jf="eperm")
        for name, every in _WHICH_WHO:
            a.label(name)
            a.load(_arg_low(0))
            a.jeq(every, jt="eperm")
            a.load(_arg_low(1))
            a.jeq(0, jt="allow", jf="eperm")
    elif init_pid:
        a.label("pid_arg0")
        a.load(_arg_low(0))
        a.jeq(INIT_PID, jt="eperm", jf="allow")
        for name, every in _WHICH_WHO:
            a.label(name)
            a.load(_arg_low(0))
            a.jeq(every, jt="eperm")  # a uid's every process: the init is one of them
            a.load(_arg_low(1))
            a.jeq(INIT_PID, jt="eperm", jf="allow")

    # 5. ioctl(fd, unsigned int cmd, arg): req | 1 << 32 is the same request to the kernel.
    a.label("ioctl")
    a.load(_arg_low(1))
    for ioctl in IOCTLS:
        a.jeq(ioctl.request, jt=_label(ioctl.errno))
    a.ret(SECCOMP_RET_ALLOW)

    # 5b. fcntl(fd, unsigned int cmd, arg): no file leases (F_SETLEASE, on its low 32 bits).
    a.label("fcntl")
    a.load(_arg_low(1))
    a.jeq(F_SETLEASE, jt="eperm", jf="allow")

    # 5c. bind(fd, addr, int addrlen) when no Unix socket may be made: an address no inet or
    # netlink socket takes names a Unix socket (a socketpair's: an abstract name).
    if not options.allow_unix_sockets:
        a.label("bind")
        a.load(_arg_low(2))
        a.jge(_UNIX_ADDR_MAX + 1, jt="allow")
        for length in BIND_LENGTHS:
            a.jeq(length, jt="allow")
        a.ret(_errno(errno.EPERM))

    # 6. socket(int family, int type, int protocol) and socketpair(family, ...).
    a.label("socket")
    a.load(_arg_low(0))
    a.jeq(AF_UNIX, jt="allow" if options.allow_unix_sockets else "eperm")
    a.jeq(AF_INET, jt="socket_inet")
    a.jeq(AF_INET6, jt="socket_inet")
    if options.allow_netlink_route:
        a.jeq(AF_NETLINK, jf="eafnosupport")
        a.load(_arg_low(2))
        a.jeq(NETLINK_ROUTE, jt="allow", jf="eprotonosupport")
    else:
        a.ret(_errno(errno.EAFNOSUPPORT))
    a.label("socket_inet")
    a.load(_arg_low(1))
    a.and_(_SOCK_TYPE_MASK)
    if fallback:
        a.jeq(SOCK_STREAM, jf="eperm")
        a.load(_arg_low(2))
        a.jeq(IPPROTO_IP, jt="allow")
        a.jeq(IPPROTO_TCP, jt="allow", jf="eprotonosupport")
    else:
        # Only what every kernel has built in: a (type, protocol) the kernel lacks makes it
        # run modprobe on the host, as root, twice per call, and load the module if the
        # host has it (SCTP, L2TP, SMC: kernel code no agent needs, with a history of bugs).
        a.jeq(SOCK_STREAM, jt="inet_stream")
        a.jeq(SOCK_DGRAM, jt="inet_dgram")
        a.jeq(SOCK_SEQPACKET, jt="eprotonosupport", jf="eperm")
        a.label("inet_stream")
        a.load(_arg_low(2))
        a.jeq(IPPROTO_IP, jt="allow")
        a.jeq(IPPROTO_TCP, jt="allow", jf="eprotonosupport")
        a.label("inet_dgram")
        a.load(_arg_low(2))
        a.jeq(IPPROTO_IP, jt="allow")
        a.jeq(IPPROTO_UDP, jt="allow")
        a.jeq(IPPROTO_ICMP, jt="inet_icmp")
        a.jeq(IPPROTO_ICMPV6, jt="inet6_icmp", jf="eprotonosupport")
        a.label("inet_icmp")  # ping sockets, of their own family only
        a.load(_arg_low(0))
        a.jeq(AF_INET, jt="allow", jf="eprotonosupport")
        a.label("inet6_icmp")
        a.load(_arg_low(0))
        a.jeq(AF_INET6, jt="allow", jf="eprotonosupport")

    a.label("socketpair")
    a.load(_arg_low(0))
    a.jeq(AF_UNIX, jt="allow", jf="eafnosupport")

    # setsockopt(fd, int level, int optname, ...)
    a.label("setsockopt")
    a.load(_arg_low(1))
    a.jeq(IPPROTO_TCP, jf="allow")
    a.load(_arg_low(2))
    for option in TCP_KEY_OPTIONS:
        a.jeq(option, jt="enoprotoopt")  # what a kernel without them answers
    if fallback:
        a.jeq(TCP_FASTOPEN, jt="eopnotsupp")
        a.jeq(TCP_FASTOPEN_CONNECT, jt="eopnotsupp")
    a.ret(SECCOMP_RET_ALLOW)
    if fallback:
        for name, flags_arg in _SEND_FLAGS_ARG:
            a.label(name)
            a.load(_arg_low(flags_arg))
            a.jset(MSG_FASTOPEN, jt="eopnotsupp", jf="allow")

    a.label("allow")
    a.ret(SECCOMP_RET_ALLOW)
    answers = {errno.EPERM, errno.ENOSYS, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT,
               errno.EOPNOTSUPP, errno.ENOPROTOOPT,
               *([errno.EACCES] if options.refuse_listen else [])}
    answers |= {value for _, value, _, _ in refused} | {ioctl.errno for ioctl in IOCTLS}
    for value in sorted(answers):
        a.label(_label(value))
        a.ret(_errno(value))
    return a.assemble()


def describe_filter(options: SeccompOptions, *, arch: Arch | None = None) -> list[str]:
    """What the filter refuses, one line per rule, for ``inspect`` and the docs."""
    arch = arch if arch is not None else native_arch()
    foreign = f"a syscall from an ABI other than {arch.name}"
    if arch.x32_bit:
        foreign += " (i386 int 0x80, x32)"
    lines = [f"{foreign}: process killed (SIGSYS)",
             f"syscall numbers above {arch.newest} (newer than Linux 6.18): ENOSYS"]
    # One line per run of rows with the same errno and reason, in table order.
    runs: list[tuple[int, str, list[str]]] = []
    for _, value, name, why in _refused(arch, options):
        if runs and runs[-1][:2] == (value, why):
            runs[-1][2].append(name)
        else:
            runs.append((value, why, [name]))
    lines += [f"{', '.join(names)}: {_errno_name(value)} ({why})" for value, why, names in runs]
    lines.append("clone with CLONE_NEWUSER, NEWNS, NEWPID, NEWNET, NEWIPC, NEWUTS, NEWCGROUP or"
                 " NEWTIME: EPERM")
    if options.allow_ptrace:
        lines.append("ptrace, process_vm_readv: allowed (a learn session's tracer)")
    lines += [
        "personality, except a query (0xffffffff) or PER_LINUX: EPERM",
        f"{', '.join(name for name, _ in _MODE_ARG if arch.nr(name) is not None)} with"
        " S_ISUID or S_ISGID in the mode: EPERM (set-id files run as their owner for anyone)",
        "setrlimit, prlimit64 setting RLIMIT_CORE: EPERM (it stays 1 byte: no core dump, not"
        " even through a pipe core_pattern's helper)",
        *(["prlimit64 setting a limit, setpriority, ioprio_set, "
           + ", ".join(name for name in _PID_ARG0 if arch.nr(name) is not None)
           + " naming a pid other than 0 (the caller), setpriority PRIO_USER, ioprio_set"
           " IOPRIO_WHO_USER: EPERM (the host's processes of the same uid: no pid namespace)"]
          if options.refuse_host_pids else []),
        *(["prlimit64 setting a limit, setpriority, ioprio_set, "
           + ", ".join(name for name in _PID_ARG0 if arch.nr(name) is not None)
           + " naming pid 1 (setpriority, ioprio_set: or process group 1), setpriority"
           " PRIO_USER, ioprio_set IOPRIO_WHO_USER: EPERM (the"
           " session's init, which the kernel would let the program limit or starve)"]
          if options.protect_init and not options.refuse_host_pids else []),
        "fcntl F_SETLEASE (command compared on its low 32 bits): EPERM (a lease makes the"
        " host's and other sessions' opens of a shared file wait 45 s for the session)",
        *(f"ioctl {', '.join(i.name for i in IOCTLS if i.errno == value)} (request compared on"
          f" its low 32 bits): {_errno_name(value)}"
          for value in sorted({i.errno for i in IOCTLS})),
    ]
    if not options.allow_unix_sockets:
        lines.append("socket(AF_UNIX): EPERM (pathname sockets are not mediated otherwise)")
        lines.append(
            "bind with an address length other than "
            + ", ".join(str(n) for n in BIND_LENGTHS)
            + f" or above {_UNIX_ADDR_MAX}: EPERM (only a Unix address has it: a socketpair's"
            " socket would take an abstract name of the host's network namespace)")
    if options.allow_netlink_route:
        lines += [
            "socket families other than AF_UNIX, AF_INET, AF_INET6, AF_NETLINK: EAFNOSUPPORT",
            "AF_NETLINK sockets with a protocol other than NETLINK_ROUTE: EPROTONOSUPPORT",
        ]
    else:
        lines.append("socket families other than AF_UNIX, AF_INET, AF_INET6: EAFNOSUPPORT")
    if options.refuse_listen:
        lines.append("listen: EACCES (on an unbound socket it binds an ephemeral port on every"
                     " address, which Landlock does not check)")
    if options.landlock_net_fallback:
        lines += [
            "AF_INET/AF_INET6 sockets other than SOCK_STREAM (UDP, raw, packet): EPERM",
            "AF_INET/AF_INET6 stream sockets with a protocol other than TCP (MPTCP, SCTP):"
            " EPROTONOSUPPORT",
            "setsockopt IPPROTO_TCP TCP_FASTOPEN, TCP_FASTOPEN_CONNECT: EOPNOTSUPP",
            "sendto, sendmsg, sendmmsg with MSG_FASTOPEN: EOPNOTSUPP",
        ]
    else:
        lines += [
            "AF_INET/AF_INET6 sockets of type SOCK_RAW, SOCK_PACKET: EPERM",
            "AF_INET/AF_INET6 sockets other than TCP, UDP and ping (SCTP, L2TP, SMC, MPTCP,"
            " UDP-Lite, any SOCK_SEQPACKET): EPROTONOSUPPORT (a protocol the kernel lacks"
            " makes it run modprobe on the host and load the module)",
        ]
    lines.append("setsockopt IPPROTO_TCP TCP_MD5SIG, TCP_MD5SIG_EXT, TCP_AO_ADD_KEY,"
                 " TCP_AO_DEL_KEY, TCP_AO_INFO: ENOPROTOOPT (a key's hash, named by the caller"
                 " for TCP-AO, is loaded as a crypto module through modprobe on the host)")
    lines.append("socketpair families other than AF_UNIX: EAFNOSUPPORT")
    return lines


class _SockFprog(ctypes.Structure):
    """struct sock_fprog { unsigned short len; struct sock_filter *filter; }"""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


# ``syscall(2)`` from the process's own libc, made once at import (the fork server's, which
# launchers inherit: a ``CDLL`` made per call defines a class in each launcher).
_SYSCALL = ctypes.CDLL(None, use_errno=True).syscall
_SYSCALL.restype = ctypes.c_long


def install_filter(program: bytes, flags: int = 0) -> int:
    """Install ``program`` (from :func:`build_filter`) as this process's seccomp filter.

    Runs in the child between fork and ``execve``, as the launcher's last step before exec.
    The caller has already set ``PR_SET_NO_NEW_PRIVS``, without which the kernel refuses a
    filter from an unprivileged process. ``flags`` is 0 for the session's filter (the
    launcher is single-threaded: no other threads to synchronise); the creation guard passes
    ``SECCOMP_FILTER_FLAG_NEW_LISTENER`` and gets the listener's descriptor back. Raises
    ``OSError`` with the kernel's errno.
    """
    count, partial = divmod(len(program), _INSN.size)
    if partial or not 0 < count <= BPF_MAXINSNS:
        raise OSError(errno.EINVAL, "seccomp filter program is malformed")
    arch = arch_for_machine(os.uname().machine)
    if arch is None:
        raise OSError(errno.ENOSYS, "seccomp: no syscall table for this machine")
    # fprog holds only the address of program's buffer (the kernel copies it): ``program``
    # stays referenced until the call returns. No ctypes array for it: its type, one per
    # size, would be made anew in each launcher.
    fprog = _SockFprog(count, ctypes.cast(ctypes.c_char_p(program), ctypes.c_void_p))
    result = _SYSCALL(
        ctypes.c_long(_nr(arch, "seccomp")),
        ctypes.c_long(SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(flags),
        ctypes.byref(fprog),
    )
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)
