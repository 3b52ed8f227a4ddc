"""Red team, the user's state directory: the base group ``user_tools`` granted
``~/.local/state`` read-write to every session, whatever its profile (a bare ``--allow-cwd``
included). What lives there is not scratch: shell histories kept the XDG way
(``$XDG_STATE_HOME/bash/history``, ``zsh/history``), Syncthing's keys and configuration (1.27
and later), Nix's per-user profiles (``~/.nix-profile`` points there since Nix 2.14, and its
``bin`` is on ``PATH``), mise's list of trusted configurations. A session read the histories
and keys, and repointed the Nix profile at a directory of its own: the host's next shell ran
its programs. No base group grants it now.

In a ``$HOME`` granted writable, the same decisions are kept as persistence files: Nix's
profile link, profiles and channels, mise's state, direnv's allow list (a nested ``.envrc``
the session writes runs once it is listed there), Neovim's trusted ``exrc`` files, JetBrains
IDEs' trusted paths and plugins."""

from __future__ import annotations

import os
from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam.test_persistence_home import _plant_in_home

#: Reads, lists, writes and repoints what the host keeps in ``~/.local/state``.
PROBE = r'''
import os, sys
state = os.path.join(os.environ["HOME"], ".local/state")
def attempt(name, call):
    try:
        result = call()
        print(name, "ok" if result is None else result)
    except OSError as exc:
        print(name, type(exc).__name__)
attempt("history", lambda: open(os.path.join(state, "bash/history")).read().strip())
attempt("key", lambda: open(os.path.join(state, "syncthing/key.pem")).read().strip())
attempt("list", lambda: ",".join(sorted(os.listdir(state))))
def plant():
    with open(os.path.join(state, "planted"), "w") as f:
        f.write("x")
attempt("write", plant)
def repoint():
    link = os.path.join(state, "nix/profiles/profile")
    os.symlink(sys.argv[1], link + ".new")
    os.rename(link + ".new", link)
attempt("repoint", repoint)
'''


def test_no_session_gets_the_users_state_directory_by_default(run: CLI,
                                                              short_tmp: Path) -> None:
    state = Path(run.env["HOME"]) / ".local/state"
    (state / "bash").mkdir(parents=True)
    (state / "bash/history").write_text("export TOKEN=secret-history\n")
    (state / "syncthing").mkdir()
    (state / "syncthing/key.pem").write_text("secret-key\n")
    (state / "nix/profiles").mkdir(parents=True)
    profile = state / "nix/profiles/profile"
    profile.symlink_to("/nix/store/user-profile")
    (short_tmp / "probe.py").write_text(PROBE)
    evil = short_tmp / "evil-profile"
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "probe.py", str(evil))
    assert done.returncode == 0, done.stderr
    answers = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert answers == dict.fromkeys(("history", "key", "list", "write", "repoint"),
                                    "FileNotFoundError"), done.stdout
    assert sorted(p.name for p in state.iterdir()) == ["bash", "nix", "syncthing"]
    assert os.readlink(profile) == "/nix/store/user-profile"


PLANTED = (
    ".nix-profile/bin/git", ".nix-channels", ".nix-defexpr/channels/evil.nix",
    ".local/state/nix/profiles/evil", ".local/state/mise/trusted-configs/evil",
    ".local/share/direnv/allow/evil", ".local/state/nvim/trust",
    ".config/JetBrains/IntelliJIdea2025.3/options/trusted-paths.xml",
    ".local/share/JetBrains/IntelliJIdea2025.3/evil/lib/evil.jar",
)


def test_a_writable_home_keeps_the_users_path_and_trust_decisions(run: CLI,
                                                                  short_tmp: Path) -> None:
    home = Path(run.env["HOME"])
    (home / ".local/state/nix/profiles").mkdir(parents=True)  # existing: bound read-only
    (home / ".local/state/nvim").mkdir()  # an existing parent: only the file is refused
    (home / ".local/share").mkdir(parents=True)  # direnv's directory missing: not creatable
    (home / ".config").mkdir()
    assert _plant_in_home(run, short_tmp, PLANTED) == [
        ".config", ".local", ".local/share", ".local/state", ".local/state/nix",
        ".local/state/nix/profiles", ".local/state/nvim", "notes.txt"]
