"""Red team, twenty-second pass: the walk for linked files, raced by a session that moves them.

At each launch ``_linkscan`` walks the writable grants for names whose inode has a link outside
them (a cache's) and binds those read-only. The walk lists one directory after another; a
session already running on the same project (an agent beside the one being launched) may
rename in it while the walk goes. It watches two directories with inotify and, once the walk
has listed (opened and closed) the first of them, moves the linked directory out of the other
into it: the walk never lists the moved names, and the new session could write the cache's
inodes through them. The sessions are real, the watch and the rename the kernel's.
"""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from nonod.errors import LaunchError
from nonod.policy import Access
from nonod.sandbox import LaunchRequest, _cinit, _linkscan, open_launcher

from ..conftest import Result, SandboxUser
from ..sandbox.test_sandbox import PY, policy, probe

#: The first session: watches P and Q; when the walk has listed one of them, moves the linked
#: directory of the other into it (the walk has passed it and will not list it again).
MOVER = r"""
import ctypes, os, select, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
IN_CLOSE_NOWRITE = 0x10
watches = {libc.inotify_add_watch(fd, d.encode(), IN_CLOSE_NOWRITE): d for d in ('P', 'Q')}
assert -1 not in watches, ctypes.get_errno()
with open('ready', 'w') as ready:
    ready.write('watching\n')
inner = {'P': 'x', 'Q': 'y'}
while True:
    if not select.select([fd], [], [], 30)[0]:
        print('no walk seen')
        break
    data = os.read(fd, 4096)
    first = None
    while data:
        wd, mask, cookie, size = struct.unpack_from('iIII', data)
        if size == 0 and first is None:  # the directory itself, not a file in it
            first = watches[wd]
        data = data[16 + size:]
    if first:
        other = 'Q' if first == 'P' else 'P'
        os.rename(other + '/' + inner[other], first + '/' + inner[other])
        print('moved', other + '/' + inner[other], 'into', first)
        break
"""

#: The second session: every place the linked files may now be, written.
WRITER = (
    "for p in ('P/x/f.py', 'Q/x/f.py', 'P/y/g.py', 'Q/y/g.py'):\n"
    "    if os.path.exists(p):\n"
    "        print(p, end=' ')\n"
    "        t(lambda: open(p, 'a').write('POISON'))\n")


@pytest.fixture(params=["during", "after"])
def project(request: pytest.FixtureRequest, world_tmp: Path, sandbox_user: SandboxUser
            ) -> Path:
    """``home/proj`` with ``P/x/f.py`` and ``Q/y/g.py`` hard-linked from a cache outside
    the project (each beside a file of the project's own, so neither directory is bound
    whole), and the FIFO the first session says it watches through. ``during``: 3,000
    files below each of ``P`` and ``Q`` for the walk to look at before it lists the other,
    so the move lands while the walk goes; ``after``: nothing more, so the walk is done
    when the first session moves (between the walk and the mounts)."""
    home = world_tmp / "home"
    cache = home / ".cache/tool"
    cache.mkdir(parents=True)
    proj = home / "proj"
    for inner, name in (("P/x", "f.py"), ("Q/y", "g.py")):
        (proj / inner).mkdir(parents=True)
        (cache / name).write_text("HOST-CODE\n")
        os.link(cache / name, proj / inner / name)
        (proj / inner / "own.txt").write_text("mine\n")
        if request.param == "during":
            (proj / inner[0] / "big").mkdir()
            for i in range(3000):
                (proj / inner[0] / "big" / str(i)).touch()
    os.mkfifo(proj / "ready")
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    return proj


def _wait_ready(fifo: Path) -> str:
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        if not poll.poll(30_000):
            return ""
        return os.read(fd, 100).decode()
    finally:
        os.close(fd)


@pytest.mark.userns
def test_names_moved_while_the_walk_goes_are_still_bound_read_only(
        sandbox_user: SandboxUser, project: Path) -> None:
    pol = policy((project, Access.READWRITE))
    mover: list[Result] = []

    def first_session() -> None:
        mover.append(sandbox_user.run(pol, [PY, "-S", "-c", MOVER], cwd=str(project)))

    thread = threading.Thread(target=first_session)
    thread.start()
    try:
        assert _wait_ready(project / "ready") == "watching\n"
        second = sandbox_user.run(pol, probe(WRITER), cwd=str(project))
    finally:
        thread.join(60)
    first, = mover
    assert first.code == 0 and "moved" in first.stdout, (first.stdout, first.stderr)
    if second.code:
        # Moved between the walk and the mounts: the name the walk found is gone, and the
        # launch fails rather than leave its new place writable.
        assert "launch refused at step 'mounts'" in second.stderr, second.stderr
        assert "No such file or directory" in second.stderr, second.stderr
    else:
        # Moved while the walk went: found again where it went, and read-only there.
        lines = second.stdout.strip().split("\n")
        assert len(lines) == 2 and all(line.endswith(" EROFS") for line in lines), \
            second.stdout
    cache = project.parent / ".cache/tool"
    assert (cache / "f.py").read_text() == (cache / "g.py").read_text() == "HOST-CODE\n"


@pytest.mark.userns
@pytest.mark.parametrize("python", [False, True], ids=["c-init", "python-init"])
@pytest.mark.parametrize("swap", ["symlink", "directory"])
def test_a_name_moved_after_the_walk_is_not_covered_by_another(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch, python: bool, swap: str) -> None:
    """Between the walk and the mounts, the linked file's directory moved aside (as the
    first session above can, timed by its watch) and its name taken by a decoy holding a
    file of the same name: a link to the decoy, or the decoy directory itself. The
    read-only bind must not land on the decoy and leave the moved linked file writable.
    (The walk is the real one; the wrapper only times the move just after it.)"""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if python else "")
    cache, proj = world_tmp / "cache", world_tmp / "proj"
    (proj / "P").mkdir(parents=True)
    (proj / "D").mkdir()
    cache.mkdir()
    (cache / "f.py").write_text("HOST-CODE\n")
    os.link(cache / "f.py", proj / "P/f.py")
    (proj / "P/own.txt").write_text("mine\n")
    (proj / "D/f.py").write_text("decoy\n")
    walk = _linkscan.scan

    def walk_then_move(*args: Any, **kw: Any) -> _linkscan.LinkScan:
        found = walk(*args, **kw)
        assert str(proj / "P/f.py") in found.targets
        os.rename(proj / "P", proj / "P2")
        if swap == "symlink":
            os.symlink("D", proj / "P")
        else:
            os.rename(proj / "D", proj / "P")
        return found

    monkeypatch.setattr(_linkscan, "scan", walk_then_move)
    code = "open('P2/f.py', 'a').write('POISON'); print('WRITTEN')"

    async def main() -> str:
        async with open_launcher("namespaces") as launcher:
            out_r, out_w = os.pipe()
            try:
                proc = await launcher.launch(policy((proj, Access.READWRITE)), LaunchRequest(
                    argv=(PY, "-S", "-c", code), cwd=str(proj)), stdio=(0, out_w, out_w))
            except LaunchError as exc:
                return f"refused: {exc}"
            finally:
                os.close(out_w)
            with os.fdopen(out_r, "rb") as out:
                await proc.wait_exited()
                return out.read().decode()

    outcome = trio.run(main)
    assert (cache / "f.py").read_text() == "HOST-CODE\n", outcome
    assert outcome.startswith("refused") or "Read-only file system" in outcome, outcome
