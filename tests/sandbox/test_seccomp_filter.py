"""The seccomp program without a kernel: the assembler's checks, and the filter run by a small
classic-BPF interpreter on both architectures (aarch64 cannot be run here for real)."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from nonod.sandbox._seccomp import (
    BPF_MAXINSNS,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    Assembler,
    SeccompOptions,
    build_filter,
    describe_filter,
)
from nonod.sandbox._seccomp_table import HOST_INOTIFY, HOST_IPC, IOCTLS, SYSCALLS, TRACING
from nonod.sandbox._syscalls import (
    AARCH64,
    AUDIT_ARCH_ARM,
    AUDIT_ARCH_I386,
    X86_64,
    Arch,
)

_INSN = struct.Struct("=HBBI")
_DATA = struct.Struct("<iIQ6Q")  # struct seccomp_data
KILL = SECCOMP_RET_KILL_PROCESS
ALLOW = SECCOMP_RET_ALLOW


def err(value: int) -> int:
    return SECCOMP_RET_ERRNO | value


def evaluate(program: bytes, nr: int, *args: int, audit_arch: int) -> int:
    """Run a seccomp program the way the kernel does, for the subset our assembler emits."""
    insns = [_INSN.unpack_from(program, i) for i in range(0, len(program), _INSN.size)]
    full = [*args, *[0] * (6 - len(args))]
    data = _DATA.pack(nr, audit_arch, 0, *full)
    acc = 0
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # LD W ABS
            (acc,) = struct.unpack_from("<I", data, k)
        elif code == 0x54:  # ALU AND K
            acc &= k
        elif code in (0x15, 0x35, 0x45):  # JEQ, JGE, JSET
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:  # RET K
            return int(k)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


ARCHES = [X86_64, AARCH64]
ALL_OPTIONS = [
    SeccompOptions(landlock_net_fallback=f, allow_netlink_route=n, allow_unix_sockets=u)
    for f in (False, True) for n in (False, True) for u in (False, True)
]


def run(arch: Arch, options: SeccompOptions, name: str, *args: int) -> int:
    return evaluate(build_filter(options, arch=arch), arch.syscalls[name], *args,
                    audit_arch=arch.audit_arch)


# -- the assembler ---------------------------------------------------------------------------------


def test_assembler_encodes_forward_jumps() -> None:
    a = Assembler()
    a.load(4)
    a.jeq(7, jt="yes", jf="no")
    a.label("no")
    a.ret(1)
    a.label("yes")
    a.ret(2)
    assert a.assemble() == b"".join([
        _INSN.pack(0x20, 0, 0, 4), _INSN.pack(0x15, 1, 0, 7),
        _INSN.pack(0x06, 0, 0, 1), _INSN.pack(0x06, 0, 0, 2),
    ])


def _program_with_gap(gap: int) -> Assembler:
    a = Assembler()
    a.load(0)
    a.jeq(1, jt="far")
    for _ in range(gap):
        a.ret(0)
    a.label("far")
    a.ret(1)
    return a


def test_jump_of_255_fits() -> None:
    program = _program_with_gap(255).assemble()
    assert _INSN.unpack_from(program, 8) == (0x15, 255, 0, 1)


def test_jump_beyond_255_is_refused() -> None:
    with pytest.raises(ValueError, match="skips 256 instructions; classic BPF allows at most 255"):
        _program_with_gap(256).assemble()


def test_backward_jump_is_refused() -> None:
    a = Assembler()
    a.label("top")
    a.load(0)
    a.jeq(1, jt="top")
    a.ret(0)
    with pytest.raises(ValueError, match="BPF jumps only forward"):
        a.assemble()


def test_label_errors() -> None:
    a = Assembler()
    a.label("x")
    with pytest.raises(ValueError, match="defined twice"):
        a.label("x")
    b = Assembler()
    b.load(0)
    b.jeq(1, jt="nowhere")
    b.ret(0)
    with pytest.raises(ValueError, match="undefined label 'nowhere'"):
        b.assemble()
    c = Assembler()
    c.load(0)
    c.jeq(1, jt="end")
    c.ret(0)
    c.label("end")
    with pytest.raises(ValueError, match="marks no instruction"):
        c.assemble()


def test_program_shape_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        Assembler().assemble()
    a = Assembler()
    a.load(0)
    with pytest.raises(ValueError, match="must end with a return"):
        a.assemble()
    with pytest.raises(ValueError, match="32 bits"):
        a.jeq(1 << 32)
    big = Assembler()
    for _ in range(BPF_MAXINSNS + 1):
        big.ret(0)
    with pytest.raises(ValueError, match="at most 4096"):
        big.assemble()


# -- the filter, interpreted -----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_builds_within_limits(arch: Arch, options: SeccompOptions) -> None:
    program = build_filter(options, arch=arch)
    assert len(program) % 8 == 0
    assert 0 < len(program) // 8 < 256  # every label reachable, whatever the jump


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_foreign_abi_is_killed(arch: Arch) -> None:
    program = build_filter(SeccompOptions(), arch=arch)
    read = 0 if arch is X86_64 else 63  # (0 is io_setup on aarch64: refused, with ENOSYS)
    for foreign in (AUDIT_ARCH_I386, AUDIT_ARCH_ARM, X86_64.audit_arch, AARCH64.audit_arch):
        if foreign != arch.audit_arch:
            assert evaluate(program, 0, audit_arch=foreign) == KILL
            assert evaluate(program, read, audit_arch=foreign) == KILL
    assert evaluate(program, read, audit_arch=arch.audit_arch) == ALLOW


def test_x32_is_killed_on_x86_64() -> None:
    program = build_filter(SeccompOptions(), arch=X86_64)
    for nr in (0x40000000 | 39, 0x40000000 | 16, 0x40000000 | 541, 0xFFFFFFFF):
        assert evaluate(program, nr - (1 << 32 if nr > 0x7FFFFFFF else 0),
                        audit_arch=X86_64.audit_arch) == KILL
    # aarch64 numbers with that bit mean nothing special: beyond the table, so ENOSYS.
    program = build_filter(SeccompOptions(), arch=AARCH64)
    assert evaluate(program, 0x40000000 | 39, audit_arch=AARCH64.audit_arch) == err(errno.ENOSYS)


# The refusals the docs promise (docs/seccomp.md), written out independently of the table so
# that a row cannot disappear from the filter unnoticed.
DENIED_EPERM = {
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "umount2", "pivot_root",
    "chroot", "open_tree", "open_tree_attr", "move_mount", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr", "setns", "unshare", "open_by_handle_at", "kexec_load",
    "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module", "swapon",
    "swapoff", "acct", "quotactl", "quotactl_fd", "vhangup", "sethostname", "setdomainname",
    "fanotify_init", "syslog", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
    "modify_ldt", "ioperm", "iopl", "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages",
    "move_pages", "set_mempolicy_home_node", "memfd_secret", "uselib", "lookup_dcookie",
    "nfsservctl", "_sysctl", "sysfs", "ustat", "create_module", "get_kernel_syms",
    "query_module", "afs_syscall", "tuxcall", "security", "vserver", "getpmsg", "putpmsg",
}
DENIED_ENOSYS = {"clone3", "io_setup"}
# Rows that exist on x86_64 only (aarch64 uses the generic table, without these).
X86_ONLY = {
    "modify_ldt", "ioperm", "iopl", "uselib", "_sysctl", "sysfs", "ustat", "create_module",
    "get_kernel_syms", "query_module", "afs_syscall", "tuxcall", "security", "vserver",
    "getpmsg", "putpmsg",
}
REFUSED_IOCTLS = {
    "TIOCSTI": 0x5412, "TIOCLINUX": 0x541C, "TIOCSETD": 0x5423, "TIOCCONS": 0x541D,
    "TIOCSSERIAL": 0x541F, "TIOCVHANGUP": 0x5437, "TIOCSLCKTRMIOS": 0x5457,
}
# What shells and terminal programs need: job control, sizes, modes, the current discipline.
ALLOWED_IOCTLS = {
    "TCGETS": 0x5401, "TCSETS": 0x5402, "TCSETSW": 0x5403, "TIOCSCTTY": 0x540E,
    "TIOCGPGRP": 0x540F, "TIOCSPGRP": 0x5410, "TIOCGWINSZ": 0x5413, "TIOCSWINSZ": 0x5414,
    "FIONREAD": 0x541B, "TIOCNOTTY": 0x5422, "TIOCGETD": 0x5424, "TIOCGPTN": 0x80045430,
    "TIOCSPTLCK": 0x40045431, "FIOCLEX": 0x5451, "FIONBIO": 0x5421, "FIOSETOWN": 0x8901,
}


def test_table_is_the_documented_list() -> None:
    assert {row.name for row in SYSCALLS if row.errno == errno.EPERM} == DENIED_EPERM
    assert {row.name for row in SYSCALLS if row.errno == errno.ENOSYS} == DENIED_ENOSYS
    assert len({row.name for row in SYSCALLS}) == len(SYSCALLS)  # no row twice
    assert {row.name: row.request for row in IOCTLS} == REFUSED_IOCTLS
    assert all(row.errno == errno.EPERM for row in IOCTLS)
    assert all(row.baselines and row.why for row in SYSCALLS)
    assert all(row.baselines and row.why for row in IOCTLS)


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_every_row_has_a_number_where_it_exists(arch: Arch) -> None:
    names = {row.name for row in SYSCALLS}
    missing = names - set(arch.syscalls)
    assert missing == (X86_ONLY if arch is AARCH64 else set())


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("options", [*ALL_OPTIONS, SeccompOptions(allow_ptrace=True)])
def test_every_row_is_refused_with_its_errno(arch: Arch, options: SeccompOptions) -> None:
    for row in SYSCALLS:
        if row.name not in arch.syscalls:
            continue
        expected = ALLOW if options.allow_ptrace and row.name in TRACING else err(row.errno)
        # Arguments do not matter to an unconditional row, whatever their high bits.
        assert run(arch, options, row.name, 1 << 32 | 3, -1 & 0xFFFFFFFFFFFFFFFF) == expected, \
            row.name
        assert run(arch, options, row.name) == expected, row.name


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_unlisted_syscalls_are_allowed(arch: Arch) -> None:
    listed = set(arch.syscalls.values())
    program = build_filter(SeccompOptions(), arch=arch)
    for nr in range(0, arch.newest + 1):
        if nr not in listed:
            assert evaluate(program, nr, 1, 2, 3, audit_arch=arch.audit_arch) == ALLOW, nr


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_syscalls_newer_than_the_table_get_enosys(arch: Arch) -> None:
    assert arch.newest == 469  # file_setattr, Linux 6.18's last
    program = build_filter(SeccompOptions(), arch=arch)
    assert evaluate(program, 469, audit_arch=arch.audit_arch) == ALLOW
    for nr in (470, 471, 511, 1000, 0x3FFFFFFF):
        assert evaluate(program, nr, audit_arch=arch.audit_arch) == err(errno.ENOSYS), nr


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_clone_flags(arch: Arch) -> None:
    options = SeccompOptions()
    for flag in (0x10000000, 0x00020000, 0x20000000, 0x40000000, 0x08000000, 0x04000000,
                 0x02000000, 0x80):
        assert run(arch, options, "clone", flag | 17) == err(errno.EPERM)
        assert run(arch, options, "clone", flag | 17 | 1 << 32) == err(errno.EPERM)
    thread_flags = 0x003D0F00  # what pthread_create passes
    assert run(arch, options, "clone", thread_flags) == ALLOW
    assert run(arch, options, "clone", 17 | 0x01200000) == ALLOW  # fork()
    assert run(arch, options, "clone", 17 | 0x10000000 << 32) == ALLOW  # high bits: ignored


#: Where each mode-taking syscall has its mode (argument index).
MODE_ARGS = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2, "open": 2, "openat": 3,
             "creat": 1, "mknod": 1, "mknodat": 2}


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_set_id_modes_are_refused(arch: Arch, options: SeccompOptions) -> None:
    present = {name: index for name, index in MODE_ARGS.items() if arch.nr(name) is not None}
    assert set(present) >= {"fchmod", "fchmodat", "fchmodat2", "openat", "mknodat"}
    for name, index in present.items():
        def call(mode: int, name: str = name, index: int = index) -> int:
            args = [0xFFFFFF9C, 0x1000, 0x41] + [0] * 3  # AT_FDCWD, a path, O_CREAT|O_WRONLY
            args[index] = mode
            return run(arch, options, name, *args)
        for mode in (0o4755, 0o2755, 0o6777, 0o104755, 0o4000 | 1 << 32):
            assert call(mode) == err(errno.EPERM), (name, oct(mode))
        for mode in (0o755, 0o1777, 0o600, 0, 0o777 | 0o4000 << 32):  # high half: not a mode
            assert call(mode) == ALLOW, (name, oct(mode))


RLIMIT_CORE, RLIMIT_NOFILE, RLIMIT_NPROC = 4, 7, 6


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_the_core_limit_cannot_be_changed(arch: Arch, options: SeccompOptions) -> None:
    # At 0 (not the 1 byte the session gets) a pipe core_pattern's helper runs again.
    assert run(arch, options, "setrlimit", RLIMIT_CORE, 0x1000) == err(errno.EPERM)
    assert run(arch, options, "setrlimit", RLIMIT_CORE | 1 << 32, 0x1000) == err(errno.EPERM)
    for new in (0x1000, 1 << 32, 0x7FFF_0000_0000):  # any non-null new limit, either half
        assert run(arch, options, "prlimit64", 0, RLIMIT_CORE, new, 0) == err(errno.EPERM)
    assert run(arch, options, "prlimit64", 0, RLIMIT_CORE, 0, 0x1000) == ALLOW  # a read
    for resource in (RLIMIT_NOFILE, RLIMIT_NPROC):
        assert run(arch, options, "setrlimit", resource, 0x1000) == ALLOW
        assert run(arch, options, "prlimit64", 0, resource, 0x1000, 0) == ALLOW


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_ioctl_compares_32_bits(arch: Arch) -> None:
    options = SeccompOptions()
    for name, request in REFUSED_IOCTLS.items():
        for high in (0, 1 << 32, 0xFFFFFFFF << 32):
            assert run(arch, options, "ioctl", 0, request | high) == err(errno.EPERM), name
    for name, request in ALLOWED_IOCTLS.items():
        assert run(arch, options, "ioctl", 0, request) == ALLOW, name
    assert run(arch, options, "ioctl", 0x5412, 0) == ALLOW  # fd, not request


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_fcntl_refuses_file_leases_only(arch: Arch) -> None:
    """F_SETLEASE (1024) on its low 32 bits: a lease stalls other processes' opens (the
    thirty-fourth pass); every other command, F_GETLEASE (1025) included, goes through."""
    options = SeccompOptions()
    for high in (0, 1 << 32, 0xFFFFFFFF << 32):
        assert run(arch, options, "fcntl", 3, 1024 | high, 1) == err(errno.EPERM)
    for cmd in (0, 1, 2, 3, 4, 5, 6, 7, 1025, 1026, 1030, 1031, 1033, 1034):
        assert run(arch, options, "fcntl", 3, cmd, 0) == ALLOW, cmd
    assert run(arch, options, "fcntl", 1024, 1, 0) == ALLOW  # fd, not command


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_bind_refuses_unix_address_lengths_without_unix_sockets(arch: Arch) -> None:
    """Without ``socket(AF_UNIX)`` a bind names a socketpair's socket only by an address no
    inet or netlink socket takes (the thirty-fourth pass): refused; those lengths, and
    buffers above ``sockaddr_un``'s 110 bytes, go through (compared on 32 bits)."""
    options = SeccompOptions()
    for length in (2, 3, 11, 13, 17, 20, 27, 29, 110):
        for high in (0, 1 << 32):
            assert run(arch, options, "bind", 3, 0x1000, length | high) == err(errno.EPERM)
    for length in (12, 16, 24, 28, 111, 128, 0xFFFFFFFF):
        assert run(arch, options, "bind", 3, 0x1000, length) == ALLOW, length
    unix = SeccompOptions(allow_unix_sockets=True)
    for length in (2, 20, 110):
        assert run(arch, unix, "bind", 3, 0x1000, length) == ALLOW, length


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_personality(arch: Arch) -> None:
    options = SeccompOptions()
    assert run(arch, options, "personality", 0xFFFFFFFF) == ALLOW
    assert run(arch, options, "personality", 0xFFFFFFFF | 0xFFFFFFFF << 32) == ALLOW
    assert run(arch, options, "personality", 0) == ALLOW
    assert run(arch, options, "personality", 1 << 32) == ALLOW  # the kernel sees PER_LINUX
    for persona in (0x0040000, 0x0008, 0x0400000, 0x0040000 | 1 << 32):
        assert run(arch, options, "personality", persona) == err(errno.EPERM)


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_socket_families(arch: Arch, options: SeccompOptions) -> None:
    af_unix, af_inet, af_inet6, af_netlink = 1, 2, 10, 16
    unix = ALLOW if options.allow_unix_sockets else err(errno.EPERM)
    assert run(arch, options, "socket", af_unix, 1 | 0x80000) == unix
    assert run(arch, options, "socket", af_unix | 1 << 32, 2) == unix
    assert run(arch, options, "socket", af_inet, 1) == ALLOW
    assert run(arch, options, "socket", af_inet6, 1 | 0x800, 6) == ALLOW
    for family in (0, 3, 4, 5, 17, 38, 40, 43, 44, 46, 255, 17 | 1 << 32):
        assert run(arch, options, "socket", family, 3) == err(errno.EAFNOSUPPORT), family
    route = run(arch, options, "socket", af_netlink, 3, 0)
    uevent = run(arch, options, "socket", af_netlink, 3, 15)
    if options.allow_netlink_route:
        assert (route, uevent) == (ALLOW, err(errno.EPROTONOSUPPORT))
    else:
        assert route == uevent == err(errno.EAFNOSUPPORT)
    for family in (af_inet, af_inet6, af_netlink, 38):
        assert run(arch, options, "socketpair", family, 1) == err(errno.EAFNOSUPPORT)
    assert run(arch, options, "socketpair", af_unix, 1) == ALLOW


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("family", [2, 10])
def test_inet_types(arch: Arch, family: int) -> None:
    netns = SeccompOptions()
    fallback = SeccompOptions(landlock_net_fallback=True)
    for type_ in (1, 2, 2 | 0x80000):
        assert run(arch, netns, "socket", family, type_) == ALLOW
    for type_ in (3, 4, 6, 10, 3 | 0x800):
        assert run(arch, netns, "socket", family, type_) == err(errno.EPERM)
    # TCP, UDP and ping only: any other protocol may be a module the kernel would load.
    ping = 1 if family == 2 else 58
    for type_, proto in ((1, 6), (1 | 0x800, 6 | 1 << 32), (2, 17), (2, ping)):
        assert run(arch, netns, "socket", family, type_, proto) == ALLOW, (type_, proto)
    for type_, proto in ((1, 262), (1, 132), (1, 256), (1, 17), (2, 115), (2, 136),
                         (2, 59 - ping), (2, 6), (5, 0), (5, 132)):
        assert run(arch, netns, "socket", family, type_, proto) == err(
            errno.EPROTONOSUPPORT), (type_, proto)

    for proto in (0, 6, 6 | 1 << 32):
        assert run(arch, fallback, "socket", family, 1 | 0x80000, proto) == ALLOW
    for proto in (262, 132, 256, 1):
        assert run(arch, fallback, "socket", family, 1, proto) == err(errno.EPROTONOSUPPORT)
    for type_ in (2, 3, 5, 10):
        assert run(arch, fallback, "socket", family, type_, 0) == err(errno.EPERM)


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_tcp_signature_keys(arch: Arch, options: SeccompOptions) -> None:
    # TCP_MD5SIG, TCP_MD5SIG_EXT, TCP_AO_ADD_KEY, TCP_AO_DEL_KEY, TCP_AO_INFO
    for option in (14, 32, 38, 39, 40, 38 | 1 << 32):
        assert run(arch, options, "setsockopt", 3, 6, option) == err(errno.ENOPROTOOPT)
        assert run(arch, options, "setsockopt", 3, 6 | 1 << 32, option) == err(
            errno.ENOPROTOOPT)
        assert run(arch, options, "setsockopt", 3, 1, option) == ALLOW  # SOL_SOCKET's
    for option in (1, 3, 41, 42):  # TCP_NODELAY, TCP_CORK, TCP_AO_GET_KEYS, TCP_AO_REPAIR
        assert run(arch, options, "setsockopt", 3, 6, option) == ALLOW


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_tcp_fast_open(arch: Arch) -> None:
    netns = SeccompOptions()
    fallback = SeccompOptions(landlock_net_fallback=True)
    for option in (23, 30):
        assert run(arch, netns, "setsockopt", 3, 6, option) == ALLOW
        assert run(arch, fallback, "setsockopt", 3, 6, option) == err(errno.EOPNOTSUPP)
        assert run(arch, fallback, "setsockopt", 3, 6 | 1 << 32, option) == err(errno.EOPNOTSUPP)
        assert run(arch, fallback, "setsockopt", 3, 1, option) == ALLOW  # SOL_SOCKET
    assert run(arch, fallback, "setsockopt", 3, 6, 1) == ALLOW  # TCP_NODELAY
    msg_fastopen = 0x20000000
    for name, flags_arg in (("sendto", 3), ("sendmsg", 2), ("sendmmsg", 3)):
        args = [3, 0, 0, 0]
        assert run(arch, fallback, name, *args) == ALLOW
        args[flags_arg] = msg_fastopen | 0x40  # with MSG_DONTWAIT
        assert run(arch, fallback, name, *args) == err(errno.EOPNOTSUPP)
        assert run(arch, netns, name, *args) == ALLOW


