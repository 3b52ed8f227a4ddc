"""A warm launcher's prepared view must not outlive what it was built from: what the host
replaces between preparation and launch is seen afresh, whatever kind of bind showed it
(``_forkserver._bound_sources``). Red-team review of the prepared views."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox import open_launcher
from nonod.sandbox._mounts import idmap_available
from tests.sandbox.test_warm_views import _policy, _read

from ..proctree import children, wait_until

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


@pytest.fixture
def vault(world_tmp: Path) -> Iterator[Path]:
    """``world_tmp/project/vault``, a file system of its own (a volume the user unlocked)
    holding ``secret``; unmounted at the end if the test has not."""
    path = world_tmp / "project" / "vault"
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "vault", str(path)], check=True)
    (path / "secret").write_text("VAULT-SECRET\n")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)


def _launchers_holding(server: int, path: Path) -> set[int]:
    """The fork server's launchers (outer processes and their inits) whose mount namespace
    has a mount at ``path`` (at ``/oldroot`` + ``path`` in a plain one)."""
    found: set[int] = set()
    for outer in children(server):
        for pid in (outer, *children(outer)):
            try:
                table = Path(f"/proc/{pid}/mountinfo").read_text()
            except OSError:
                continue
            if any(line.split()[4].endswith(str(path)) for line in table.splitlines()):
                found.add(pid)
    return found


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a file system")
def test_a_file_system_the_host_unmounts_after_preparation_is_gone(vault: Path) -> None:
    """Every warm launcher's mount namespace is a copy of the host's mount table when it was
    made: a prepared view's binds carry the file systems mounted under them, a plain
    launcher binds from its copy at launch. The host unmounts a volume under a grant (locks
    it) after the launchers were prepared: no session started afterwards reads it, and no
    waiting launcher keeps it (a locked volume must not stay mounted anywhere)."""
    policy = _policy("project", Grant(path=str(vault.parent), access=Access.READ))

    async def main() -> tuple[list[list[str]], list[list[str]]]:
        async with open_launcher("namespaces") as launcher:
            server = launcher._proc.pid
            before = [await _read(launcher, policy, vault / "secret") for _ in range(4)]
            await trio.to_thread.run_sync(
                lambda: wait_until("a launcher holds the vault",
                                   lambda: bool(_launchers_holding(server, vault))))
            subprocess.run(["umount", str(vault)], check=True)
            await trio.to_thread.run_sync(
                lambda: wait_until("no launcher holds the vault",
                                   lambda: not _launchers_holding(server, vault), 10))
            after = [await _read(launcher, policy, vault / "secret") for _ in range(3)]
        return before, after

    before, after = trio.run(main)
    assert before == [["VAULT-SECRET"]] * 4
    assert after == [["ENOENT"]] * 3


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a file system")
def test_launches_right_after_the_host_unmounts_do_not_see_the_old_mount(vault: Path) -> None:
    """The same, launching at once after the ``umount`` (before the idle fork server drops
    the launchers made earlier): the hand-over refuses them."""
    policy = _policy("project", Grant(path=str(vault.parent), access=Access.READ))

    async def main() -> tuple[list[list[str]], list[list[str]]]:
        async with open_launcher("namespaces") as launcher:
            before = [await _read(launcher, policy, vault / "secret") for _ in range(4)]
            subprocess.run(["umount", str(vault)], check=True)
            after = [await _read(launcher, policy, vault / "secret") for _ in range(3)]
        return before, after

    before, after = trio.run(main)
    assert before == [["VAULT-SECRET"]] * 4
    assert after == [["ENOENT"]] * 3
