"""The creation guard's emulation, asked for by a process that confined itself further.

A program in a session may sandbox its own children (an agent's tool commands under a Landlock
domain of their own: Codex's Linux sandbox does). The session's init emulates the creations
layer 2 refuses in a guarded directory, under the session's first layer only: it must not
do, for a process whose own domain refuses the call, what that process may not do itself.

Found by the twenty-fifth red-team pass, closed by guardnest: the init marks every process
that calls ``landlock_restrict_self`` and emulates
only for a thread whose ancestry reaches the program without passing a marked process or a
child subreaper (``_createserve``, "Nested domains"). Each test runs under the three inits:
``python`` (the Python init serves the whole session: no reaper binary), ``cold`` (the
Python init, then ``nono-reaper`` exec'd 50 ms in: the probes wait for it) and ``warm`` (the
C init from its first instruction)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonod.sandbox import _reaper

from ..conftest import SandboxUser
from ..sandbox.test_createguard import AFTER_REAPER, layout_policy
from ..sandbox.test_sandbox import probe

pytestmark = pytest.mark.userns

CLONE = {"x86_64": 56, "aarch64": 220}[os.uname().machine]

# The probe's own Landlock domain: every write and creation right handled, no rule (read-only
# everywhere), as an agent confines a tool command it lets only read.
READ_ONLY = (
    "import ctypes, threading, time\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "def read_only():\n"
    "    handled = (1 << 1) | (0xFFF << 4) | (1 << 14)\n"  # WRITE_FILE, REMOVE_*..REFER, TRUNCATE
    "    attr = ctypes.create_string_buffer(handled.to_bytes(8, 'little'), 8)\n"
    "    fd = libc.syscall(444, attr, 8, 0)\n"
    "    assert fd >= 0, ctypes.get_errno()\n"
    "    assert libc.syscall(446, fd, 0) == 0, ctypes.get_errno()\n"
    "    os.close(fd)\n"
    "    return 0\n"
    "def make(name):\n"
    "    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))\n"
    "def child(f):\n"  # f in a forked child; its lines come before the parent's next ones
    "    sys.stdout.flush()\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        try:\n"
    "            f()\n"
    "        finally:\n"
    "            sys.stdout.flush()\n"
    "            os._exit(0)\n"
    "    os.waitpid(pid, 0)\n"
    "def wait_reparented(old):\n"
    "    end = time.monotonic() + 30\n"
    "    while os.getppid() == old:\n"
    "        assert time.monotonic() < end, 'never reparented'\n"
    "        time.sleep(0.001)\n"
)


@pytest.fixture
def layout(world_tmp: Path, sandbox_user: SandboxUser) -> tuple[Path, Path]:
    home = world_tmp / "home"
    work = home / "work"
    (work / "src").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "src/c.txt"):
        (work / name).write_text(name)
    sandbox_user.chown(home, work, work / "src", work / "a.txt", work / "b.txt",
                       work / "src" / "c.txt")
    return home, work


@pytest.fixture(params=["python", "cold", "warm"])
def init(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":  # no reaper binary: the Python init serves throughout
        monkeypatch.setenv(_reaper.OVERRIDE, "/nonexistent/nono-reaper")
    if request.param == "warm":  # the C init from its first instruction (_cinit)
        monkeypatch.setenv("NONO_TEST_WARM_INIT", "1")
    return str(request.param)


def _run(sandbox_user: SandboxUser, home: Path, work: Path, init: str, code: str) -> list[str]:
    wait = AFTER_REAPER if init == "cold" else ""
    r = sandbox_user.run(layout_policy(home, work), probe(wait + READ_ONLY + code),
                         cwd=str(work), env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    return r.stdout.splitlines()


def _names(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir())


def test_a_process_in_a_read_only_domain_of_its_own_writes_nothing_through_the_guard(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """A tool command its agent confined read-only creates, links, renames and moves nothing
    at the top of the workdir (each by the syscall the kernel refuses it with), and neither
    does anything it starts; the agent, before and after, still creates there."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "t(lambda: make('before.txt'))\n"  # the program: emulated
        "def tool():\n"
        "    t(read_only)\n"
        "    t(lambda: open('src/new.txt', 'w'))\n"  # below a ruled directory: the kernel's
        "    t(lambda: make('new.txt'))\n"  # in the guarded workdir: no longer emulated
        "    t(lambda: os.mkdir('newdir'))\n"
        "    t(lambda: os.symlink('a.txt', 'link'))\n"
        "    t(lambda: os.link('a.txt', 'hard'))\n"
        "    t(lambda: os.rename('a.txt', 'b.txt'))\n"
        "    t(lambda: os.rename('src/c.txt', 'c.txt'))\n"
        "    t(lambda: os.mkfifo('fifo'))\n"
        "    child(lambda: t(lambda: make('grandchild.txt')))\n"  # fork: below the tool
        "    child(lambda: child(lambda: t(lambda: make('deeper.txt'))))\n"
        "child(tool)\n"
        "t(lambda: make('after.txt'))\n"  # the program again
        "child(lambda: t(lambda: make('after-child.txt')))\n"  # and a child of its own
        "t(lambda: os.rename('after.txt', 'renamed.txt'))\n"
    ))
    assert out == ["OK ", "OK 0", *["EACCES"] * 10, "OK ", "OK ", "OK "]
    assert _names(work) == ["a.txt", "after-child.txt", "b.txt", "before.txt", "renamed.txt",
                            "src"]
    assert (work / "b.txt").read_text() == "b.txt"


