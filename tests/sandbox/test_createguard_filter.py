"""The creation guard's notifying filter, run by the BPF evaluator of the seccomp tests: which
calls go to the session's init, on both architectures."""

from __future__ import annotations

import pytest

from nonod.sandbox._createguard import (
    SECCOMP_RET_USER_NOTIF,
    SYSCALLS,
    WATCHED,
    build_notify_filter,
)
from nonod.sandbox._seccomp import SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS
from nonod.sandbox._syscalls import AARCH64, AUDIT_ARCH_I386, X86_64, Arch

from .test_seccomp_filter import evaluate

NOTIFY, ALLOW, KILL = SECCOMP_RET_USER_NOTIF, SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS
O_CREAT, O_WRONLY = 0o100, 0o1


@pytest.mark.parametrize("arch", [X86_64, AARCH64], ids=lambda a: a.name)
def test_creation_calls_are_notified_and_nothing_else(arch: Arch) -> None:
    program = build_notify_filter(arch)
    table = SYSCALLS[arch.name]

    def verdict(name: str, *args: int, audit_arch: int = arch.audit_arch) -> int:
        nr = table[name] if name in table else arch.syscalls[name]
        return evaluate(program, nr, *args, audit_arch=audit_arch)

    for name in table:
        if name not in ("open", "openat"):
            assert verdict(name) == NOTIFY, name
    # openat(dirfd, path, flags): only with O_CREAT in the low 32 bits of flags
    assert verdict("openat", 0, 0, O_CREAT | O_WRONLY) == NOTIFY
    assert verdict("openat", 0, 0, O_WRONLY) == ALLOW
    assert verdict("openat", 0, 0, (1 << 32) | O_WRONLY) == ALLOW
    if "open" in table:  # open(path, flags)
        assert verdict("open", 0, O_CREAT) == NOTIFY
        assert verdict("open", 0, 0) == ALLOW
    for other in ("ioctl", "socket", "clone", "prctl", "seccomp"):
        assert verdict(other) == ALLOW
    assert verdict("openat", 0, 0, O_CREAT, audit_arch=AUDIT_ARCH_I386) == KILL


def test_x32_calls_are_killed() -> None:
    program = build_notify_filter(X86_64)
    assert evaluate(program, 0x40000000 | 257, 0, 0, O_CREAT,
                    audit_arch=X86_64.audit_arch) == KILL


@pytest.mark.parametrize("arch", [X86_64, AARCH64], ids=lambda a: a.name)
def test_calls_that_nest_a_domain_or_move_a_parent_are_notified(arch: Arch) -> None:
    """landlock_restrict_self always; prctl only for
    PR_SET_CHILD_SUBREAPER; clone only with CLONE_PARENT (low 32 bits, as the kernel reads
    them); clone3 is ENOSYS."""
    program = build_notify_filter(arch)
    nr = WATCHED[arch.name]

    def verdict(name: str, *args: int) -> int:
        return evaluate(program, nr[name], *args, audit_arch=arch.audit_arch)

    assert verdict("landlock_restrict_self", 3, 0) == NOTIFY
    assert verdict("landlock_restrict_self", (1 << 64) - 1, 2) == NOTIFY
    assert evaluate(program, arch.syscalls["seccomp"], 1, 1 << 3, 0,
                    audit_arch=arch.audit_arch) == ALLOW  # a listener: the kernel's EBUSY
    assert verdict("prctl", 36, 1) == NOTIFY
    assert verdict("prctl", 37, 0) == ALLOW  # PR_GET_CHILD_SUBREAPER
    assert verdict("prctl", (1 << 32) | 15, 0) == ALLOW  # PR_SET_NAME, high bits ignored
    assert verdict("clone", 0x8000 | 17) == NOTIFY  # CLONE_PARENT | SIGCHLD
    assert verdict("clone", 0x11 | 0x01200000) == ALLOW  # what fork() passes
    assert verdict("clone", 0x003D0F00) == ALLOW  # what pthread_create passes
    assert evaluate(program, 435, 0, 88, audit_arch=arch.audit_arch) == \
        SECCOMP_RET_ERRNO | 38  # clone3: ENOSYS
