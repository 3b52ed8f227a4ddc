"""The creation guard's emulation, asked for by a process that confined itself further.

A program in a session may sandbox its own children (an agent's tool commands under a Landlock
domain of their own: Codex's Linux sandbox does). The session's init emulates the creations
layer 2 refuses in a guarded directory, under the session's first layer only: it must not
do, for a process whose own domain refuses the call, what that process may not do itself.

Found by the twenty-fifth red-team pass and not closed: today a tool command confined
read-only by its agent creates, links, renames over and moves files at the top of the
workdir (and of a writable $HOME) through the init, under both inits."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import SandboxUser
from ..sandbox.test_createguard import AFTER_REAPER, layout_policy
from ..sandbox.test_sandbox import probe

pytestmark = pytest.mark.userns

# The probe's own Landlock domain: every write and creation right handled, no rule (read-only
# everywhere), as an agent confines a tool command it lets only read.
READ_ONLY = (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def read_only():\n"
    "    handled = (1 << 1) | (0xFFF << 4) | (1 << 14)\n"  # WRITE_FILE, REMOVE_*..REFER, TRUNCATE
    "    attr = ctypes.create_string_buffer(handled.to_bytes(8, 'little'), 8)\n"
    "    fd = libc.syscall(444, attr, 8, 0)\n"
    "    assert fd >= 0, ctypes.get_errno()\n"
    "    assert libc.syscall(446, fd, 0) == 0, ctypes.get_errno()\n"
    "    return 0\n"
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


@pytest.mark.xfail(strict=True, reason=(
    "found by redteam25, not closed: the init emulates with the session's first layer only; "
    "the kernel tells no other process a thread's own Landlock domain (docs/security-model.md, "
    "twenty-fifth pass)"))
@pytest.mark.parametrize("init", ["cold", "warm"])
def test_a_process_in_a_read_only_domain_of_its_own_writes_nothing_through_the_guard(
        sandbox_user: SandboxUser, layout: tuple[Path, Path], init: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    home, work = layout
    if init == "warm":  # the C init from its first instruction (_cinit)
        monkeypatch.setenv("NONO_TEST_WARM_INIT", "1")
    r = sandbox_user.run(layout_policy(home, work), probe(
        AFTER_REAPER + READ_ONLY +
        "t(read_only)\n"
        "t(lambda: open('src/new.txt', 'w'))\n"  # below a ruled directory: the kernel's
        "t(lambda: open('new.txt', 'w'))\n"  # in the guarded workdir: emulated
        "t(lambda: os.mkdir('newdir'))\n"
        "t(lambda: os.symlink('a.txt', 'link'))\n"
        "t(lambda: os.link('a.txt', 'hard'))\n"
        "t(lambda: os.rename('a.txt', 'b.txt'))\n"
        "t(lambda: os.rename('src/c.txt', 'c.txt'))\n"
        "t(lambda: os.mkfifo('fifo'))\n"
    ), cwd=str(work), env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["OK 0", *["EACCES"] * 8]
    assert sorted(p.name for p in work.iterdir()) == ["a.txt", "b.txt", "src"]
    assert (work / "b.txt").read_text() == "b.txt"
