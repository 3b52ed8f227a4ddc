"""Where a user's nono configuration lives: the one lookup the daemon and the CLI share.

``$XDG_CONFIG_HOME/nono`` when ``XDG_CONFIG_HOME`` is an absolute path, else
``$HOME/.config/nono`` (the XDG base directory spec: a relative or empty value is ignored).
Which ``HOME``: the daemon does not take it from a client's environment where that would
let a missing variable hide the caller's files. A system daemon asks the password database
for the caller's uid; a user daemon (which serves only its own user) takes the client's
``HOME`` when it is absolute and the password database otherwise. Standard library only.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path


def passwd_home(uid: int) -> str | None:
    """``uid``'s home directory from the password database, or None (no entry, or relative)."""
    try:
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None
    return home if home.startswith("/") else None


def home_dir(uid: int, env: Mapping[str, str] | None = None) -> str | None:
    """``env``'s ``HOME`` when given and absolute, else ``uid``'s password-database home."""
    home = env.get("HOME", "") if env is not None else ""
    return home if home.startswith("/") else passwd_home(uid)


def config_home(home: str, xdg_config_home: str | None) -> Path:
    """``$XDG_CONFIG_HOME`` if absolute, else ``HOME/.config``."""
    if xdg_config_home and xdg_config_home.startswith("/"):
        return Path(xdg_config_home)
    return Path(home) / ".config"


def nono_config_dir(uid: int, env: Mapping[str, str], *, env_home: bool = True) -> Path | None:
    """The nono config directory for ``uid`` (None if neither variable nor database gives one).

    ``XDG_CONFIG_HOME`` comes from ``env`` when absolute; ``HOME`` too when ``env_home``
    (else, and when it is missing or relative, from the password database).
    """
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and xdg.startswith("/"):
        return Path(xdg) / "nono"
    home = home_dir(uid, env if env_home else None)
    return None if home is None else config_home(home, None) / "nono"


def own_config_dir() -> Path:
    """This process's own nono config directory (the CLI's, a user daemon's defaults)."""
    found = nono_config_dir(os.geteuid(), os.environ)
    return found if found is not None else Path.home() / ".config" / "nono"
