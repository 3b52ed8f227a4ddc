"""Red team, nineteenth pass: start-up files under an XDG base directory the caller's
environment moved. The persistence list names ``.config/git``, ``.config/nvim``,
``.config/fish``, ``.local/share/applications``... under the home; a caller with
``XDG_CONFIG_HOME=~/dotconfig`` (or ``XDG_DATA_HOME``, ``XDG_STATE_HOME``) has its shells,
git and editors read them there instead, and a session with the home writable wrote them
(git's ``core.fsmonitor`` runs for every git command, ``init.lua`` at every start). They are
now kept at the moved place too (``ResolvedPolicy.xdg_homes``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT

MOVED = (
    "dotconfig/git/config", "dotconfig/nvim/init.lua", "dotconfig/fish/config.fish",
    "dotconfig/systemd/user/evil.service", "dotconfig/autostart/evil.desktop",
    "dotdata/applications/evil.desktop", "dotdata/nvim/site/plugin/evil.lua",
    "dotdata/bash-completion/completions/git", "dotstate/nvim/trust",
)


def test_start_up_files_under_moved_base_directories_are_kept(run: CLI, short_tmp: Path) -> None:
    """Before: all nine written; now none, and the rest of the moved directories (and of
    ``$HOME``) stays writable."""
    home = Path(run.env["HOME"])
    for directory in ("dotconfig", "dotdata", "dotstate"):
        (home / directory).mkdir(parents=True, exist_ok=True)
    run.env.update(XDG_CONFIG_HOME=str(home / "dotconfig"), XDG_DATA_HOME=str(home / "dotdata"),
                   XDG_STATE_HOME=str(home / "dotstate"))
    plant_only_the_ordinary(run, short_tmp, MOVED, ("dotconfig/ok.txt", "dotdata/ok.txt"))


def plant_only_the_ordinary(run: CLI, short_tmp: Path, names: Sequence[str],
                            ordinary: tuple[str, ...]) -> None:
    """A session with ``$HOME`` writable plants ``names`` and ``ordinary`` there: only the
    ordinary files may be written, and the host's home holds no other file afterwards."""
    home = Path(run.env["HOME"])
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "-a", str(home), "--block-net", "--", "/usr/bin/python3",
               "-S", "plant.py", str(home), *names, *ordinary)
    assert done.returncode == 0, done.stderr
    written = [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")]
    assert written == [f"{name} WRITTEN" for name in ordinary], done.stdout
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()) == [
        *ordinary]


def test_pipx_environments_moved_by_the_caller_are_copy_on_write(run: CLI,
                                                                 short_tmp: Path) -> None:
    """pipx keeps its tools' virtual environments in ``$XDG_DATA_HOME/pipx`` (or
    ``$PIPX_HOME``), and ``~/.local/bin`` links to them: the list of moved caches had uv's and
    pnpm's places under a moved ``XDG_DATA_HOME``, not pipx's. Before: the host's tool read
    ``SESSION``; now the session's write stays in its own upper layer."""
    home = Path(run.env["HOME"])
    tools = [home / "dotdata/pipx/venvs/black/bin/black", home / "px/venvs/ruff/bin/ruff"]
    for tool in tools:
        tool.parent.mkdir(parents=True)
        tool.write_text("HOST\n")
    run.env.update(XDG_DATA_HOME=str(home / "dotdata"), PIPX_HOME=str(home / "px"))
    code = ("import sys\nfor p in sys.argv[1:]:\n"
            "    open(p, 'w').write('SESSION')\n    print(open(p).read())\n")
    done = run("launch", "--allow-cwd", "-a", str(home), "--block-net", "--", "/usr/bin/python3",
               "-S", "-c", code, *map(str, tools))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["SESSION", "SESSION"]  # the session's own copy
    assert [tool.read_text() for tool in tools] == ["HOST\n", "HOST\n"]
