"""Red team, nineteenth pass: start-up files the caller's environment moved by a variable of
their program's own. ``BASH_ENV`` names a file every non-interactive bash runs,
``PYTHONSTARTUP`` one every interactive Python runs, ``ZDOTDIR`` where zsh reads its rc
files, ``GIT_CONFIG_GLOBAL`` git's configuration, ``CARGO_HOME`` and ``GRADLE_USER_HOME``
where cargo's ``config.toml`` (``rustc-wrapper``) and Gradle's init scripts are, ``GOENV``
Go's env file. The persistence list kept their default places only: a session with the home
writable wrote each moved one. They are now kept read-only where the variables put them
(``ResolvedPolicy.protected_files``, ``nonod/profiles/_startup.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam.test_persistence_moved_homes import plant_only_the_ordinary

#: variable -> where it points (below $HOME), and the file the session tries to plant.
MOVED = {
    "BASH_ENV": ("env/bash_env.sh", "env/bash_env.sh"),
    "PYTHONSTARTUP": ("env/startup.py", "env/startup.py"),
    "ZDOTDIR": ("zsh", "zsh/.zshrc"),
    "GIT_CONFIG_GLOBAL": ("env/gitconfig", "env/gitconfig"),
    "CARGO_HOME": ("rust", "rust/config.toml"),
    "GRADLE_USER_HOME": ("gradle", "gradle/init.d/evil.gradle"),
    "GOENV": ("env/go.env", "env/go.env"),
}


def test_start_up_files_moved_by_the_callers_variables_are_kept(run: CLI,
                                                                short_tmp: Path) -> None:
    """Before: all seven written; now none, and the directories holding them stay writable."""
    home = Path(run.env["HOME"])
    for directory in ("env", "zsh", "rust", "gradle"):
        (home / directory).mkdir(parents=True, exist_ok=True)
    run.env.update({key: str(home / place) for key, (place, _) in MOVED.items()})
    plant_only_the_ordinary(run, short_tmp, [name for _, name in MOVED.values()],
                            ("env/ok.txt", "rust/ok.txt"))


def test_hooks_a_moved_global_git_configuration_names_are_kept(run: CLI,
                                                              short_tmp: Path) -> None:
    """``core.hooksPath`` of the user's global git configuration is kept read-only where it
    points into a writable grant; the configuration was looked for at ``~/.gitconfig`` and
    ``~/.config/git/config`` only. With ``GIT_CONFIG_GLOBAL`` or ``XDG_CONFIG_HOME``
    elsewhere (dotfiles: ``hooksPath = ~/dotfiles/githooks``), the session wrote a hook every
    host commit in every repository then ran. Before: both written; now neither."""
    home = Path(run.env["HOME"])
    for hooks in ("githooks", "xdghooks"):
        (home / hooks).mkdir(parents=True, exist_ok=True)
    elsewhere = short_tmp / "dotfiles"
    (elsewhere / "xdg" / "git").mkdir(parents=True)
    (elsewhere / "gitconfig").write_text(f"[core]\n\thooksPath = {home}/githooks\n")
    (elsewhere / "xdg" / "git" / "config").write_text(f"[core]\n\thooksPath = {home}/xdghooks\n")
    run.env.update(GIT_CONFIG_GLOBAL=str(elsewhere / "gitconfig"),
                   XDG_CONFIG_HOME=str(elsewhere / "xdg"))
    plant_only_the_ordinary(run, short_tmp, ("githooks/pre-commit", "xdghooks/pre-commit"),
                            ("notes.txt",))