def test_the_program_confining_itself_ends_its_own_emulation(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """The program's first process confines itself: from then on nothing of the session is
    known to be in the domain the init emulates for."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "t(read_only)\n"
        "t(lambda: make('new.txt'))\n"
        "t(lambda: os.rename('src/c.txt', 'c.txt'))\n"
        "child(lambda: t(lambda: make('child.txt')))\n"
    ))
    assert out == ["OK 0", "EACCES", "EACCES", "EACCES"]
    assert _names(work) == ["a.txt", "b.txt", "src"]


def test_an_orphan_of_a_confined_process_is_not_taken_for_the_programs(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """A confined tool forks and exits: its child, reparented to the init, has no chain to
    the program, and is refused; so is a grandchild that a subreaper of the program's
    adopted (its chain reaches the program, but through a process that may adopt)."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "r, w = os.pipe()\n"
        "def tool():\n"
        "    read_only()\n"
        "    me = os.getpid()\n"
        "    if os.fork() == 0:\n"
        "        wait_reparented(me)\n"
        "        t(lambda: make('orphan.txt'))\n"
        "        sys.stdout.flush()\n"
        "        os.write(w, b'x')\n"
        "        os._exit(0)\n"
        "child(tool)\n"
        "os.close(w)\n"
        "assert os.read(r, 1) == b'x'\n"
        "os.close(r)\n"
        "def subreaper():\n"
        "    assert libc.prctl(36, 1, 0, 0, 0) == 0, ctypes.get_errno()\n"
        "    t(lambda: make('subreaper-before.txt'))\n"
        "    me = os.getpid()\n"
        "    child(tool2)\n"
        "    pid, _ = os.waitpid(-1, 0)\n"  # the adopted grandchild, once it is done
        "    t(lambda: make('subreaper-after.txt'))\n"  # the subreaper itself: known
        "def tool2():\n"
        "    read_only()\n"
        "    me = os.getpid()\n"
        "    if os.fork() == 0:\n"
        "        wait_reparented(me)\n"
        "        t(lambda: make('adopted.txt'))\n"
        "        sys.stdout.flush()\n"
        "        os._exit(0)\n"
        "child(subreaper)\n"
        "t(lambda: make('program.txt'))\n"
    ))
    assert out == ["EACCES", "OK ", "EACCES", "OK ", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "program.txt", "src", "subreaper-after.txt",
                            "subreaper-before.txt"]


def test_clone_parent_from_a_confined_process_is_refused(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """``clone(CLONE_PARENT)`` would give a confined tool's child the program as its parent:
    refused (EPERM) for a process not known to be in the program's domain; ``clone3`` is
    ENOSYS (its flags are behind a pointer), so libc's fork goes through ``clone``."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "def clone_parent():\n"
        f"    r = libc.syscall({CLONE}, 0x8000 | 17, 0, 0, 0, 0)\n"  # CLONE_PARENT | SIGCHLD
        "    if r == 0:\n"
        "        os._exit(0)\n"  # (the child, had it been made)
        "    if r < 0:\n"
        "        raise OSError(ctypes.get_errno(), 'clone')\n"
        "    return 'made'\n"
        "def tool():\n"
        "    read_only()\n"
        "    t(clone_parent)\n"
        "    t(lambda: make('tool.txt'))\n"
        "child(tool)\n"
        "t(lambda: libc.syscall(435, 0, 0) == -1 and ctypes.get_errno())\n"
        "t(lambda: make('program.txt'))\n"
    ))
    assert out == ["EPERM", "EACCES", "OK 38", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "program.txt", "src"]


def test_a_thread_that_confines_itself_marks_its_whole_process(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """One thread of a tool confines itself while two siblings keep creating at the top of the
    workdir: every call answers (none waits forever), the confined thread creates nothing,
    and its siblings, which share its memory and whose children show the same parent, are
    not emulated for either once it has confined itself; the program still is."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "def tool():\n"
        "    stop = threading.Event()\n"
        "    started = [threading.Event(), threading.Event()]\n"
        "    seen = [set(), set()]\n"
        "    after = [None, None]\n"
        "    def sibling(i):\n"
        "        n = 0\n"
        "        while not stop.is_set():\n"
        "            try:\n"
        "                make(f'sib{i}-{n}')\n"
        "                seen[i].add('OK')\n"
        "            except OSError as e:\n"
        "                seen[i].add(errno.errorcode[e.errno])\n"
        "            started[i].set()\n"
        "            n += 1\n"
        "        try:\n"
        "            make(f'sib{i}-after')\n"
        "            after[i] = 'OK'\n"
        "        except OSError as e:\n"
        "            after[i] = errno.errorcode[e.errno]\n"
        "    threads = [threading.Thread(target=sibling, args=(i,)) for i in (0, 1)]\n"
        "    for th in threads:\n"
        "        th.start()\n"
        "    for ev in started:\n"
        "        assert ev.wait(10)\n"
        "    t(read_only)\n"  # this thread only (no TSYNC)
        "    t(lambda: make('confined-thread.txt'))\n"
        "    stop.set()\n"
        "    for th in threads:\n"
        "        th.join()\n"
        "    print(*after)\n"
        "    print(*sorted(seen[0] | seen[1]))\n"
        "child(tool)\n"
        "t(lambda: make('program.txt'))\n"
    ))
    assert out[:3] == ["OK 0", "EACCES", "EACCES EACCES"]
    assert out[3] in ("OK", "EACCES OK"), out  # some made before, maybe some refused after
    assert out[4:] == ["OK "]
    names = _names(work)
    assert "confined-thread.txt" not in names and "sib0-after" not in names
    assert "sib1-after" not in names and "program.txt" in names


