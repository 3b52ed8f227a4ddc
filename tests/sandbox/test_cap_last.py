"""``_libc.cap_last``: the highest capability the running kernel knows, read once per process
(the fork server reads it at its start, for every launcher: ``drop_bounding_set`` drops
``0..cap_last`` in each session's init)."""

from __future__ import annotations

import ctypes
import errno

from nonod.sandbox import _libc

PR_CAPBSET_READ = 23


def _capbset_read(cap: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.prctl(PR_CAPBSET_READ, ctypes.c_ulong(cap), 0, 0, 0)
    return result if result >= 0 else -ctypes.get_errno()


def test_cap_last_is_the_kernels_highest_capability() -> None:
    last = _libc.cap_last()
    assert _capbset_read(last) in (0, 1)  # known to the kernel
    assert _capbset_read(last + 1) == -errno.EINVAL  # the first it does not know
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert int(f.read()) == last == _libc.cap_last()
