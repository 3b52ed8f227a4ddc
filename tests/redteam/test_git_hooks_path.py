"""Red team, git hooks outside ``.git/hooks``: ``.git/hooks`` and ``.git/config`` were
read-only in a session, but a repository whose ``core.hooksPath`` names a directory of its
working tree (``.githooks``, ``scripts/hooks``: a common way to share hooks) runs its hooks
from there, and that directory was as writable as the rest. A session rewrote
``.githooks/pre-commit``; the user's next commit on the host ran it. The directory the
(read-only) configuration names is kept like ``.git/hooks`` now: read-only if it exists,
not creatable if it does not."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import _libc
from nonod.sandbox._mounts import compile_mounts, git_config_paths, git_hooks_path
from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT

HOOK = "#!/bin/sh\necho the user's hook\n"


@pytest.mark.parametrize("hooks", [".githooks", "scripts/hooks"])
def test_a_session_cannot_rewrite_hooks_kept_where_core_hookspath_points(
        run: CLI, short_tmp: Path, hooks: str) -> None:
    subprocess.run(["git", "init", "-q", str(short_tmp)], check=True)
    subprocess.run(["git", "-C", str(short_tmp), "config", "core.hooksPath", hooks], check=True)
    if hooks == ".githooks":  # an existing directory: read-only; a missing one: not creatable
        (short_tmp / hooks).mkdir(parents=True)
        (short_tmp / hooks / "pre-commit").write_text(HOOK)
    else:
        (short_tmp / "scripts").mkdir()
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", f"{hooks}/pre-commit", f"{hooks}/post-checkout", "ok.txt")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")] == [
        "ok.txt WRITTEN"], done.stdout
    if hooks == ".githooks":
        assert (short_tmp / hooks / "pre-commit").read_text() == HOOK
        assert sorted(p.name for p in (short_tmp / hooks).iterdir()) == ["pre-commit"]
    else:
        assert not (short_tmp / hooks).exists()

IN_OPEN = 0x20


def test_core_hookspath_is_read_as_git_reads_it() -> None:
    assert git_hooks_path("[core]\n\thooksPath = .githooks\n") == ".githooks"
    assert git_hooks_path('[Core]\nHOOKSPATH="a b" # note\n') == "a b"
    assert git_hooks_path("[core]\nhookspath = x ; comment\n[core]\nhooksPath = y\n") == "y"
    assert git_hooks_path("[alias]\nhooksPath = no\n[core]\nbare = false\n") is None
    assert git_hooks_path('[remote "origin"]\nhooksPath = no\n') is None


def test_a_session_cannot_rewrite_configuration_the_repository_includes(
        run: CLI, short_tmp: Path) -> None:
    # A project shares settings with `git config include.path ../.gitconfig`: git reads that
    # file of the working tree as the repository's own configuration (core.fsmonitor,
    # core.hooksPath, aliases run at the user's next git command). It is kept like
    # .git/config now, and a file an includeIf names is not creatable.
    subprocess.run(["git", "init", "-q", str(short_tmp)], check=True)
    git = ["git", "-C", str(short_tmp), "config"]
    subprocess.run([*git, "include.path", "../.gitconfig"], check=True)
    subprocess.run([*git, "includeIf.onbranch:main.path", "../shared/git.inc"], check=True)
    (short_tmp / ".gitconfig").write_text("[alias]\n\tst = status\n")
    (short_tmp / "shared").mkdir()
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", ".gitconfig", "shared/git.inc", "ok.txt")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")] == [
        "ok.txt WRITTEN"], done.stdout
    assert (short_tmp / ".gitconfig").read_text() == "[alias]\n\tst = status\n"
    assert list((short_tmp / "shared").iterdir()) == []


def test_a_linked_worktree_keeps_the_hooks_its_repository_names(
        run: CLI, short_tmp: Path) -> None:
    # An agent given a linked worktree (git worktree add): its .git is a file, the
    # configuration git uses there is the main repository's, and a relative core.hooksPath
    # names a directory of the worktree.
    main, tree = short_tmp / "main", short_tmp / "tree"
    subprocess.run(["git", "init", "-q", str(main)], check=True)
    git = ["git", "-C", str(main), "-c", "user.name=u", "-c", "user.email=u@e"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "first"], check=True)
    subprocess.run([*git, "config", "core.hooksPath", ".githooks"], check=True)
    subprocess.run([*git, "worktree", "add", "-q", str(tree)], check=True)
    (tree / ".githooks").mkdir()
    (tree / ".githooks" / "pre-commit").write_text(HOOK)
    _hooks_stay(run, tree)


def _hooks_stay(run: CLI, work: Path) -> None:
    """A session in ``work`` writes ``.githooks/pre-commit`` and ``post-checkout`` in vain
    (and ``ok.txt``, which it may)."""
    (work / "plant.py").write_text(PLANT)
    run.cwd = work
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", ".githooks/pre-commit", ".githooks/post-checkout", "ok.txt")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")] == [
        "ok.txt WRITTEN"], done.stdout
    assert (work / ".githooks" / "pre-commit").read_text() == HOOK


def test_a_repository_whose_git_directory_is_a_link_keeps_its_hooks_path(
        run: CLI, short_tmp: Path) -> None:
    # ``.git`` a symbolic link to the repository kept elsewhere (as Android's repo tool
    # lays out its checkouts): git reads the configuration it leads to, and runs the hooks
    # its relative core.hooksPath names in the working tree. The plan read no configuration
    # through a link (review20): .githooks was writable, and a session rewrote pre-commit.
    store, work = short_tmp / "store" / "proj.git", short_tmp / "work"
    subprocess.run(["git", "init", "-q", "--bare", str(store)], check=True)
    subprocess.run(["git", "-C", str(store), "config", "core.bare", "false"], check=True)
    subprocess.run(["git", "-C", str(store), "config", "core.hooksPath", ".githooks"],
                   check=True)
    (work / ".githooks").mkdir(parents=True)
    (work / ".githooks" / "pre-commit").write_text(HOOK)
    (work / ".git").symlink_to(store)
    assert subprocess.run(["git", "-C", str(work), "config", "core.hooksPath"], check=True,
                          capture_output=True, text=True).stdout == ".githooks\n"
    _hooks_stay(run, work)


def test_included_configuration_is_named_as_git_reads_it() -> None:
    text = ('[include]\n\tpath = ../.gitconfig\n[includeIf "gitdir:~/w/"]\n'
            '\tpath = "~/w.inc" # note\n[core]\n\thooksPath = h\n[alias]\n\tpath = no\n')
    assert git_config_paths(text) == ("h", ("../.gitconfig", "~/w.inc"))
    assert git_config_paths("[core]\nbare = false\n") == (None, ())


def test_a_planted_git_config_never_blocks_or_redirects_the_daemon(
        run: CLI, short_tmp: Path) -> None:
    # A repository a session created is its own: .git/config may be a FIFO or a link when
    # the next launch reads it for core.hooksPath, in the daemon. Neither is read: the
    # launch ends at once (a FIFO cannot be kept read-only, so that one is refused, as
    # before) and the daemon still answers.
    (short_tmp / ".git").mkdir()
    os.mkfifo(short_tmp / ".git" / "config")
    other = short_tmp / "other"
    other.mkdir()
    (other / ".git").mkdir()
    (other / ".git" / "config").symlink_to("/dev/zero")
    outcomes = []
    for where in (short_tmp, other):
        run.cwd = where
        outcomes.append(run("launch", "--allow-cwd", "--block-net", "--", "true").returncode)
    assert outcomes == [125, 0]  # refused at step mounts; run
    assert run("ps").returncode == 0


def test_a_session_cannot_redirect_a_linked_worktree_or_add_worktree_config(
        run: CLI, short_tmp: Path) -> None:
    # A linked worktree's administrative directory lives in the main repository's .git:
    # its commondir names the repository git uses there (configuration and hooks with it),
    # and .git/config.worktree is configuration once extensions.worktreeConfig is on.
    repo = short_tmp / "repo"
    git = ["git", "-c", "user.name=u", "-c", "user.email=u@x", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run([*git, "worktree", "add", "-q", str(short_tmp / "linked")], check=True)
    commondir = repo / ".git" / "worktrees" / "linked" / "commondir"
    before = commondir.read_text()
    (repo / "plant.py").write_text(PLANT)
    run.cwd = repo
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", ".git/worktrees/linked/commondir", ".git/config.worktree",
               ".git/objects/ok")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")] == [
        ".git/objects/ok WRITTEN"], done.stdout
    assert commondir.read_text() == before
    assert not (repo / ".git" / "config.worktree").exists()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="makes a device node")
def test_a_device_a_git_configuration_names_is_never_opened(tmp_path: Path) -> None:
    # A session writes its project's .git/config: an include of a device (or a client's
    # GIT_CONFIG_GLOBAL naming one) had the daemon, as root, run the driver's open at the
    # next launch (/dev/watchdog arms the host's reboot timer). It learns the kind first.
    device = tmp_path / "null-copy"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "config").write_text(f"[include]\n\tpath = {device}\n")
    home = tmp_path / "home"
    home.mkdir()
    policy = ResolvedPolicy(name="git", grants=(
        Grant(path="/usr", access=Access.READ),
        Grant(path=str(project), access=Access.READWRITE)), denials=(),
        git_configs=(str(device),))
    watch = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _libc.inotify_add_watch(watch, str(device), IN_OPEN)
        compile_mounts(policy, home=str(home))
        with pytest.raises(BlockingIOError):
            os.read(watch, 4096)  # no event: never opened
    finally:
        os.close(watch)
