"""Red team, thirty-first pass: a guarded path the host removes while a session runs
(docs/security-model.md). A persistence file (``.envrc``) or a denied directory (``~/.aws``)
that exists at launch is kept by a mount on it: read-only, or a mask. The creation guard
refused only the names missing at launch. Once the host removed the path (``git checkout``
of a branch without ``.envrc``, ``git clean``, a user's ``rm -rf ~/.aws``), its mount went
with it and the session could make it again: its own ``.envrc`` (the view guard then bound
the session's file read-only, and direnv on the host ran it), or ``~/.aws`` as a symbolic
link to a directory of its own (a link is "nothing to mount" to the view guard: the
host's ``aws configure`` would have written its keys there). Cold and warm launches alike.

Closed in the plan (``_mounts._View._refuse_once_gone``): an existing guarded path in a
directory the session may write has its name refused to the creation guard too."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from nonod.policy import Access, Denial, Grant, ResolvedPolicy

from ..conftest import Result, SandboxUser
from ..sandbox.test_sandbox import probe

pytestmark = pytest.mark.userns

#: Says ``ready``, waits for the host to remove NAME, then makes it again: as a file with
#: its own text, or as a symbolic link to its own directory ``loot``.
MAKE_AGAIN = (
    "import time\n"
    "open('ready', 'w').close()\n"
    "end = time.monotonic() + 30\n"
    "while os.path.lexists(NAME) and time.monotonic() < end:\n"
    "    time.sleep(0.01)\n"
    "print('gone', not os.path.lexists(NAME), flush=True)\n"
    "time.sleep(0.3)\n"  # past the view guard's repair of the removal
    "def make():\n"
    "    if KIND == 'file':\n"
    "        with open(NAME, 'w') as f:\n"
    "            f.write('echo SESSION\\n')\n"
    "    else:\n"
    "        os.symlink(LOOT, NAME)\n"
    "t(make)\n"
    "time.sleep(0.3)\n"
)


def _run(user: SandboxUser, policy: ResolvedPolicy, work: Path, target: Path, kind: str,
         loot: Path) -> Result:
    out: list[Result] = []
    code = (f"NAME, KIND, LOOT = {str(target)!r}, {kind!r}, {str(loot)!r}\n" + MAKE_AGAIN)
    runner = threading.Thread(target=lambda: out.append(user.run(
        policy, probe(code), cwd=str(work), env=(("HOME", str(work.parent)),), timeout=90)))
    runner.start()
    end = time.monotonic() + 60
    while not (work / "ready").exists() and runner.is_alive():
        assert time.monotonic() < end, "the session never started"
        time.sleep(0.02)
    time.sleep(0.2)
    if target.is_dir() and not target.is_symlink():
        for child in target.iterdir():
            child.unlink()
        target.rmdir()  # the host's own removal
    else:
        target.unlink()
    runner.join(90)
    assert out and out[0].code == 0, out
    return out[0]


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_guarded_path_the_host_removed_is_not_the_sessions_to_make(
        sandbox_user: SandboxUser, world_tmp: Path, kind: str) -> None:
    """Before: ``OK`` (cold and warm), and the host then had the session's ``.envrc``, or
    ``~/.aws`` leading into the session's own directory."""
    home = world_tmp / "home"
    work = home / "work"
    loot = work / "loot"
    loot.mkdir(parents=True)
    (work / ".envrc").write_text("echo host\n")
    (home / ".aws").mkdir()
    (home / ".aws" / "config").write_text("[default]\n")
    for path in (home, work, loot, work / ".envrc", home / ".aws", home / ".aws" / "config"):
        os.lchown(path, sandbox_user.uid, sandbox_user.uid)
    target = work / ".envrc" if kind == "file" else home / ".aws"
    policy = ResolvedPolicy(name="removed", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
        Grant(path=str(home), access=Access.READWRITE),
        Grant(path=str(work), access=Access.READWRITE)),
        denials=(Denial(path=str(home / ".aws")),))

    r = _run(sandbox_user, policy, work, target, kind, loot)

    assert r.stdout.splitlines() == ["gone True", "EACCES"], r.stdout
    assert not os.path.lexists(target)


#: A program made at the top of the guarded working directory (the init's emulation) and run
#: at once, twenty times: ``go build -o app . && ./app``.
BUILD_AND_RUN = (
    "import shutil, subprocess\n"
    "def once(i):\n"
    "    shutil.copy('/usr/bin/true', f'app{i}')\n"
    "    os.chmod(f'app{i}', 0o755)\n"
    "    return subprocess.run([f'./app{i}']).returncode\n"
    "for i in range(20):\n"
    "    t(lambda: once(i))\n"
)


def test_a_program_made_through_the_guard_runs_at_once(sandbox_user: SandboxUser,
                                                       world_tmp: Path) -> None:
    """Before: ``ETXTBSY`` for most of them: the init closed its copy of the new file's
    descriptor only after answering, so the file was still open for writing when the
    program, already past its ``close``, ran it (a functional fault found on the way)."""
    home = world_tmp / "home"
    work = home / "work"
    work.mkdir(parents=True)
    sandbox_user.chown(home, work)
    policy = ResolvedPolicy(name="build", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
        Grant(path=str(home), access=Access.READWRITE),
        Grant(path=str(work), access=Access.READWRITE)), denials=())
    r = sandbox_user.run(policy, probe(BUILD_AND_RUN), cwd=str(work),
                         env=(("HOME", str(home)),), timeout=90)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["OK 0"] * 20
