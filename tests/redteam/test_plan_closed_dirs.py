"""A session hides what the next launch must protect by closing its own directories.

The plan looks at the project as the session's uid (``Identity.session``): what it cannot
look at it took for absent. A session that owns a directory may take its own permissions
away (``chmod 000``, or ``0600``: listed but not searched); the next launch then found no
submodule git directory under ``.git/modules`` and no ``core.hooksPath`` in ``.git/config``,
so none of them was made read-only, and that session gave the directory its permissions back
and wrote the hooks git runs on the host. The walk for linked files refused such a launch,
but only as its own layer, which a profile may accept degraded (and which a walk past its
budget never reaches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonod.policy import Access

from ..conftest import SandboxUser
from ..sandbox.test_sandbox import policy, probe

# root's looks pass every mode: only a session of another uid can close a directory to them
pytestmark = [pytest.mark.userns,
              pytest.mark.parametrize("sandbox_user", ["unprivileged"], indirect=True)]

HOOKS = (".git/modules/sub/hooks/post-checkout", ".githooks/pre-commit")


@pytest.fixture
def repo(world_tmp: Path, sandbox_user: SandboxUser) -> Path:
    """A repository with a submodule's git directory and a ``core.hooksPath`` in the
    workdir, all the session's own."""
    return _owned(world_tmp / "work", sandbox_user, (".git/modules/sub/hooks", ".githooks"), {
        ".git/config": "[core]\n\thooksPath = .githooks\n",
        ".git/modules/sub/HEAD": "ref: refs/heads/main\n",
        ".git/modules/sub/config": "[core]\n"})


def _owned(work: Path, user: SandboxUser, dirs: tuple[str, ...],
           files: dict[str, str]) -> Path:
    """``work``, a repository with ``dirs`` and ``files`` besides its ``.git/hooks`` and
    ``HEAD``, all of them ``user``'s."""
    for d in (".git/hooks", *dirs):
        (work / d).mkdir(parents=True, exist_ok=True)
    for name, text in {".git/HEAD": "ref: refs/heads/main\n", **files}.items():
        (work / name).write_text(text)
    for path in (work, *work.rglob("*")):
        user.chown(path)
    return work


@pytest.mark.parametrize("mode", [0o000, 0o600])
def test_a_directory_the_session_closed_refuses_the_next_launch(
        repo: Path, sandbox_user: SandboxUser, mode: int) -> None:
    pol = policy((repo, Access.READWRITE), allow_degraded=("linked_files",))
    write = "".join(f"t(lambda: open('{hook}', 'w').write('evil'))\n" for hook in HOOKS)
    r = sandbox_user.run(pol, probe(write), cwd=str(repo))
    assert r.stdout.splitlines() == ["EROFS", "EROFS"], r.stderr  # protected while visible
    r = sandbox_user.run(pol, probe(
        f"t(lambda: os.chmod('.git/modules/sub', {mode}))\n"
        f"t(lambda: os.chmod('.git', {mode}))\n"), cwd=str(repo))
    assert r.stdout.splitlines() == ["OK ", "OK "], r.stderr
    r = sandbox_user.run(pol, probe(
        "t(lambda: os.chmod('.git', 0o755))\n"
        "t(lambda: os.chmod('.git/modules/sub', 0o755))\n" + write), cwd=str(repo))
    assert r.code != 0 and "launch.failed" in r.stderr, (r.stdout, r.stderr)
    assert f"{repo}/.git is closed to the session's own uid" in r.stderr
    for hook in HOOKS:
        assert not (repo / hook).exists()


def test_a_directory_the_session_made_unwritable_still_has_its_names_refused(
        world_tmp: Path, sandbox_user: SandboxUser) -> None:
    """The plan refused a missing persistence name only where the session could create it,
    and judged that by the directory's mode, which the session may change: with its own
    write bit taken off the workdir and ``.git``, the next launch refused neither ``.envrc``
    nor ``.git/worktrees`` (nothing at all: no creation guard), and that session put the
    bit back and wrote both on the host."""
    repo = world_tmp / "work"
    (repo / ".git/hooks").mkdir(parents=True)
    (repo / ".git/HEAD").write_text("ref: refs/heads/main\n")
    for path in (repo, *repo.rglob("*")):
        sandbox_user.chown(path)
    pol = policy((repo, Access.READWRITE))
    write = ("t(lambda: open('.envrc', 'w').write('evil'))\n"
             "t(lambda: os.makedirs('.git/worktrees/w'))\n"
             "t(lambda: open('.git/worktrees/w/commondir', 'w').write('evil'))\n")
    refused = ["EACCES", "EACCES", "ENOENT"]
    r = sandbox_user.run(pol, probe(write), cwd=str(repo))
    assert r.stdout.splitlines() == refused, r.stderr
    r = sandbox_user.run(pol, probe("t(lambda: os.chmod('.', 0o555))\n"
                                    "t(lambda: os.chmod('.git', 0o555))\n"), cwd=str(repo))
    assert r.stdout.splitlines() == ["OK ", "OK "], r.stderr
    r = sandbox_user.run(pol, probe("t(lambda: os.chmod('.', 0o755))\n"
                                    "t(lambda: os.chmod('.git', 0o755))\n" + write),
                         cwd=str(repo))
    assert r.stdout.splitlines() == ["OK ", "OK ", *refused], r.stderr
    assert not (repo / ".envrc").exists() and not (repo / ".git/worktrees").exists()