def test_describe_filter() -> None:
    lines = describe_filter(SeccompOptions(landlock_net_fallback=True), arch=X86_64)
    text = "\n".join(lines)
    assert lines[0].startswith("a syscall from an ABI other than x86_64 (i386 int 0x80, x32)")
    assert "syscall numbers above 469 (newer than Linux 6.18): ENOSYS" in text
    assert "clone3: ENOSYS" in text
    assert "ioctl TIOCSTI, TIOCLINUX, TIOCSETD, TIOCCONS" in text
    assert "chroot" in text and "modify_ldt" in text
    assert "MSG_FASTOPEN: EOPNOTSUPP" in text
    assert "chmod, fchmod, fchmodat, fchmodat2, open, openat, creat, mknod, mknodat with" \
        " S_ISUID or S_ISGID in the mode: EPERM" in text
    assert "uselib" in text
    aarch64 = "\n".join(describe_filter(SeccompOptions(), arch=AARCH64))
    assert "uselib" not in aarch64 and "modify_ldt" not in aarch64 and "chroot" in aarch64
    assert "NETLINK_ROUTE" in "\n".join(
        describe_filter(SeccompOptions(allow_netlink_route=True), arch=AARCH64))


def test_docs_list_every_row() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "seccomp.md").read_text()
    for name in [row.name for row in SYSCALLS] + [row.name for row in IOCTLS]:
        assert f"`{name}`" in docs, name


