"""Syscall numbers and audit architectures for the seccomp filter, on the machines we support.

Only the syscalls the filter names are listed, per architecture, from the kernel's own tables
(``arch/x86/entry/syscalls/syscall_64.tbl`` and ``scripts/syscall.tbl`` as of Linux 6.18).
A number missing from a table means the syscall does not exist on that architecture (``uselib``
on aarch64), and the filter leaves it out.

This module imports only the standard library and ``nonod.errors`` (itself standard library
only), so that the launcher path stays free of third-party code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import final

from ..errors import EnforcementUnavailable

# AUDIT_ARCH_* from include/uapi/linux/audit.h: the ELF machine number, plus flags for a 64-bit
# ABI (0x80000000) and little-endian byte order (0x40000000).
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028

# x32 syscalls enter through the x86_64 ABI, with this bit set in the syscall number.
X32_SYSCALL_BIT = 0x40000000

# The highest syscall number in Linux 6.18, on both ABIs (file_setattr; numbers from 403 up are
# shared by every architecture). Raise it, after review, when a newer kernel's syscalls should
# reach programs.
NEWEST_6_18 = 469


@final
@dataclass(frozen=True, slots=True)
class Arch:
    """One syscall ABI: its name, its ``AUDIT_ARCH_*`` value and the numbers the filter uses.

    ``newest`` is the highest syscall number of the kernel version the table was written for;
    the filter answers higher numbers ``ENOSYS``, as a kernel without them would. ``x32_bit``
    is the bit that marks x32 calls arriving through this ABI (0 where there is none). Every
    supported architecture is little-endian, so the low 32 bits of a syscall argument come
    first in ``seccomp_data.args``.
    """

    name: str
    audit_arch: int
    syscalls: Mapping[str, int]
    newest: int
    x32_bit: int = 0

    def nr(self, name: str) -> int | None:
        """The syscall's number on this architecture, or None where it does not exist."""
        return self.syscalls.get(name)


X86_64 = Arch(
    name="x86_64",
    audit_arch=AUDIT_ARCH_X86_64,
    newest=NEWEST_6_18,
    x32_bit=X32_SYSCALL_BIT,
    syscalls=MappingProxyType({
        "open": 2,
        "ioctl": 16,
        "shmget": 29,
        "shmat": 30,
        "shmctl": 31,
        "socket": 41,
        "sendto": 44,
        "listen": 50,
        "sendmsg": 46,
        "bind": 49,
        "socketpair": 53,
        "setsockopt": 54,
        "clone": 56,
        "semget": 64,
        "semop": 65,
        "semctl": 66,
        "shmdt": 67,
        "msgget": 68,
        "msgsnd": 69,
        "msgrcv": 70,
        "msgctl": 71,
        "fcntl": 72,
        "creat": 85,
        "chmod": 90,
        "fchmod": 91,
        "ptrace": 101,
        "syslog": 103,
        "capget": 125,
        "capset": 126,
        "mknod": 133,
        "uselib": 134,
        "personality": 135,
        "ustat": 136,
        "sysfs": 139,
        "setpriority": 141,
        "sched_setparam": 142,
        "sched_setscheduler": 144,
        "vhangup": 153,
        "modify_ldt": 154,
        "pivot_root": 155,
        "_sysctl": 156,
        "prctl": 157,
        "adjtimex": 159,
        "setrlimit": 160,
        "chroot": 161,
        "acct": 163,
        "settimeofday": 164,
        "mount": 165,
        "umount2": 166,
        "swapon": 167,
        "swapoff": 168,
        "reboot": 169,
        "sethostname": 170,
        "setdomainname": 171,
        "iopl": 172,
        "ioperm": 173,
        "create_module": 174,
        "init_module": 175,
        "delete_module": 176,
        "get_kernel_syms": 177,
        "query_module": 178,
        "quotactl": 179,
        "nfsservctl": 180,
        "getpmsg": 181,
        "putpmsg": 182,
        "afs_syscall": 183,
        "tuxcall": 184,
        "security": 185,
        "sched_setaffinity": 203,
        "io_setup": 206,
        "lookup_dcookie": 212,
        "semtimedop": 220,
        "clock_settime": 227,
        "vserver": 236,
        "mbind": 237,
        "set_mempolicy": 238,
        "get_mempolicy": 239,
        "mq_open": 240,
        "mq_unlink": 241,
        "mq_timedsend": 242,
        "mq_timedreceive": 243,
        "mq_notify": 244,
        "mq_getsetattr": 245,
        "kexec_load": 246,
        "add_key": 248,
        "request_key": 249,
        "keyctl": 250,
        "ioprio_set": 251,
        "inotify_init": 253,
        "inotify_add_watch": 254,
        "migrate_pages": 256,
        "openat": 257,
        "mknodat": 259,
        "fchmodat": 268,
        "unshare": 272,
        "move_pages": 279,
        "inotify_init1": 294,
        "perf_event_open": 298,
        "fanotify_init": 300,
        "prlimit64": 302,
        "open_by_handle_at": 304,
        "clock_adjtime": 305,
        "sendmmsg": 307,
        "setns": 308,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "kcmp": 312,
        "finit_module": 313,
        "sched_setattr": 314,
        "seccomp": 317,
        "kexec_file_load": 320,
        "bpf": 321,
        "userfaultfd": 323,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "clone3": 435,
        "close_range": 436,
        "pidfd_getfd": 438,
        "process_madvise": 440,
        "mount_setattr": 442,
        "quotactl_fd": 443,
        "memfd_secret": 447,
        "set_mempolicy_home_node": 450,
        "fchmodat2": 452,
        "open_tree_attr": 467,
    }),
)

