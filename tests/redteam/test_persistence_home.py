"""Red team, persistence in a writable ``$HOME``: files that make the host run code later
without anyone choosing to run it. The shell rc files, ``.config/systemd`` and ``.hg/hgrc``
were guarded, but their siblings in the same class were not: user units under
``.local/share/systemd``, D-Bus activation files, ``~/.hgrc``, direnv's ``direnvrc``, the
editors' and tmux's start-up files, IPython start-up scripts, ``.bashrc.d``."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam._programs import PLANT

PLANTED = (
    ".local/share/systemd/user/evil.service", ".local/share/dbus-1/services/evil.service",
    ".hgrc", ".config/hg/hgrc", ".config/direnv/direnvrc", ".vimrc", ".vim/plugin/evil.vim",
    ".config/nvim/init.lua", ".emacs", ".emacs.d/init.el", ".config/emacs/init.el",
    ".tmux.conf", ".config/tmux/tmux.conf", ".ipython/profile_default/startup/00-evil.py",
    ".bashrc.d/evil.sh", ".zlogout",
)


def _plant_in_home(run: CLI, short_tmp: Path, names: tuple[str, ...]) -> list[str]:
    """Run PLANT in a session with the caller's ``$HOME`` writable; what is in ``$HOME``
    afterwards (none of ``names`` may have been written; an ordinary file was)."""
    home = Path(run.env["HOME"])
    (short_tmp / "plant.py").write_text(PLANT)
    done = run("launch", "--allow-cwd", "-a", str(home), "--block-net", "--",
               "/usr/bin/python3", "-S", "plant.py", str(home), *names, "notes.txt")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.endswith("WRITTEN")] == [
        "notes.txt WRITTEN"], lines  # the rest of $HOME is writable
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*"))


def test_a_session_with_a_writable_home_plants_nothing_that_runs_later(
        run: CLI, short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / ".vim").mkdir()  # an existing directory is bound read-only, a missing one refused
    assert _plant_in_home(run, short_tmp, PLANTED) == [".vim", "notes.txt"]


#: Start-up files of programs the user runs anywhere (not only in a directory the session
#: wrote): each one runs what it holds at the program's next start.
ANYWHERE = (
    ".inputrc", ".xinitrc", ".xsession", ".config/plasma-workspace/env/evil.sh",
    ".config/autostart-scripts/evil.sh", ".gdbinit", ".config/gdb/gdbinit", ".lldbinit",
    ".pdbrc", ".Rprofile", ".irbrc", ".psqlrc", ".sqliterc", ".cargo/config.toml",
    ".config/mise/config.toml", ".yarnrc", ".yarnrc.yml", ".local/share/nvim/site/plugin/e.lua",
    ".config/Code/User/settings.json", ".vscode-server/data/Machine/settings.json",
    ".config/kitty/kitty.conf", ".config/alacritty/alacritty.toml",
    ".config/wezterm/wezterm.lua", ".wezterm.lua", ".config/i3/config", ".config/sway/config",
    ".config/hypr/hyprland.conf",
)


def test_a_writable_home_keeps_the_start_up_files_of_programs_run_anywhere(
        run: CLI, short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    (home / ".cargo").mkdir(parents=True)  # an existing parent: only the file is refused
    (home / ".gdbinit").write_text("# the user's\n")  # an existing file: read-only
    assert _plant_in_home(run, short_tmp, ANYWHERE) == [".cargo", ".gdbinit", "notes.txt"]
    assert (home / ".gdbinit").read_text() == "# the user's\n"


def test_a_writable_directory_inside_home_keeps_the_start_up_files_below_it(
        run: CLI, short_tmp: Path) -> None:
    # The start-up files were kept only in a grant holding all of $HOME: a profile granting
    # ~/.config (or ~/.local/share) writable left user units, autostart entries, session
    # environment and editor start-up files under it writable.
    home = Path(run.env["HOME"])
    for directory in (".config/systemd", ".local/share"):
        (home / directory).mkdir(parents=True)
    (short_tmp / "plant.py").write_text(PLANT)
    names = (".config/systemd/user/evil.service", ".config/autostart/evil.desktop",
             ".config/environment.d/evil.conf", ".config/nvim/init.lua",
             ".local/share/systemd/user/evil.service", ".local/share/applications/e.desktop",
             ".config/ok.txt", ".local/share/ok.txt")
    done = run("launch", "--allow-cwd", "-a", str(home / ".config"), "-a",
               str(home / ".local/share"), "--block-net", "--", "/usr/bin/python3", "-S",
               "plant.py", str(home), *names)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.endswith("WRITTEN")] == [
        ".config/ok.txt WRITTEN", ".local/share/ok.txt WRITTEN"], done.stdout
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()) == [
        ".config/ok.txt", ".local/share/ok.txt"]
