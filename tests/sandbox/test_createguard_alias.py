"""The creation guard against a guarded directory that the view also shows at other paths
(review17): host bind mounts below the writable home, which the view binds with its mounts.
Layer 2 is built by path and the guard is by identity: the plan now refuses the guarded
names at every path the host's mount table shows the directory at (``_mounttable``), and
the walk puts no rule on a directory that is, by identity, on the way to a guarded one
(``_createguard.prepare``, ``reaper_create.c``). Each test here let a refused name through
before. Run with ``NONO_TEST_WARM_INIT=1`` for the C init, with ``NONO_PYTHON_INIT=1`` too
for the Python one."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from nonod.policy import Access, Grant
from nonod.sandbox import LaunchRequest
from nonod.sandbox._mounts import ANCHOR
from nonod.sandbox._mounttable import parse
from nonod.sandbox._plan import build_plan

from ..conftest import SandboxUser
from .test_createguard import layout, layout_policy, run_in  # noqa: F401 - the fixture
from .test_sandbox import probe

pytestmark = [pytest.mark.userns, pytest.mark.root]

Mount = Callable[..., Path]


def _made(*paths: Path) -> list[str]:
    return [str(p) for p in paths if p.exists() or p.is_symlink()]


@pytest.fixture
def mount(world_tmp: Path) -> Iterator[Mount]:
    """``mount(source, target, *options)``: a host mount (``target`` made); every mount below
    ``world_tmp`` is gone after the test (wherever a session may have moved it)."""

    def make(source: Path | str, target: Path, *options: str) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *(options or ("--bind",)), str(source), str(target)],
                       check=True)
        return target

    yield make
    while points := [m.point for m in parse(Path("/proc/self/mountinfo").read_text())
                     if m.point.startswith(f"{world_tmp}/")]:
        subprocess.run(["umount", "-l", max(points, key=len)], check=True)


def test_a_refused_name_is_refused_through_a_second_mount_of_its_directory(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount) -> None:
    home, work = layout
    alias = mount(work, home / "sub" / "alias")
    code = (f"t(lambda: os.close(os.open('{alias}/.envrc', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
            f"t(lambda: os.mkdir('{alias}/.vscode'))\n"
            f"t(lambda: os.mkdir('{alias}/made'))\n")
    out = run_in(sandbox_user, home, work, code)
    assert (out, _made(work / ".envrc", work / ".vscode")) == (["EACCES", "EACCES", "OK "], [])
    assert (work / "made").is_dir()  # any other name: still made (by the init)


def test_a_refused_name_is_refused_through_a_mount_of_an_ancestor(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount) -> None:
    """The home bound below itself: the home and the workdir, both guarded, at second paths
    (the workdir is a plain directory in that mount)."""
    home, work = layout
    up = mount(home, home / "sub" / "up")
    code = (f"t(lambda: os.close(os.open('{up}/.bashrc', os.O_CREAT | os.O_WRONLY)))\n"
            f"t(lambda: os.mkdir('{up}/work/.vscode'))\n"
            f"t(lambda: os.symlink('x', '{up}/work/.envrc'))\n"
            f"t(lambda: os.close(os.open('{up}/work/made.txt', os.O_CREAT | os.O_WRONLY)))\n")
    out = run_in(sandbox_user, home, work, code)
    refused = _made(home / ".bashrc", work / ".vscode", work / ".envrc")
    assert (out, refused) == (["EACCES", "EACCES", "EACCES", "OK "], [])
    assert (work / "made.txt").is_file()


def test_a_refused_name_is_refused_below_a_deeper_guarded_directory_of_a_mount(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount) -> None:
    """``.git`` bound elsewhere: its ``info``, guarded (``attributes`` refused), is at
    ``g/info`` there."""
    home, work = layout
    info = work / ".git" / "info"
    info.mkdir(parents=True)
    sandbox_user.chown(work / ".git", info)
    g = mount(work / ".git", home / "sub" / "g")
    out = run_in(sandbox_user, home, work,
                 f"t(lambda: os.close(os.open('{g}/info/attributes', os.O_CREAT | os.O_WRONLY)))\n")
    assert (out, _made(info / "attributes")) == (["EACCES"], [])


def test_a_refused_name_is_refused_when_a_directory_on_the_way_is_shown_elsewhere(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount) -> None:
    """The workdir at ``sub/alias``, and ``sub`` bound (without its mounts) at ``other``:
    ``other`` does not show the workdir, but it is ``sub``, which is on the way to it. A
    Landlock rule is on an inode, whatever path placed it: one on ``other`` is on ``sub``."""
    home, work = layout
    (home / "sub").mkdir()
    sandbox_user.chown(home / "sub")
    alias = mount(work, home / "sub" / "alias")
    mount(home / "sub", home / "other")
    out = run_in(sandbox_user, home, work,
                 f"t(lambda: os.mkdir('{alias}/.vscode'))\n"
                 f"t(lambda: os.mkdir('{home}/other/made'))\n")
    assert (out, _made(work / ".vscode")) == (["EACCES", "OK "], [])
    assert (home / "sub" / "made").is_dir()


def test_a_refused_name_is_refused_through_nested_mounts(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount) -> None:
    """The workdir bound at ``a/alias``, ``a`` bound with its mounts at ``b/x``: the
    workdir is at ``b/x/alias`` too, a mount of its own in a mount of an ordinary
    directory."""
    home, work = layout
    mount(work, home / "a" / "alias")
    x = mount(home / "a", home / "b" / "x", "--rbind")
    out = run_in(sandbox_user, home, work,
                 f"t(lambda: os.mkdir('{x}/alias/.vscode'))\n"
                 f"t(lambda: os.mkfifo('{x}/alias/.envrc'))\n")
    assert (out, _made(work / ".vscode", work / ".envrc")) == (["EACCES", "EACCES"], [])


def test_a_refused_name_is_refused_when_a_writable_grant_is_a_mount_on_the_way(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount, world_tmp: Path) -> None:
    """A grant of its own that is the workdir's ``.git`` bound elsewhere, the first writable
    root the walk meets (``a-git`` sorts before ``home``): ``.git/info`` is guarded there
    too, and no rule goes on ``a-git``, which is ``.git``, on the way to ``.git/info`` by
    either path. (It held on main too, for another reason: a writable grant is a guarded
    directory itself, its own persistence names refused; kept so that it keeps holding.)"""
    home, work = layout
    info = work / ".git" / "info"
    info.mkdir(parents=True)
    sandbox_user.chown(work / ".git", info)
    root = mount(work / ".git", world_tmp / "a-git")
    policy = layout_policy(home, work)
    policy = msgspec.structs.replace(
        policy, grants=(*policy.grants, Grant(path=str(root), access=Access.READWRITE)))
    r = sandbox_user.run(policy, probe(
        f"t(lambda: os.mkdir('{root}/info/attributes'))\n"
        f"t(lambda: os.mkdir('{info}/attributes'))\n"
        f"t(lambda: os.close(os.open('{root}/info/made.txt', os.O_CREAT | os.O_WRONLY)))\n"
    ), cwd=str(work), env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    assert (r.stdout.splitlines(), _made(info / "attributes")) == (["EACCES", "EACCES", "OK "],
                                                                   [])
    assert (info / "made.txt").is_file()


def test_the_way_to_a_second_mount_cannot_be_moved_below_a_ruled_directory(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount) -> None:
    """``sub``, which holds the workdir's second mount, moved into ``ruled`` (a directory off
    the way: it has its layer-2 rule) would put the workdir below that rule. The directories
    on the way to a second mount are bound onto themselves as those on the way to the first
    are: the move fails (``EBUSY``)."""
    home, work = layout
    for d in (home / "sub", home / "ruled"):
        d.mkdir()
        sandbox_user.chown(d)
    mount(work, home / "sub" / "alias")
    out = run_in(sandbox_user, home, work,
                 f"t(lambda: os.rename('{home}/sub', '{home}/ruled/sub'))\n"
                 f"t(lambda: os.mkdir('{home}/ruled/sub/alias/.vscode'))\n")
    assert (out, _made(work / ".vscode")) == (["EBUSY", "ENOENT"], [])


def test_a_mount_hidden_by_another_is_not_an_alias(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        mount: Mount) -> None:
    """The workdir bound at ``sub/alias`` with a tmpfs over it: the session sees the tmpfs
    there, whose names are its own to make; the launch is not refused for a guarded
    directory it cannot open."""
    home, work = layout
    alias = mount(work, home / "sub" / "alias")
    mount("tmpfs", alias, "-t", "tmpfs", "-o", "mode=1777")
    out = run_in(sandbox_user, home, work, f"t(lambda: os.mkdir('{alias}/.vscode'))\n")
    assert (out, _made(work / ".vscode")) == (["OK "], [])


def test_a_kept_plan_is_made_again_when_the_host_mounts_a_guarded_directory_elsewhere(
        layout: tuple[Path, Path], mount: Mount) -> None:  # noqa: F811 - the fixture
    """Plans are kept while the host answers their questions alike (``_mounts._Look``): the
    mount table is one of them."""
    home, work = layout
    request = LaunchRequest(argv=("/bin/true",), cwd=str(work), env=(("HOME", str(home)),))
    alias = home / "sub" / "alias"
    before, _ = build_plan(layout_policy(home, work), request)
    mount(work, alias)
    after, _ = build_plan(layout_policy(home, work), request)
    assert str(work / ".envrc") in before.creation_refused
    assert str(alias / ".envrc") not in before.creation_refused
    assert str(alias / ".envrc") in after.creation_refused
    anchored = {op.target for op in after.mounts if op.kind == ANCHOR}
    assert {str(alias), str(alias.parent)} <= anchored
