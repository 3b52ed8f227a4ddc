"""Run a command as Docker's default seccomp profile would: no new namespaces.

    python tests/nouserns.py COMMAND [ARG...]

Installs a seccomp filter that answers what the container runtime's default profile refuses to
a process without CAP_SYS_ADMIN, as far as nonod is concerned: ``unshare`` and ``setns``
(EPERM), ``clone`` with any ``CLONE_NEW*`` flag (EPERM), ``clone3`` (ENOSYS, so that libc falls
back to ``clone``), ``mount`` (EPERM) and the keyring calls (EPERM); then execs COMMAND. The
filter is inherited by everything COMMAND starts (the daemon, its fork server, the sessions),
so the engine meets a kernel that refuses its namespaces.
"""

from __future__ import annotations

import errno
import os
import sys

from nonod.sandbox import _libc
from nonod.sandbox._seccomp import (
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    Assembler,
    install_filter,
)
from nonod.sandbox._syscalls import native_arch

CLONE_NAMESPACES = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
REFUSED = ("unshare", "setns", "mount", "keyctl", "add_key", "request_key")


def build() -> bytes:
    arch = native_arch()
    asm = Assembler()
    asm.load(4)  # seccomp_data.arch
    asm.jeq(arch.audit_arch, jf="allow")
    asm.load(0)  # seccomp_data.nr
    for name in REFUSED:
        nr = arch.nr(name)
        if nr is not None:
            asm.jeq(nr, jt="eperm")
    asm.jeq(arch.nr("clone3") or 0xFFFFFFFF, jt="enosys")
    asm.jeq(arch.nr("clone") or 0xFFFFFFFF, jf="allow")
    asm.load(16)  # the low half of clone's flags
    asm.jset(CLONE_NAMESPACES, jt="eperm", jf="allow")
    asm.label("allow")
    asm.ret(SECCOMP_RET_ALLOW)
    asm.label("eperm")
    asm.ret(SECCOMP_RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    return asm.assemble()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
    install_filter(build())
    os.execvp(argv[0], argv)
    return 127  # unreachable


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
