"""A warm launcher's prepared view must not outlive what it was built from: what the host
replaces between preparation and launch is seen afresh, whatever kind of bind showed it
(``_forkserver._bound_sources``). Red-team review of the prepared views."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox import open_launcher
from nonod.sandbox._mounts import idmap_available
from tests.sandbox.test_warm_views import _policy, _read

#: Every test here launches sessions in new namespaces, several through one fork server.
pytestmark = pytest.mark.userns


def _project(root: Path) -> tuple[Path, ResolvedPolicy]:
    """``root/project`` (a marker, no ``.env``) granted read-only, its ``.env`` denied."""
    project = root / "project"
    project.mkdir()
    (project / "marker").write_text("project\n")
    return project, _policy("project", Grant(path=str(project), access=Access.READ),
                            denials=(Denial(path=str(project / ".env"), is_file=True),))


def test_a_denied_file_the_host_makes_after_preparation_is_masked(world_tmp: Path) -> None:
    """The denied ``.env`` does not exist while a policy's launchers are prepared (their view
    has no mask for it); the host then writes one with a secret: the next session reads
    nothing of it (the plan now masks it, which no prepared view does)."""
    project, policy = _project(world_tmp)

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:
            before = [await _read(launcher, policy, project / "marker") for _ in range(4)]
            (project / ".env").write_text("SECRET\n")
            after = await _read(launcher, policy, project / "marker", project / ".env")
        return before, after

    before, after = trio.run(main)
    assert before == [["project"]] * 4
    assert after[0] == "project" and "SECRET" not in after[1], after


def test_a_masked_file_moved_aside_and_written_again_stays_masked(world_tmp: Path) -> None:
    """``mv .env .env.old`` (the prepared launchers' mask goes along with the old file) and a
    new ``.env`` with a secret, after the launchers were prepared: the next session cannot
    read the new secret (the view guard covers the path again when the session starts)."""
    project, policy = _project(world_tmp)
    (project / ".env").write_text("OLD-SECRET\n")

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:
            paths = (project / "marker", project / ".env")
            before = [await _read(launcher, policy, *paths) for _ in range(4)]
            (project / ".env").rename(project / ".env.old")
            (project / ".env").write_text("NEW-SECRET\n")
            after = await _read(launcher, policy, *paths)
        return before, after

    before, after = trio.run(main)
    assert all(lines[0] == "project" and "SECRET" not in lines[1] for lines in before), before
    assert after[0] == "project" and "SECRET" not in after[1], after


def test_a_bound_directory_swapped_for_a_symlink_elsewhere_is_bound_afresh(
        world_tmp: Path) -> None:
    """After a policy's launchers were prepared, the host moves the granted directory aside
    and puts a symbolic link to another directory in its place (holding a ``.env``): the next
    session sees what a cold launch would, the link's target with its ``.env`` masked, and
    nothing of the prepared bind."""
    project, policy = _project(world_tmp)
    other = world_tmp / "other"
    other.mkdir()
    (other / "marker").write_text("other\n")
    (other / ".env").write_text("OTHER-SECRET\n")

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:
            paths = (project / "marker", project / ".env")
            before = [await _read(launcher, policy, *paths) for _ in range(4)]
            project.rename(world_tmp / "project.old")
            project.symlink_to(other.name)  # relative: it resolves on the host as bound
            after = await _read(launcher, policy, *paths)
        return before, after

    before, after = trio.run(main)
    assert all(lines[0] == "project" for lines in before), before
    assert after[0] == "other" and "SECRET" not in after[1], after


@pytest.fixture
def etc_dir() -> Iterator[Path]:
    """A directory in /etc (a uid-0 session's read-only grants there are idmapped)."""
    path = Path("/etc") / f"nono-aged-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(f"{path}.old", ignore_errors=True)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="makes a directory in /etc")
@pytest.mark.skipif(not idmap_available(), reason="the kernel cannot idmap /etc here")
def test_an_idmapped_directory_replaced_after_preparation_is_seen_afresh(etc_dir: Path
                                                                         ) -> None:
    """A uid-0 session's read-only grant in /etc is an idmapped tree the fork server clones
    when it makes the warm launcher. The host replaces that directory (``mv``, ``mkdir``:
    how a package or config tool rotates one) after the policy's launchers were prepared:
    the next session reads the new directory, not the clone of the old one."""
    (etc_dir / "conf").write_text("old\n")
    policy = ResolvedPolicy(name="aged", grants=(Grant(path="/usr", access=Access.READ),
                                                 Grant(path=str(etc_dir), access=Access.READ)),
                            denials=())

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:  # as root: uid-0 sessions
            before = [await _read(launcher, policy, etc_dir / "conf") for _ in range(4)]
            etc_dir.rename(f"{etc_dir}.old")
            etc_dir.mkdir(mode=0o755)
            (etc_dir / "conf").write_text("new\n")
            after = await _read(launcher, policy, etc_dir / "conf")
        return before, after

    before, after = trio.run(main)
    assert before == [["old"]] * 4
    assert after == ["new"]


def test_a_guarded_directory_the_host_replaces_after_preparation_stays_guarded(
        world_tmp: Path) -> None:
    """A writable project with a ``.git`` and no ``.git/hooks``: the prepared view pins
    ``.git`` (a mount point cannot be moved) so that the creation guard's directory stays
    the one it knows. The host replaces ``.git`` after the launchers were prepared (the pin
    goes along with the old one): in the next session ``.git`` still cannot be moved aside
    and ``.git/hooks`` still cannot be made."""
    project = world_tmp / "project"
    (project / ".git").mkdir(parents=True)
    policy = _policy("repo", Grant(path=str(project), access=Access.READWRITE))
    attempt = (
        "import errno, os, sys\n"
        "os.chdir(sys.argv[1])\n"
        "for step in (lambda: os.mkdir('.git/hooks'), lambda: os.rename('.git', 'moved')):\n"
        "    try:\n"
        "        step()\n"
        "        print('OK')\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode.get(e.errno, e.errno))\n"
    )

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:
            before = [await _read(launcher, policy, project, code=attempt) for _ in range(4)]
            (project / ".git").rename(world_tmp / "git.old")
            (project / ".git").mkdir()
            after = await _read(launcher, policy, project, code=attempt)
        return before, after

    before, after = trio.run(main)
    for lines in [*before, after]:
        assert "OK" not in lines, (before, after)
    assert not (project / ".git" / "hooks").exists()
    assert not (project / "moved").exists()
