"""Red team, persistence through a submodule's git directory: ``.git/hooks`` and
``.git/config`` of the working directory's repository were read-only in a session, but each
submodule has a git directory of its own under ``.git/modules/<name>`` with its own hooks and
config, which git runs and reads whenever someone uses git inside that submodule (a
``post-checkout`` hook, ``core.fsmonitor``). A session wrote both; now they are kept like the
top repository's, nested submodules and names with slashes included."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonod.sandbox._mounts import MAX_LISTED, MAX_SUBMODULES, _Look, _submodule_names
from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT

GITDIRS = (".git/modules/lib", ".git/modules/vendor/tool", ".git/modules/lib/modules/inner")
TARGETS = [f"{g}/{leaf}" for g in GITDIRS for leaf in ("config", "hooks/post-checkout",
                                                        "info/attributes")]


def test_a_session_cannot_plant_in_a_submodules_git_directory(run: CLI,
                                                               short_tmp: Path) -> None:
    for gitdir in (".git", *GITDIRS):
        (short_tmp / gitdir / "hooks").mkdir(parents=True)
        (short_tmp / gitdir / "HEAD").write_text("ref: refs/heads/main\n")
        (short_tmp / gitdir / "config").write_text("[core]\n")
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", *TARGETS, ".git/modules/lib/objects/ok")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.endswith("WRITTEN")] == [
        ".git/modules/lib/objects/ok WRITTEN"], lines  # the rest of the git dir is writable
    for gitdir in GITDIRS:
        assert (short_tmp / gitdir / "config").read_text() == "[core]\n"  # as it was
        assert not (short_tmp / gitdir / "hooks" / "post-checkout").exists()
        assert not (short_tmp / gitdir / "info").exists()


def _gitdir(path: Path) -> None:
    (path / "hooks").mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "config").write_text("[core]\n")


@pytest.mark.parametrize("decoys", ["gitdirs", "names"])
def test_a_real_submodule_cannot_be_hidden_behind_planted_entries(
        run: CLI, short_tmp: Path, decoys: str) -> None:
    # What an earlier session of the same repository could leave under .git/modules, ahead
    # of the real submodule in the walk: 64 fake git directories (only 64 were kept), or
    # more names than the plan looks through (a tree of a million stalled the daemon).
    _gitdir(short_tmp / ".git")
    modules = short_tmp / ".git" / "modules"
    if decoys == "gitdirs":
        for i in range(MAX_SUBMODULES):
            _gitdir(modules / f"a{i:02}")
    else:
        for i in range(MAX_LISTED + 1):
            (modules / "a" / f"d{i}").mkdir(parents=True)
    _gitdir(modules / "zz")
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", ".git/modules/zz/hooks/post-checkout",
               ".git/modules/zz/config", ".git/modules/new/config")
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")]
    assert not (modules / "zz" / "hooks" / "post-checkout").exists()
    assert (modules / "zz" / "config").read_text() == "[core]\n"


#: What a session leaves under ``.git/modules`` for the next launch, the submodules' own
#: ``hooks`` and ``config`` being read-only: a ``HEAD`` planted at the top (``.git/modules``
#: taken for a git directory, its submodules never looked for) or in the directory on the
#: way to ``vendor/tool`` (the same for ``vendor``), or a submodule's ``HEAD`` renamed away
#: (``zz`` taken for a directory of submodules).
HIDE = {
    "planted-head": "open('.git/modules/HEAD', 'w').write('ref: refs/heads/main\\n')",
    "planted-on-the-way": "open('.git/modules/vendor/HEAD', 'w').write('x')",
    "renamed-head": "os.rename('.git/modules/zz/HEAD', '.git/modules/zz/HEAD.away'); "
                    "os.rename('.git/modules/vendor/tool/HEAD', "
                    "'.git/modules/vendor/tool/HEAD.away')",
}


@pytest.mark.parametrize("how", sorted(HIDE))
def test_a_submodule_stays_kept_when_a_session_moves_its_head(
        run: CLI, short_tmp: Path, how: str) -> None:
    _gitdir(short_tmp / ".git")
    modules = short_tmp / ".git" / "modules"
    for gitdir in ("zz", "vendor/tool"):
        _gitdir(modules / gitdir)
    (short_tmp / "plant.py").write_text(PLANT)
    # (Now refused where it plants a name on the way; the next launch is what must hold.)
    first = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S", "-c",
                f"import os\ntry:\n    {HIDE[how]}; print('HIDDEN')\n"
                "except OSError as exc:\n    print(exc.strerror)")
    assert first.returncode == 0 and first.stdout.strip(), first.stderr
    targets = [f".git/modules/{gitdir}/{leaf}" for gitdir in ("zz", "vendor/tool")
               for leaf in ("hooks/post-checkout", "config")]
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", *targets)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")], \
        done.stdout
    for gitdir in ("zz", "vendor/tool"):
        assert not (modules / gitdir / "hooks" / "post-checkout").exists()
        assert (modules / gitdir / "config").read_text() == "[core]\n"


@pytest.mark.parametrize("link", [".git/modules", ".git/modules/lib"])
def test_a_submodule_behind_a_link_the_session_made_is_kept(
        run: CLI, short_tmp: Path, link: str) -> None:
    # A session of a repository without submodules makes .git/modules (or a submodule's
    # place in it) a link into its workdir; the user then adds a submodule on the host, and
    # git puts its git directory where the link leads. The plan did not follow links there.
    _gitdir(short_tmp / ".git")
    if link != ".git/modules":
        (short_tmp / ".git" / "modules").mkdir()
    first = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S", "-c",
                f"import os; os.mkdir('mods'); os.symlink(os.path.relpath('mods', "
                f"os.path.dirname('{link}')), '{link}')")
    assert first.returncode == 0, first.stderr
    _gitdir(short_tmp / ".git" / "modules" / "lib")  # `git submodule add ... lib`, on the host
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", ".git/modules/lib/hooks/post-checkout",
               ".git/modules/lib/config")
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")], \
        done.stdout
    assert not (short_tmp / ".git/modules/lib/hooks/post-checkout").exists()
    assert (short_tmp / ".git/modules/lib/config").read_text() == "[core]\n"


def test_a_link_loop_under_git_modules_is_walked_once(tmp_path: Path) -> None:
    # Links are followed now: a loop (``a -> .``, ``x -> ..``) must not have the walk come
    # round until the kernel's ELOOP, finding the same git directory forty times over.
    modules = tmp_path / ".git" / "modules"
    _gitdir(modules / "lib")
    (modules / "a").symlink_to(".")
    (modules / "x").symlink_to("..")
    names = _submodule_names(str(tmp_path), _Look())
    assert names is not None and len(names) == len(set(names)) < 20, names
    assert ".git/modules/lib/hooks" in names