def test_a_seccomp_listener_of_its_own_cannot_hide_a_confinement(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str) -> None:
    """A seccomp filter of the program's own whose listener, the most recent filter's, got
    its descendants' ``landlock_restrict_self`` before the init would hide them: the kernel
    refuses a second listener among a task's filters (EBUSY), so the guard's is the only one.
    The failed call marks nothing: the tool still creates."""
    home, work = layout
    out = _run(sandbox_user, home, work, init, (
        "import struct\n"
        "def own_listener():\n"
        "    insn = struct.pack('=HBBI', 0x06, 0, 0, 0x7FFC0000)\n"  # ret USER_NOTIF
        "    buf = ctypes.create_string_buffer(insn, 8)\n"
        "    prog = struct.pack('=HxxxxxxQ', 1, ctypes.addressof(buf))\n"
        "    fprog = ctypes.create_string_buffer(prog, 16)\n"
        "    fd = libc.syscall(317 if os.uname().machine == 'x86_64' else 277, 1, 8, fprog)\n"
        "    if fd < 0:\n"
        "        raise OSError(ctypes.get_errno(), 'seccomp')\n"
        "    return 'listener'\n"
        "def tool():\n"
        "    t(own_listener)\n"
        "    t(lambda: make('tool.txt'))\n"
        "child(tool)\n"
    ))
    assert out == ["EBUSY", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "src", "tool.txt"]


# A tool confined within the program's first milliseconds, by perl (a few ms to start, where
# Python takes most of the init's 50 ms as Python): it then says whether the init answered
# its landlock_restrict_self as Python, and runs the rest as Python.
EARLY = """
my ($py, $tool, $program) = @ARGV;
$| = 1;
my $pid = fork;
if ($pid == 0) {
    my $attr = pack("Q", (1 << 1) | (0xFFF << 4) | (1 << 14));
    my $fd = syscall(444, $attr, 8, 0);
    die "create_ruleset: $!" if $fd < 0;
    syscall(446, $fd, 0) == 0 or die "restrict_self: $!";
    open(my $comm, "<", "/proc/1/comm") or die;
    print(<$comm> eq "nono-reaper\n" ? "late\n" : "early\n");
    exec($py, "-S", "-c", $tool) or die;
}
waitpid($pid, 0);
exec($py, "-S", "-c", $program) or die;
"""


@pytest.mark.skipif(not os.path.exists("/usr/bin/perl"), reason="no perl")
def test_what_the_python_init_saw_reaches_the_reaper(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """A tool confined while the init is still Python (its first 50 ms) stays marked once the
    init has become ``nono-reaper``: the marks go over in the guard's configuration."""
    home, work = layout
    make = "t(lambda: os.close(os.open('{}', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
    tool = probe(AFTER_REAPER + make.format("tool.txt"))
    program = probe(AFTER_REAPER + make.format("program.txt"))
    r = sandbox_user.run(layout_policy(home, work),
                         ["/usr/bin/perl", "-e", EARLY, tool[0], tool[3], program[3]],
                         cwd=str(work), env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    out = r.stdout.splitlines()
    if out[0] == "late":
        pytest.skip("the tool confined itself after the init had become the reaper")
    assert out == ["early", "EACCES", "OK "]
    assert _names(work) == ["a.txt", "b.txt", "program.txt", "src"]