def test_a_link_into_another_users_closed_directory_is_no_refusal(
        world_tmp: Path, sandbox_user: SandboxUser) -> None:
    """What a link leads to, closed by its own owner (not the session's uid), stays what it
    was to the plan: the launch goes on (the link's name is kept as before)."""
    closed = world_tmp / "roots"
    (closed / "vscode").mkdir(parents=True)
    closed.chmod(0o700)  # root's
    work = world_tmp / "work"
    work.mkdir()
    (work / ".vscode").symlink_to(closed / "vscode")
    (work / ".git").symlink_to(closed / "git")
    sandbox_user.chown(work)
    r = sandbox_user.run(policy((work, Access.READWRITE)), probe("t(lambda: 1)\n"),
                         cwd=str(work))
    assert r.stdout.splitlines() == ["OK 1"], r.stderr


def test_a_link_into_a_directory_the_session_owns_is_followed_to_it(
        world_tmp: Path, sandbox_user: SandboxUser) -> None:
    """A persistence name reached through a link (``.vscode`` -> ``hidden``) into a directory
    the session owns (review20). The look at ``.vscode/...`` would stop at the link, which
    is not a directory, and take what lies below for absent; but the plan follows the link
    and keeps what it leads to read-only as a whole, nothing below looked at: the session
    can neither close it nor, closed already, open it again and write there."""
    work = world_tmp / "work"
    (work / "hidden").mkdir(parents=True)
    (work / ".vscode").symlink_to("hidden")
    for path in (work, work / "hidden"):
        sandbox_user.chown(path)
    pol = policy((work, Access.READWRITE))
    r = sandbox_user.run(pol, probe("t(lambda: open('.vscode/tasks.json', 'w').write('x'))\n"
                                    "t(lambda: os.chmod('hidden', 0))\n"), cwd=str(work))
    assert r.stdout.splitlines() == ["EROFS", "EROFS"], (r.stdout, r.stderr)
    (work / "hidden").chmod(0)  # as a session of an earlier release could have left it
    r = sandbox_user.run(pol, probe("t(lambda: os.chmod('hidden', 0o755))\n"), cwd=str(work))
    assert r.stdout.splitlines() == ["EROFS"], (r.stdout, r.stderr)
    assert not (work / "hidden" / "tasks.json").exists()


def test_a_directory_the_session_closed_behind_a_link_refuses_the_next_launch(
        world_tmp: Path, sandbox_user: SandboxUser) -> None:
    """A submodule's git directory reached through a link (``.git/modules/lib`` ->
    ``mods``), closed by the session (an anchor, not read-only: ``chmod`` works there). The
    look below stopped at the link, which is not a directory, so the directory that stopped
    it was not judged and the submodule was taken for absent (review20)."""
    work = _owned(world_tmp / "work", sandbox_user, (".git/modules", "mods/hooks"),
                  {"mods/HEAD": "ref: refs/heads/main\n", "mods/config": "[core]\n"})
    (work / ".git/modules/lib").symlink_to("../../mods")
    pol = policy((work, Access.READWRITE), allow_degraded=("linked_files",))
    hook = "t(lambda: open('.git/modules/lib/hooks/post-checkout', 'w').write('evil'))\n"
    r = sandbox_user.run(pol, probe(hook + "t(lambda: os.chmod('mods', 0))\n"), cwd=str(work))
    assert r.stdout.splitlines() == ["EROFS", "OK "], (r.stdout, r.stderr)
    r = sandbox_user.run(pol, probe("t(lambda: os.chmod('mods', 0o755))\n" + hook),
                         cwd=str(work))
    assert r.code != 0 and "launch.failed" in r.stderr, (r.stdout, r.stderr)
    assert f"{work}/mods is closed to the session's own uid" in r.stderr
    assert not (work / "mods/hooks/post-checkout").exists()