HOST_IPC_CALLS = {
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semtimedop", "semctl", "msgget",
    "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
}


@pytest.mark.parametrize("arch", [X86_64, AARCH64], ids=lambda a: a.name)
def test_host_ipc_refused_only_without_an_ipc_namespace(arch: Arch) -> None:
    assert {row.name for row in HOST_IPC} == HOST_IPC_CALLS
    own = build_filter(SeccompOptions(), arch=arch)
    shared = build_filter(SeccompOptions(refuse_host_ipc=True), arch=arch)
    for name in HOST_IPC_CALLS:
        nr = arch.nr(name)
        assert nr is not None, name
        assert evaluate(own, nr, audit_arch=arch.audit_arch) == ALLOW, name
        assert evaluate(shared, nr, audit_arch=arch.audit_arch) == err(errno.EPERM), name
    docs = (Path(__file__).resolve().parents[2] / "docs" / "seccomp.md").read_text()
    assert all(f"`{name}`" in docs for name in HOST_IPC_CALLS)


PRIO_PROCESS, PRIO_USER, IOPRIO_WHO_PROCESS, IOPRIO_WHO_USER = 0, 2, 1, 3


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_host_pids_refused_only_without_a_pid_namespace(arch: Arch) -> None:
    """Without a pid namespace (landlock-only), calls that change another process by pid name
    the host's processes of the same uid: only pid 0 (the caller) is allowed."""
    shared = SeccompOptions(refuse_host_pids=True)
    for options in (SeccompOptions(), shared):
        want = err(errno.EPERM) if options.refuse_host_pids else ALLOW
        for name in ("sched_setaffinity", "sched_setscheduler", "sched_setparam",
                     "sched_setattr"):
            assert run(arch, options, name, 4242) == want, name
            assert run(arch, options, name, 0) == ALLOW, name
        assert run(arch, options, "prlimit64", 4242, RLIMIT_NOFILE, 0x1000, 0) == want
        assert run(arch, options, "setpriority", PRIO_PROCESS, 4242, 19) == want
        assert run(arch, options, "setpriority", PRIO_USER, 0, 19) == want  # the whole uid
        assert run(arch, options, "ioprio_set", IOPRIO_WHO_PROCESS, 4242, 0) == want
        assert run(arch, options, "ioprio_set", IOPRIO_WHO_USER, 0, 0) == want
        assert run(arch, options, "prlimit64", 0, RLIMIT_NOFILE, 0x1000, 0) == ALLOW
        assert run(arch, options, "prlimit64", 4242, RLIMIT_NOFILE, 0, 0x1000) == ALLOW  # read
        assert run(arch, options, "prlimit64", 0, RLIMIT_CORE, 0x1000, 0) == err(errno.EPERM)
        assert run(arch, options, "setpriority", PRIO_PROCESS, 0, 19) == ALLOW
        assert run(arch, options, "ioprio_set", IOPRIO_WHO_PROCESS, 0, 0) == ALLOW


