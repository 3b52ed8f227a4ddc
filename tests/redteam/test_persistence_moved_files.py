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
