"""SeccompOptions.allow_ptrace: learn's recording sessions let strace trace, and nothing more."""

from __future__ import annotations

import ctypes
import errno
import os
import struct

import pytest

from nonod.sandbox._seccomp import SeccompOptions, build_filter, describe_filter, install_filter
from nonod.sandbox._syscalls import native_arch

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/seccomp/actions_avail"), reason="kernel without seccomp")

PTRACE_TRACEME = 0
_PR_SET_NO_NEW_PRIVS = 38


def _probe_in_child(options: SeccompOptions) -> tuple[int, int, int]:
    """errno of (ptrace(TRACEME), process_vm_readv of itself, process_vm_writev of itself)
    under the filter, from a forked child; 0 means the call went through."""
    program = build_filter(options)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            install_filter(program)
            arch = native_arch()

            def call(name: str, *args: object) -> int:
                number = arch.nr(name)
                assert number is not None
                ctypes.set_errno(0)
                result = libc.syscall(ctypes.c_long(number), *args)
                return 0 if result >= 0 else ctypes.get_errno()

            buf = ctypes.create_string_buffer(8)
            iov = struct.pack("PN", ctypes.addressof(buf), 8)
            local = ctypes.create_string_buffer(iov)
            remote = ctypes.create_string_buffer(iov)
            me = os.getpid()
            results = (
                call("ptrace", ctypes.c_long(PTRACE_TRACEME), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0)),
                call("process_vm_readv", ctypes.c_long(me), local, ctypes.c_long(1), remote,
                     ctypes.c_long(1), ctypes.c_long(0)),
                call("process_vm_writev", ctypes.c_long(me), local, ctypes.c_long(1), remote,
                     ctypes.c_long(1), ctypes.c_long(0)),
            )
            os.write(write_end, struct.pack("3i", *results))
        finally:
            os._exit(0)
    os.close(write_end)
    data = os.read(read_end, 12)
    os.close(read_end)
    os.waitpid(pid, 0)
    a, b, c = struct.unpack("3i", data)
    return a, b, c


def test_sessions_still_refuse_ptrace() -> None:
    assert _probe_in_child(SeccompOptions()) == (errno.EPERM, errno.EPERM, errno.EPERM)


def test_allow_ptrace_lets_a_tracer_trace_and_read_only() -> None:
    traceme, readv, writev = _probe_in_child(SeccompOptions(allow_ptrace=True))
    assert traceme == 0 and readv == 0
    assert writev == errno.EPERM


def test_describe_filter_says_so() -> None:
    default = "\n".join(describe_filter(SeccompOptions()))
    learning = "\n".join(describe_filter(SeccompOptions(allow_ptrace=True)))
    assert "ptrace, process_vm_readv, process_vm_writev, pidfd_getfd: EPERM" in default
    assert "process_vm_writev, pidfd_getfd: EPERM" in learning
    assert "ptrace, process_vm_readv: allowed (a learn session's tracer)" in learning
