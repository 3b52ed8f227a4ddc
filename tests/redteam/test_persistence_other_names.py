"""Red team, nineteenth pass: files in a writable ``$HOME`` that make the host run code later,
under names the persistence list did not have. Logins the host lets in (``sshd`` reads
``~/.ssh/authorized_keys2`` by default, ``.k5login``, ``.rhosts``), mail delivery that pipes
each message to a command (``.forward``, ``.procmailrc``), what a shell or the pager runs
unasked (``~/.bash_completion``, sourced by bash-completion at every interactive start;
``~/.lessfilter``, run by Debian's ``lesspipe`` on every file ``less`` opens), other
editors' and REPLs' start-up code, package managers' configuration that names a program
(``~/.npmrc``'s ``script-shell``), Nix overlays, Podman's hooks and quadlets, systemd's user
tmpfiles, the desktop's settings database and extensions, sound servers' ``context.exec``,
window managers' autostarts. A session with ``$HOME`` writable wrote each of them."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam.test_persistence_home import _plant_in_home

#: One file per new name (a file inside it where the name is a directory).
OTHER_NAMES = (
    ".ssh/authorized_keys2", ".ssh/environment", ".k5login", ".k5users", ".rhosts", ".shosts",
    ".forward", ".procmailrc", ".mailfilter", ".qmail", ".muttrc", ".config/mutt/muttrc",
    ".neomuttrc", ".config/neomutt/neomuttrc", ".mailcap",
    ".bash_completion", ".local/share/bash-completion/completions/git", ".lessfilter",
    ".config/lessfilter", ".lesskey", ".config/lesskey", ".less", ".screenrc",
    ".exrc", ".gvimrc", ".config/vim/vimrc", ".spacemacs", ".doom.d/config.el",
    ".config/doom/config.el", ".emacs.el", ".config/helix/languages.toml",
    ".config/zed/settings.json", ".config/micro/init.lua", ".config/kak/kakrc",
    ".config/sublime-text/Packages/User/evil.py", ".config/sublime-text-3/Packages/User/e.py",
    ".config/VSCodium/User/settings.json", ".config/Cursor/User/settings.json",
    ".config/Windsurf/User/settings.json", ".config/Code - OSS/User/settings.json",
    ".ghci", ".ghc/ghci.conf", ".ocamlinit", ".guile", ".sbclrc", ".octaverc", ".pryrc",
    ".config/irb/irbrc", ".perldb", ".rdbgrc",
    ".npmrc", ".config/pnpm/rc", ".gemrc", ".m2/settings.xml", ".nuget/NuGet/NuGet.Config",
    ".config/pypoetry/config.toml", ".sbt/1.0/plugins/evil.sbt", ".lein/profiles.clj",
    ".clojure/deps.edn", ".cabal/config", ".stack/config.yaml", ".R/Makevars",
    ".cpan/CPAN/MyConfig.pm", ".config/composer/config.json", ".composer/config.json",
    ".config/nixpkgs/overlays/evil.nix", ".nixpkgs/config.nix",
    ".config/containers/containers.conf", ".config/containers/systemd/evil.container",
    ".docker/config.json", ".config/user-tmpfiles.d/evil.conf",
    ".local/share/user-tmpfiles.d/evil.conf",
    ".config/dconf/user", ".local/share/gnome-shell/extensions/e@x/extension.js",
    ".local/share/kservices5/ServiceMenus/e.desktop",
    ".local/share/kio/servicemenus/e.desktop", ".local/share/plasma/plasmoids/e/main.qml",
    ".local/share/kwin/scripts/e/main.js", ".local/share/nautilus-python/extensions/e.py",
    ".local/share/konsole/evil.profile", ".config/xfce4/xfconf/e.xml",
    ".config/lxsession/LXDE/autostart",
    ".xinputrc", ".xbindkeysrc", ".Xresources", ".Xdefaults",
    ".config/pipewire/pipewire.conf.d/e.conf", ".config/wireplumber/scripts/e.lua",
    ".config/pulse/default.pa", ".config/mpv/scripts/e.lua", ".config/ranger/commands.py",
    ".config/yazi/init.lua", ".config/lf/lfrc", ".config/zellij/config.kdl",
    ".config/ghostty/config", ".config/foot/foot.ini", ".config/terminator/config",
    ".config/openbox/autostart", ".config/awesome/rc.lua", ".config/bspwm/bspwmrc",
    ".config/sxhkd/sxhkdrc", ".config/qtile/config.py", ".xmonad/xmonad.hs",
    ".config/xmonad/xmonad.hs", ".config/herbstluftwm/autostart", ".config/river/init",
    ".config/niri/config.kdl", ".config/labwc/autostart", ".config/wayfire.ini",
    ".config/waybar/config", ".config/polybar/config.ini", ".config/eww/eww.yuck",
    ".fluxbox/startup", ".icewm/startup",
    ".config/gh/config.yml", ".config/jj/config.toml", ".jjconfig.toml",
    ".config/lazygit/config.yml", ".tigrc", ".config/tig/config",
)


def test_a_writable_home_keeps_the_other_names_that_run_code(run: CLI, short_tmp: Path) -> None:
    """None of ``OTHER_NAMES`` is written (before: every one outside the denied credential
    directories was); ``~/.config``, ``~/.local/share`` and ``~/.m2`` exist, so each refusal
    is the name's own, and ``~/.m2`` stays writable but for its ``settings.xml``."""
    home = Path(run.env["HOME"])
    for directory in (".config", ".local/share", ".m2"):
        (home / directory).mkdir(parents=True, exist_ok=True)
    left = _plant_in_home(run, short_tmp, OTHER_NAMES)
    assert left == [".config", ".local", ".local/share", ".m2", "notes.txt"], left
