"""review24: ways a process that confined itself further might look like the program's own
to the creation guard's init (``_createserve``, "Nested domains"), none of which works.

Each probe runs a tool (a child of the program) that confines itself read-only, as
tests/redteam/test_guard_nested_domain.py does, then tries to get an unmarked ancestry or an
identity the init misreads: a child made by ``posix_spawn`` (``CLONE_VM | CLONE_VFORK``), a
process whose confined thread is left alone after its leader exited (a zombie leader), a
confined thread that ``execve``s (it takes the leader's pid, and its start time), a name with
``)`` and newlines in ``/proc/<pid>/stat``, ``CLONE_PARENT`` with bits above the low 32 of
``clone``'s flags, and a namespace of its own. Each runs under the three inits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import SandboxUser
from .test_guard_nested_domain import CLONE, _names, _run
from .test_guard_nested_domain import init as init  # the fixtures
from .test_guard_nested_domain import layout as layout

pytestmark = pytest.mark.userns

# A Python child that reports, as the probe's ``t`` does, whether it could create ``name``.
MAKER = (
    "import errno, os, sys\n"
    "try:\n"
    "    os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644))\n"
    "    print('OK ')\n"
    "except OSError as e:\n"
    "    print(errno.errorcode[e.errno])\n"
)
EXE = "/usr/bin/python3"


def test_a_posix_spawned_child_of_a_confined_tool_is_refused(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """``posix_spawn`` (glibc: ``clone(CLONE_VM | CLONE_VFORK)``, no ``CLONE_PARENT``) gives
    the spawned process the tool as its parent: refused; the program's own spawn is not."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        f"MAKER = {MAKER!r}\n"
        "def spawn(name):\n"
        "    sys.stdout.flush()\n"
        f"    pid = os.posix_spawn({EXE!r}, [{EXE!r}, '-S', '-c', MAKER, name], os.environ)\n"
        "    os.waitpid(pid, 0)\n"
        "def tool():\n"
        "    t(read_only)\n"
        "    spawn('spawned.txt')\n"
        "child(tool)\n"
        "spawn('program-spawned.txt')\n"
    ))
    assert out == ["OK 0", "EACCES", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "program-spawned.txt", "src"]


def test_a_confined_thread_whose_leader_exited_is_still_refused(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """A tool's second thread confines itself, the leader exits alone (``SYS_exit``: a zombie
    leader the thread group keeps), and the thread, then a child it forks, create at the top
    of the workdir: the process is still the one marked, under the leader's pid."""
    home, work = layout
    exit_nr = {"x86_64": 60, "aarch64": 93}[os.uname().machine]
    out = _run(sandbox_user, home, work, init, (
        "def tool():\n"
        "    leader = os.getpid()\n"
        "    def alone():\n"
        "        t(read_only)\n"
        "        end = time.monotonic() + 30\n"
        "        while open(f'/proc/{leader}/task/{leader}/stat').read().split(')')[1].split()[0]"
        " != 'Z':\n"
        "            assert time.monotonic() < end, 'the leader never exited'\n"
        "            time.sleep(0.001)\n"
        "        t(lambda: make('thread.txt'))\n"
        "        child(lambda: t(lambda: make('thread-child.txt')))\n"
        "        sys.stdout.flush()\n"
        "        os._exit(0)\n"
        "    threading.Thread(target=alone).start()\n"
        f"    libc.syscall({exit_nr}, 0)\n"  # this thread only; the GIL is released meanwhile
        "child(tool)\n"
        "t(lambda: make('program.txt'))\n"
    ))
    assert out == ["OK 0", "EACCES", "EACCES", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "program.txt", "src"]


def test_a_confined_thread_that_execs_keeps_its_process_marked(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """A tool's second thread confines itself and ``execve``s: the kernel gives it the
    leader's pid and start time (``de_thread``), so the new program is the process marked,
    not a fresh one whose parent is the program."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        f"MAKER = {MAKER!r}\n"
        "def tool():\n"
        "    def run():\n"
        "        t(read_only)\n"
        "        sys.stdout.flush()\n"
        f"        os.execv({EXE!r}, [{EXE!r}, '-S', '-c', MAKER, 'exec.txt'])\n"
        "    threading.Thread(target=run).start()\n"
        "    time.sleep(30)\n"  # killed by the exec
        "child(tool)\n"
        "t(lambda: make('program.txt'))\n"
    ))
    assert out == ["OK 0", "EACCES", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "program.txt", "src"]


def test_names_with_parens_and_newlines_do_not_mislead_the_walk(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """``/proc/<pid>/stat`` shows a process's name raw, between parentheses: a confined tool
    named ``x) S 1 1 1`` with a newline, and its child, are still refused; the program, named
    likewise, is still walked to (its creations emulated)."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "def rename(name):\n"
        "    buf = ctypes.create_string_buffer(name, 16)\n"
        "    assert libc.prctl(15, buf, 0, 0, 0) == 0, ctypes.get_errno()\n"  # PR_SET_NAME
        "    return open('/proc/self/comm', 'rb').read()\n"
        "def tool():\n"
        "    t(read_only)\n"
        "    print(rename(b') 1 1 (\\n) S 1 ') == b') 1 1 (\\n) S 1 \\n')\n"
        "    t(lambda: make('tool.txt'))\n"
        "    child(lambda: t(lambda: make('tool-child.txt')))\n"
        "child(tool)\n"
        "rename(b'p) R 0 1\\n)')\n"
        "t(lambda: make('program.txt'))\n"
        "child(lambda: t(lambda: make('program-child.txt')))\n"
    ))
    assert out == ["OK 0", "True", "EACCES", "EACCES", "OK ", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "program-child.txt", "program.txt", "src"]


def test_clone_parent_above_the_low_32_bits_is_still_refused(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """The kernel reads ``clone``'s flags as their low 32 bits, and so do the filter and the
    init: bits set above them change nothing."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "def clone(flags):\n"
        "    libc.syscall.argtypes = (ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong,"
        " ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)\n"
        f"    r = libc.syscall({CLONE}, flags, 0, 0, 0, 0)\n"
        "    libc.syscall.argtypes = None\n"
        "    if r == 0:\n"
        "        os._exit(0)\n"
        "    if r < 0:\n"
        "        raise OSError(ctypes.get_errno(), 'clone')\n"
        "    os.waitpid(r, 0)\n"
        "    return 'made'\n"
        "def tool():\n"
        "    t(read_only)\n"
        "    t(lambda: clone((0xFFFFFFFF << 32) | 0x8000 | 17))\n"
        "    t(lambda: clone((1 << 63) | 0x8000 | 17))\n"
        "child(tool)\n"
    ))
    assert out == ["OK 0", "EPERM", "EPERM"]


def test_a_namespace_of_its_own_is_refused(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """A pid namespace nested in the session would give a tool's orphans a reaper that never
    called ``prctl``: the session's filter refuses ``unshare`` and ``clone`` with a namespace
    flag, whatever the guard does."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "def checked(r):\n"
        "    if r < 0:\n"
        "        raise OSError(ctypes.get_errno(), 'call')\n"
        "    if r == 0:\n"  # (a child, had the clone been made)
        "        os._exit(0)\n"
        "def tool():\n"
        "    t(read_only)\n"
        "    t(lambda: checked(libc.unshare(0x10000000 | 0x20000000)))\n"  # NEWUSER | NEWPID
        f"    t(lambda: checked(libc.syscall({CLONE}, 0x20000000 | 17, 0, 0, 0, 0)))\n"
        "child(tool)\n"
    ))
    assert out == ["OK 0", "EPERM", "EPERM"]
