"""Red team, history files in a readable ``$HOME``: ``deny_shell_history`` hid bash's, zsh's
and Python's history, but not the others that hold what people type, passwords and tokens
included: fish's, Node's and the database shells' (``psql``, ``mysql``, ``sqlite3``,
``redis-cli``), Ruby's, R's, Julia's and IPython's, ksh's, vim's ``viminfo`` and Neovim's
ShaDa (command lines, registers), ``less``'s. A session granted ``$HOME`` read-only read each
of them; now each is masked as the first four were."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam._programs import READ

HISTORIES = (
    ".sh_history", ".local/share/fish/fish_history", ".node_repl_history", ".psql_history",
    ".mysql_history", ".sqlite_history", ".rediscli_history", ".irb_history", ".Rhistory",
    ".viminfo", ".local/state/nvim/shada/main.shada",
    ".ipython/profile_default/history.sqlite", ".julia/logs/repl_history.jl", ".lesshst",
    ".local/state/lesshst",
)


def test_a_readable_home_shows_no_history_file(run: CLI, short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    for name in (*HISTORIES, "notes.txt"):
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"export API_TOKEN=secret-{len(name)}\n")
    (short_tmp / "read.py").write_text(READ)
    done = run("launch", "--allow-cwd", "--read", str(home), "--block-net", "--",
               "/usr/bin/python3", "-S", "read.py",
               *(str(home / name) for name in (*HISTORIES, "notes.txt")))
    assert done.returncode == 0, done.stderr
    answers = dict(line.rsplit(" ", 1) if "secret" not in line else (line.split(" ")[0], "READ")
                   for line in done.stdout.splitlines())
    assert {Path(p).relative_to(home).as_posix(): a for p, a in answers.items()} == {
        **dict.fromkeys(HISTORIES, "PermissionError"), "notes.txt": "READ"}
