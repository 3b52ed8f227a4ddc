"""Looking at the filesystem with a caller's identity, on the current thread only.

A system daemon runs as root, so what it finds on disk (does a path exist? is it a directory?
where does a symlink lead?) is what root could find: told back to a caller, it would reveal
the inside of other users' private directories. While such a question is asked on a caller's
behalf the worker thread takes the caller's filesystem identity: ``setfsuid``, ``setfsgid``
and the caller's supplementary groups, made with the raw system calls, which change the
calling thread only (glibc's wrappers would change every thread of the daemon). While the
fsuid is not 0 the kernel also drops the thread's filesystem capabilities
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``), so the thread sees exactly what the caller
would; they come back with fsuid 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import pwd
from collections.abc import Iterator
from typing import Final

from .errors import NonoError

#: (setfsuid, setfsgid, setgroups) per machine.
_SYSCALLS: Final = {"x86_64": (122, 123, 116), "aarch64": (151, 152, 159)}


class IdentityError(NonoError):
    code = "daemon.identity"


def _groups_of(uid: int, gid: int) -> list[int]:
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        return [gid]


def _switch(libc: ctypes.CDLL, numbers: tuple[int, int, int], uid: int, gid: int,
            groups: list[int]) -> None:
    set_fsuid, set_fsgid, set_groups = numbers
    array = (ctypes.c_uint32 * len(groups))(*groups)
    if libc.syscall(set_groups, ctypes.c_int(len(groups)), array) != 0:
        raise IdentityError(f"setgroups failed: {os.strerror(ctypes.get_errno())}")
    libc.syscall(set_fsgid, ctypes.c_uint32(gid))
    libc.syscall(set_fsuid, ctypes.c_uint32(uid))
    # Both calls return the previous id and cannot report failure: ask again (-1 changes
    # nothing) to know where we stand.
    now_uid = libc.syscall(set_fsuid, ctypes.c_uint32(0xFFFFFFFF))
    now_gid = libc.syscall(set_fsgid, ctypes.c_uint32(0xFFFFFFFF))
    if (now_uid, now_gid) != (uid, gid):
        raise IdentityError(f"could not take filesystem identity {uid}:{gid}")


@contextlib.contextmanager
def caller_identity(uid: int, gid: int) -> Iterator[None]:
    """Within the block, this thread's file accesses are checked as ``uid``:``gid`` with that
    user's groups. Use it in a worker thread, never in the trio thread."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise IdentityError(f"no filesystem identity switch on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    mine = (os.geteuid(), os.getegid(), os.getgroups())
    _switch(libc, numbers, uid, gid, _groups_of(uid, gid))
    try:
        yield
    finally:
        _switch(libc, numbers, *mine)
