"""The seccomp deny table: every syscall and ioctl the session filter refuses outright.

One row per syscall (or ioctl request): the errno the program gets, why it is refused, and which
published baselines refuse it too. ``_seccomp.build_filter`` emits one comparison per row,
``describe_filter`` prints the rows, ``docs/seccomp.md`` shows them as a table, and the tests run
every row, through a BPF interpreter on each architecture and in a real session on this one.

The baselines, as read for this table (facts only, our own wording):

- ``Docker``: Moby's default profile (``profiles/seccomp/default.json``) is an allowlist; a
  syscall it does not allow, or allows only with a capability a session never holds, is refused.
  ``Docker*`` marks a syscall Docker allows only with a capability that *is* in its default set
  (``CAP_SYS_CHROOT``): refused here because sessions hold no capabilities at all.
- ``systemd @group``: the syscall is in that group of systemd's ``seccomp-util.c``, and
  ``@system-service`` leaves the group out. ``systemd`` alone: in no group it includes.
- ``Flatpak``: the blocklist in ``flatpak-run.c`` (``setup_seccomp``), for a non-devel,
  non-multiarch app.
- ``nono``: refused here although none of the three refuses it; the row says why.

Rows whose syscall does not exist on an architecture (``modify_ldt`` on aarch64) are left out of
that architecture's filter. Syscalls that exist only in a foreign ABI (``vm86``, ``stime``,
``umount`` of i386) need no row: the filter kills every foreign-ABI call first.

Argument-dependent rules (``clone`` namespace flags, ``personality``, socket families and
types, the fast-open checks) are code in ``_seccomp``; this table holds the unconditional ones.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Final, final


@final
@dataclass(frozen=True, slots=True)
class SyscallRefusal:
    """``name`` fails with ``errno`` before the kernel sees it, for the reason ``why``."""

    name: str
    errno: int
    why: str
    baselines: tuple[str, ...]


@final
@dataclass(frozen=True, slots=True)
class IoctlRefusal:
    """``ioctl(fd, request)`` fails with ``errno``; ``request`` is compared on its low 32 bits."""

    name: str
    request: int
    errno: int
    why: str
    baselines: tuple[str, ...]


def _rows(names: str, errno_: int, why: str, *baselines: str) -> tuple[SyscallRefusal, ...]:
    return tuple(SyscallRefusal(name, errno_, why, baselines) for name in names.split())


_EPERM: Final = errno.EPERM

_PROCESSES: Final = "reach into other processes: memory, descriptors, tracing"
_OTHER_PROCESS: Final = "compare another process's open files or act on its memory"
_KEYRINGS: Final = "kernel keyrings, including the session keyring inherited from the host"
_EXPLOITS: Final = "kernel interfaces that exploits lean on"
_IO_URING: Final = "io_uring, whose operations seccomp never sees"
_MOUNTS: Final = "change the mount table or the root directory, which are fixed before exec"
_NAMESPACES: Final = "enter or create namespaces after setup"
_HANDLES: Final = "open a file by handle, skipping path-based checks"
_HOST: Final = "administer the host"
_CLOCK: Final = "set or tune the system clock"
_X86: Final = "x86 segment descriptors and I/O ports"
_NUMA: Final = "NUMA memory policy and page migration; migrate_pages, move_pages act on any pid"
_OBSOLETE: Final = "obsolete or never implemented"
_HOST_POOL: Final = ("native AIO contexts come from one pool for the whole host (fs.aio-max-nr), "
                     "which one call could take whole; ENOSYS, as a kernel without AIO answers, "
                     "so that libaio users fall back to threads")

SYSCALLS: Final[tuple[SyscallRefusal, ...]] = (
    *_rows("clone3", errno.ENOSYS,
           "its flags sit behind a pointer the filter cannot read; libc falls back to clone",
           "Docker", "Flatpak"),
    *_rows("io_setup", errno.ENOSYS, _HOST_POOL, "nono"),
    *_rows("ptrace", _EPERM, _PROCESSES, "systemd @debug", "Flatpak"),
    *_rows("process_vm_readv process_vm_writev", _EPERM, _PROCESSES, "nono"),
    *_rows("pidfd_getfd", _EPERM, _PROCESSES, "Docker", "systemd @debug"),
    *_rows("kcmp process_madvise", _EPERM, _OTHER_PROCESS, "Docker"),
    *_rows("keyctl add_key request_key", _EPERM, _KEYRINGS, "Docker", "Flatpak"),
    *_rows("bpf", _EPERM, _EXPLOITS, "Docker", "systemd @privileged"),
    *_rows("perf_event_open", _EPERM, _EXPLOITS, "Docker", "systemd @debug", "Flatpak"),
    *_rows("userfaultfd", _EPERM, _EXPLOITS, "Docker"),
    *_rows("io_uring_setup io_uring_enter io_uring_register", _EPERM, _IO_URING, "Docker"),
    *_rows("mount umount2 pivot_root open_tree move_mount fsopen fsconfig fsmount fspick "
           "mount_setattr", _EPERM, _MOUNTS, "Docker", "systemd @mount", "Flatpak"),
    *_rows("open_tree_attr", _EPERM, _MOUNTS, "Docker", "systemd @mount"),
    *_rows("chroot", _EPERM, _MOUNTS, "Docker*", "systemd @mount", "Flatpak"),
    *_rows("setns unshare", _EPERM, _NAMESPACES, "Docker", "Flatpak"),
    *_rows("open_by_handle_at", _EPERM, _HANDLES, "Docker", "systemd @privileged"),
    *_rows("kexec_load kexec_file_load reboot", _EPERM, _HOST, "Docker", "systemd @reboot"),
    *_rows("init_module finit_module delete_module", _EPERM, _HOST, "Docker", "systemd @module"),
    *_rows("swapon swapoff", _EPERM, _HOST, "Docker", "systemd @swap"),
    *_rows("acct quotactl", _EPERM, _HOST, "Docker", "systemd @privileged", "Flatpak"),
    *_rows("vhangup sethostname setdomainname fanotify_init", _EPERM, _HOST,
           "Docker", "systemd @privileged"),
    *_rows("quotactl_fd", _EPERM, _HOST, "Docker", "systemd"),
    *_rows("syslog", _EPERM, _HOST, "Docker", "systemd", "Flatpak"),
    *_rows("settimeofday clock_settime", _EPERM, _CLOCK, "Docker", "systemd @clock"),
    *_rows("adjtimex clock_adjtime", _EPERM, _CLOCK, "systemd @clock"),
    *_rows("modify_ldt", _EPERM, _X86, "systemd @cpu-emulation", "Flatpak"),
    *_rows("ioperm iopl", _EPERM, _X86, "Docker", "systemd @raw-io"),
    *_rows("mbind set_mempolicy get_mempolicy migrate_pages move_pages", _EPERM, _NUMA,
           "Docker", "Flatpak"),
    *_rows("set_mempolicy_home_node", _EPERM, _NUMA, "Docker"),
    *_rows("memfd_secret", _EPERM,
           "takes pages out of the kernel's direct map, splitting its large pages for the whole "
           "host until it reboots", "nono"),
    *_rows("uselib", _EPERM, _OBSOLETE, "Docker", "systemd @obsolete", "Flatpak"),
    *_rows("lookup_dcookie", _EPERM, _OBSOLETE, "Docker", "systemd @debug"),
    *_rows("nfsservctl", _EPERM, _OBSOLETE, "Docker", "systemd @privileged"),
    *_rows("_sysctl sysfs ustat create_module get_kernel_syms query_module afs_syscall tuxcall "
           "security vserver getpmsg putpmsg", _EPERM, _OBSOLETE, "Docker", "systemd @obsolete"),
)

# Refused only when the session shares the host's IPC namespace (``SeccompOptions.
# refuse_host_ipc``, the landlock-only mode): these objects are named by keys and queue names,
# not paths, so Landlock never sees them, and every process of the host could be reached.
HOST_IPC: Final[tuple[SyscallRefusal, ...]] = _rows(
    "shmget shmat shmctl shmdt semget semop semtimedop semctl msgget msgsnd msgrcv msgctl "
    "mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr", _EPERM,
    "System V IPC and POSIX message queues of the host's IPC namespace (no namespace of the "
    "session's own: landlock-only mode)", "nono")

# Refused only when the session watches the host's tree (``SeccompOptions.refuse_host_inotify``,
# the landlock-only mode): Landlock (ABI 7) does not check ``inotify_add_watch``, so a watch on
# any directory the uid may read outside the grants reports the names of what is created,
# opened and removed there; and the instances are counted per uid of the host
# (``fs.inotify.max_user_instances``), with no user namespace to lower the count.
HOST_INOTIFY: Final[tuple[SyscallRefusal, ...]] = _rows(
    "inotify_init inotify_init1 inotify_add_watch", errno.ENOSYS,
    "inotify on the host's tree, outside the grants, and the uid's host-wide instances (no "
    "mount or user namespace of the session's own: landlock-only mode); ENOSYS, as a kernel "
    "without inotify answers, so that programs fall back to polling", "nono")

# What ``SeccompOptions.allow_ptrace`` takes off the table (a learn session's tracer).
TRACING: Final = frozenset({"ptrace", "process_vm_readv"})

IOCTLS: Final[tuple[IoctlRefusal, ...]] = (
    IoctlRefusal("TIOCSTI", 0x5412, _EPERM,
                 "pushes bytes into the terminal's input: the shell that started the session "
                 "reads them as commands, outside the sandbox", ("Flatpak",)),
    IoctlRefusal("TIOCLINUX", 0x541C, _EPERM,
                 "console selection and paste: the same injection on a Linux virtual console",
                 ("Flatpak",)),
    IoctlRefusal("TIOCSETD", 0x5423, _EPERM,
                 "switches the line discipline, which loads and runs rarely used kernel code "
                 "(n_gsm, n_hdlc: several privilege escalations)", ("nono",)),
    IoctlRefusal("TIOCCONS", 0x541D, _EPERM,
                 "redirects the kernel console's output to this terminal", ("nono",)),
    IoctlRefusal("TIOCSSERIAL", 0x541F, _EPERM, "reconfigures a serial port", ("nono",)),
    IoctlRefusal("TIOCVHANGUP", 0x5437, _EPERM, "hangs up the terminal, as vhangup does",
                 ("nono",)),
    IoctlRefusal("TIOCSLCKTRMIOS", 0x5457, _EPERM,
                 "locks a terminal's settings against its other users", ("nono",)),
)
