"""Red team, persistence files that are symbolic links: GNU Stow and most dotfile managers make
``~/.bashrc`` a link into a dotfiles repository, and ``~/.config`` a link to a directory. A
mount cannot be placed on a link, so the file the link names was kept read-only but the link
itself was not: in a writable ``$HOME`` a session renamed a file of its own over ``.bashrc``
(or removed the link and wrote a new file, or a new ``.config`` directory), and the user's
next shell ran it. The name of such a link is refused to the creation guard now: it can be
removed, never replaced. And what a linked persistence name leads to was not kept at all:
``.git/hooks -> ../githooks`` (a repository sharing its hooks) left ``githooks`` writable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT

REPLACE = r'''
import os, sys
home = sys.argv[1]
def attempt(name, fn):
    try:
        fn()
        print(name, "ok")
    except OSError as exc:
        print(name, type(exc).__name__)
def write(path, text):
    with open(path, "w") as f:
        f.write(text)
def rename_over():
    write(os.path.join(home, "new.tmp"), "echo planted\n")
    os.rename(os.path.join(home, "new.tmp"), os.path.join(home, ".bashrc"))
def remove_and_write():
    os.unlink(os.path.join(home, ".profile"))
    write(os.path.join(home, ".profile"), "echo planted\n")
def new_config():
    os.unlink(os.path.join(home, ".config"))
    os.makedirs(os.path.join(home, ".config", "nvim"))
    write(os.path.join(home, ".config", "nvim", "init.lua"), "planted")
attempt("rename", rename_over)
attempt("remove", remove_and_write)
attempt("config", new_config)
attempt("notes", lambda: write(os.path.join(home, "notes.txt"), "fine"))
'''


def test_a_linked_start_up_file_cannot_be_replaced(run: CLI, short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    dotfiles = home / "dotfiles"
    (dotfiles / "config" / "nvim").mkdir(parents=True)
    for name in ("bashrc", "profile", "config/nvim/init.lua"):
        (dotfiles / name).write_text("the user's\n")
    (home / ".bashrc").symlink_to("dotfiles/bashrc")
    (home / ".profile").symlink_to("dotfiles/profile")
    (home / ".config").symlink_to("dotfiles/config")
    (short_tmp / "replace.py").write_text(REPLACE)
    done = run("launch", "--allow-cwd", "-a", str(home), "--block-net", "--",
               "/usr/bin/python3", "-S", "replace.py", str(home))
    # Since the tenth pass such a launch does not run at all: the denials of `~/.bashrc`
    # and `~/.config/...` go through links the session could remove, after which the next
    # launch would mask nothing (tests/redteam/test_grant_links.py). When it ran, the guard
    # refused replacing each link (PermissionError) and let it be removed.
    assert done.returncode != 0 and "symbolic link" in done.stderr, done.stderr
    assert not done.stdout, done.stdout
    for name in (".bashrc", ".profile", ".config"):  # the link, or nothing (removed)
        assert not (home / name).exists() or (home / name).is_symlink(), name
    assert not (home / ".config").exists() or (home / ".config/nvim/init.lua").read_text() == (
        "the user's\n")
    for name in ("bashrc", "profile", "config/nvim/init.lua"):
        assert (dotfiles / name).read_text() == "the user's\n", name


def test_what_a_linked_persistence_name_leads_to_is_kept(run: CLI, short_tmp: Path) -> None:
    subprocess.run(["git", "init", "-q", str(short_tmp)], check=True)
    shutil.rmtree(short_tmp / ".git/hooks")
    (short_tmp / "githooks").mkdir()
    (short_tmp / "githooks/pre-commit").write_text("the user's\n")
    (short_tmp / ".git/hooks").symlink_to("../githooks")
    (short_tmp / "envrc").write_text("the user's\n")
    (short_tmp / ".envrc").symlink_to("envrc")
    (short_tmp / ".vscode").symlink_to("editor")  # dangling: its target cannot be made
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", ".", "githooks/pre-commit", ".git/hooks/post-checkout", "envrc",
               "editor/tasks.json", "ok.txt")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")] == [
        "ok.txt WRITTEN"], done.stdout
    assert sorted(p.name for p in (short_tmp / "githooks").iterdir()) == ["pre-commit"]
    assert (short_tmp / "githooks/pre-commit").read_text() == "the user's\n"
    assert (short_tmp / "envrc").read_text() == "the user's\n"
    assert not (short_tmp / "editor").exists()