AARCH64 = Arch(
    name="aarch64",
    audit_arch=AUDIT_ARCH_AARCH64,
    newest=NEWEST_6_18,
    syscalls=MappingProxyType({
        "io_setup": 0,
        "lookup_dcookie": 18,
        "fcntl": 25,
        "inotify_init1": 26,
        "inotify_add_watch": 27,
        "ioctl": 29,
        "ioprio_set": 30,
        "mknodat": 33,
        "umount2": 39,
        "mount": 40,
        "pivot_root": 41,
        "nfsservctl": 42,
        "chroot": 51,
        "fchmod": 52,
        "fchmodat": 53,
        "openat": 56,
        "vhangup": 58,
        "quotactl": 60,
        "acct": 89,
        "capget": 90,
        "capset": 91,
        "personality": 92,
        "unshare": 97,
        "kexec_load": 104,
        "init_module": 105,
        "delete_module": 106,
        "clock_settime": 112,
        "syslog": 116,
        "ptrace": 117,
        "sched_setparam": 118,
        "sched_setscheduler": 119,
        "sched_setaffinity": 122,
        "setpriority": 140,
        "reboot": 142,
        "sethostname": 161,
        "setdomainname": 162,
        "setrlimit": 164,
        "prctl": 167,
        "settimeofday": 170,
        "adjtimex": 171,
        "mq_open": 180,
        "mq_unlink": 181,
        "mq_timedsend": 182,
        "mq_timedreceive": 183,
        "mq_notify": 184,
        "mq_getsetattr": 185,
        "msgget": 186,
        "msgctl": 187,
        "msgrcv": 188,
        "msgsnd": 189,
        "semget": 190,
        "semctl": 191,
        "semtimedop": 192,
        "semop": 193,
        "shmget": 194,
        "shmctl": 195,
        "shmat": 196,
        "shmdt": 197,
        "socket": 198,
        "socketpair": 199,
        "bind": 200,
        "listen": 201,
        "sendto": 206,
        "setsockopt": 208,
        "sendmsg": 211,
        "add_key": 217,
        "request_key": 218,
        "keyctl": 219,
        "clone": 220,
        "swapon": 224,
        "swapoff": 225,
        "mbind": 235,
        "get_mempolicy": 236,
        "set_mempolicy": 237,
        "migrate_pages": 238,
        "move_pages": 239,
        "perf_event_open": 241,
        "prlimit64": 261,
        "fanotify_init": 262,
        "open_by_handle_at": 265,
        "clock_adjtime": 266,
        "setns": 268,
        "sendmmsg": 269,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "kcmp": 272,
        "finit_module": 273,
        "sched_setattr": 274,
        "seccomp": 277,
        "bpf": 280,
        "userfaultfd": 282,
        "kexec_file_load": 294,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "clone3": 435,
        "close_range": 436,
        "pidfd_getfd": 438,
        "process_madvise": 440,
        "mount_setattr": 442,
        "quotactl_fd": 443,
        "memfd_secret": 447,
        "set_mempolicy_home_node": 450,
        "fchmodat2": 452,
        "open_tree_attr": 467,
    }),
)

_BY_MACHINE: Mapping[str, Arch] = MappingProxyType({"x86_64": X86_64, "aarch64": AARCH64})


def arch_for_machine(machine: str) -> Arch | None:
    """The ABI for ``os.uname().machine``, or None where we have no syscall table."""
    return _BY_MACHINE.get(machine)


def native_arch() -> Arch:
    """The syscall ABI of the running kernel's native programs.

    Raises :class:`EnforcementUnavailable` on a machine we have no syscall table for, because a
    filter built from the wrong numbers would refuse the wrong syscalls.
    """
    machine = os.uname().machine
    arch = arch_for_machine(machine)
    if arch is None:
        raise EnforcementUnavailable(
            f"seccomp: no syscall table for machine {machine!r}",
            step="seccomp",
            detail=machine,
            hint="supported machines: " + ", ".join(sorted(_BY_MACHINE)),
        )
    return arch
