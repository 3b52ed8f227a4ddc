"""The launcher's ctypes calls make no Python class in a launcher.

A ctypes array type of a size not used before (``create_string_buffer`` of a path, a
``(c_char * n)`` buffer) and a ``CDLL`` (which defines its own function-pointer class) are
classes: made in a forked launcher, each costs it CPU and copied pages (about 0.2 ms and a
hundred page faults for the first). The types and the ``syscall`` function are made once, at
import, in the fork server, which every launcher inherits; these tests count the classes that
exist before and after each step runs (in a forked child where the step confines it).
"""

from __future__ import annotations

import ctypes
import gc
import os
import struct
from pathlib import Path

import pytest

from nonod.policy import Access, Grant
from nonod.sandbox import _libc
from nonod.sandbox._landlock import build_ruleset, compile_plan, probe_abi, restrict_self
from nonod.sandbox._seccomp import install_filter

#: One BPF instruction: return SECCOMP_RET_ALLOW.
ALLOW_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)


#: What ctypes makes a class of: arrays, pointers, function pointers (a ``CDLL``'s), structures.
_CTYPES = (ctypes.Array, ctypes._Pointer, ctypes._CFuncPtr, ctypes.Structure, ctypes.Union,
           ctypes._SimpleCData)


def _classes() -> int:
    """The ctypes classes that exist (other classes a step may make are not this test's: in
    a whole test run, modules other tests imported anew make their own on first use)."""
    return sum(1 for obj in gc.get_objects() if isinstance(obj, type) and issubclass(obj, _CTYPES))


def _in_child(step: str, tree: Path) -> int:
    """Run ``step`` in a forked child; the number of classes it made (-1: it failed). What
    the daemon or the fork server computes before the fork is computed here first."""
    grants = [Grant(path=str(tree / name), access=Access.READ) for name in sorted(os.listdir(tree))]
    plan = compile_plan(grants, abi=probe_abi(), scope_signals=False, scope_abstract_unix=False,
                        required=frozenset())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        made = -1
        try:
            gc.disable()
            if step == "loopback":
                _libc.unshare(_libc.CLONE_NEWNET)  # a network namespace of its own
            before = _classes()
            if step == "seccomp":
                _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
                install_filter(ALLOW_ALL)
            elif step == "landlock":
                ruleset, _ = build_ruleset(plan)
                _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
                restrict_self(ruleset)
            elif step == "statx":
                _libc.mount_id(str(tree))
            elif step == "loopback":
                _libc.set_loopback_up()
            elif step == "caps":
                _libc.drop_all_capabilities()
            made = _classes() - before
        finally:
            os.write(w, str(made).encode())
            os._exit(0)
    os.close(w)
    try:
        return int(os.read(r, 64))
    finally:
        os.close(r)
        os.waitpid(pid, 0)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    # Paths of many lengths: each new length was a new array type.
    for n in range(1, 9):
        (tmp_path / ("d" * n)).mkdir()
    return tmp_path


@pytest.mark.parametrize("step", [
    "landlock", "seccomp", "statx",
    pytest.param("loopback", marks=[pytest.mark.root, pytest.mark.skipif(
        os.geteuid() != 0, reason="a network namespace, as root")]),
    pytest.param("caps", marks=[pytest.mark.root, pytest.mark.skipif(
        os.geteuid() != 0, reason="capabilities to drop, as root")]),
])
def test_a_launcher_step_makes_no_class(step: str, tree: Path) -> None:
    if step == "landlock" and probe_abi() == 0:
        pytest.skip("no Landlock on this kernel")
    assert _in_child(step, tree) == 0
