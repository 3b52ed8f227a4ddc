"""Red team, secrets in a readable ``$HOME`` that the required deny groups missed.

``deny_shell_history`` hid bash's, zsh's and Python's history, but not the other files that
keep what people type, passwords and tokens included: fish's, Node's and the database shells'
(``psql``, ``mysql``, ``sqlite3``, ``redis-cli``), Ruby's, R's, Julia's and IPython's, ksh's,
vim's ``viminfo`` and Neovim's ShaDa (command lines, registers), ``less``'s.
``deny_credentials`` missed the GitHub and GitLab CLIs' tokens, package registries' upload
tokens (PyPI, crates.io, RubyGems), database passwords (``~/.pgpass``, ``~/.my.cnf``), git's
XDG credential store and several clouds' and storage tools' keys. A session granted ``$HOME``
read-only read each of them; now each is masked as the groups' other entries are."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon.test_cli import CLI
from tests.redteam._programs import READ

HISTORIES = (
    ".sh_history", ".local/share/fish/fish_history", ".node_repl_history", ".psql_history",
    ".mysql_history", ".sqlite_history", ".rediscli_history", ".irb_history", ".Rhistory",
    ".viminfo", ".local/state/nvim/shada/main.shada",
    ".ipython/profile_default/history.sqlite", ".julia/logs/repl_history.jl", ".lesshst",
    ".local/state/lesshst",
)
CREDENTIALS = (
    ".config/gh/hosts.yml", ".config/hub", ".config/glab-cli/config.yml",
    ".config/git/credentials", ".pypirc", ".cargo/credentials.toml", ".cargo/credentials",
    ".gem/credentials", ".m2/settings-security.xml", ".pgpass", ".my.cnf", ".s3cfg", ".boto",
    ".databrickscfg", ".config/rclone/rclone.conf", ".config/doctl/config.yaml",
    ".config/hcloud/cli.toml", ".oci/config", ".fly/config.yml",
)


@pytest.mark.parametrize("names", [HISTORIES, CREDENTIALS], ids=["histories", "credentials"])
def test_a_readable_home_shows_none_of_them(run: CLI, short_tmp: Path,
                                            names: tuple[str, ...]) -> None:
    home = Path(run.env["HOME"])
    for name in (*names, "notes.txt"):
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"token = secret-{len(name)}\n")
    (short_tmp / "read.py").write_text(READ)
    done = run("launch", "--allow-cwd", "--read", str(home), "--block-net", "--",
               "/usr/bin/python3", "-S", "read.py",
               *(str(home / name) for name in (*names, "notes.txt")))
    assert done.returncode == 0, done.stderr
    answers = {Path(line.split(" ")[0]).relative_to(home).as_posix():
               "READ" if "secret" in line else line.rsplit(" ", 1)[1]
               for line in done.stdout.splitlines()}
    assert answers == {**dict.fromkeys(names, "PermissionError"), "notes.txt": "READ"}