PRIO_PGRP, IOPRIO_WHO_PGRP = 1, 2


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_the_init_is_protected_in_its_own_pid_namespace(arch: Arch) -> None:
    """With a pid namespace, pid 1 is the session's init: the calls that would limit or
    starve it fail; every other pid of the session, and the caller's own, stay allowed."""
    options = SeccompOptions(protect_init=True)
    for name in ("sched_setaffinity", "sched_setscheduler", "sched_setparam",
                 "sched_setattr"):
        assert run(arch, options, name, 1) == err(errno.EPERM), name
        assert run(arch, options, name, 4242) == ALLOW, name
        assert run(arch, options, name, 0) == ALLOW, name
    assert run(arch, options, "prlimit64", 1, RLIMIT_NOFILE, 0x1000, 0) == err(errno.EPERM)
    assert run(arch, options, "prlimit64", 1, RLIMIT_NOFILE, 0, 0x1000) == ALLOW  # read
    assert run(arch, options, "prlimit64", 4242, RLIMIT_NOFILE, 0x1000, 0) == ALLOW
    assert run(arch, options, "prlimit64", 1, RLIMIT_CORE, 0x1000, 0) == err(errno.EPERM)
    for which in (PRIO_PROCESS, PRIO_PGRP):
        assert run(arch, options, "setpriority", which, 1, 19) == err(errno.EPERM)
        assert run(arch, options, "setpriority", which, 4242, 19) == ALLOW
    # every process of a uid: the init is one of them (redteam18: it reniced the init)
    for who in (0, 1, 4242):
        assert run(arch, options, "setpriority", PRIO_USER, who, 19) == err(errno.EPERM)
        assert run(arch, options, "ioprio_set", IOPRIO_WHO_USER, who, 0) == err(errno.EPERM)
    for which in (IOPRIO_WHO_PROCESS, IOPRIO_WHO_PGRP):
        assert run(arch, options, "ioprio_set", which, 1, 0) == err(errno.EPERM)
        assert run(arch, options, "ioprio_set", which, 4242, 0) == ALLOW
    # refusing the host's pids (landlock-only) already covers pid 1
    both = SeccompOptions(protect_init=True, refuse_host_pids=True)
    assert run(arch, both, "prlimit64", 4242, RLIMIT_NOFILE, 0x1000, 0) == err(errno.EPERM)
    assert run(arch, both, "prlimit64", 0, RLIMIT_NOFILE, 0x1000, 0) == ALLOW


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_host_inotify_refused_only_without_a_view(arch: Arch) -> None:
    own = build_filter(SeccompOptions(), arch=arch)
    shared = build_filter(SeccompOptions(refuse_host_inotify=True), arch=arch)
    names = {row.name for row in HOST_INOTIFY if arch.nr(row.name) is not None}
    assert names >= {"inotify_init1", "inotify_add_watch"}
    for name in names:
        nr = arch.syscalls[name]
        assert evaluate(own, nr, audit_arch=arch.audit_arch) == ALLOW, name
        assert evaluate(shared, nr, audit_arch=arch.audit_arch) == err(errno.ENOSYS), name
    docs = (Path(__file__).resolve().parents[2] / "docs" / "seccomp.md").read_text()
    assert all(f"`{row.name}`" in docs for row in HOST_INOTIFY)


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.name)
def test_listen_refused_only_when_asked(arch: Arch) -> None:
    """On an unbound socket listen binds an ephemeral port that Landlock never checks."""
    for fallback in (False, True):
        options = SeccompOptions(landlock_net_fallback=fallback)
        assert run(arch, options, "listen", 3, 128) == ALLOW
        refusing = SeccompOptions(landlock_net_fallback=fallback, refuse_listen=True)
        assert run(arch, refusing, "listen", 3, 128) == err(errno.EACCES)
