"""Start-up files the caller's environment moved out of their places in the home.

The sandbox keeps the start-up files of a home read-only in a writable grant
(``_mounts.HOME_RC_FILES``), at the places each program uses when its variable is not set. A
user who set ``BASH_ENV``, ``ZDOTDIR``, ``CARGO_HOME``, ``PYTHONSTARTUP``... has the host's
programs, started with that environment, read them elsewhere: those places are kept too
(``ResolvedPolicy.protected_files``). The caller's environment is how the host's programs are
configured (the daemon never reads its own for this).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Final

# Variable -> the files or directories below its value ("" for the value itself) that the
# program runs or takes a command from at its next start, anywhere.
MOVED: Final = {
    "BASH_ENV": ("",),  # run by every non-interactive bash
    "ENV": ("",),  # run by every interactive POSIX sh
    "ZDOTDIR": (".zshrc", ".zprofile", ".zshenv", ".zlogin", ".zlogout"),
    "INPUTRC": ("",),  # readline's key macros
    "PYTHONSTARTUP": ("",),  # every interactive Python
    "GIT_CONFIG_GLOBAL": ("",),  # core.fsmonitor, core.hooksPath, aliases
    "CARGO_HOME": ("config.toml", "config"),  # build.rustc-wrapper
    "GRADLE_USER_HOME": ("init.gradle", "init.gradle.kts", "init.d", "gradle.properties"),
    "GOENV": ("",),  # GOFLAGS=-toolexec=...
    "DOCKER_CONFIG": ("cli-plugins", "config.json"),
    "IPYTHONDIR": ("",),  # profiles' startup/ scripts
    "JUPYTER_CONFIG_DIR": ("jupyter_config.py", "jupyter_notebook_config.py",
                           "jupyter_server_config.py", "jupyter_lab_config.py"),
    "PIP_CONFIG_FILE": ("",),
    "NPM_CONFIG_USERCONFIG": ("",),  # script-shell, git, node-options
    "npm_config_userconfig": ("",),
    "CONDARC": ("",),
    "UV_CONFIG_FILE": ("",),
    "R_PROFILE_USER": ("",),
    "R_ENVIRON_USER": ("",),
    "TF_CLI_CONFIG_FILE": ("",),  # provider overrides
    "TERRAFORM_CLI_CONFIG_FILE": ("",),
    "STARSHIP_CONFIG": ("",),  # the prompt's commands
    "JULIA_DEPOT_PATH": ("config",),  # the first entry's config/startup.jl
}


def moved_startup_files(env: Mapping[str, str]) -> tuple[str, ...]:
    """The places the variables of :data:`MOVED` in ``env`` name, normalized (absolute values
    only; ``JULIA_DEPOT_PATH``'s first entry)."""
    out: set[str] = set()
    for key, below in MOVED.items():
        value = env.get(key, "")
        if key == "JULIA_DEPOT_PATH":
            value = value.split(":", 1)[0]
        if value.startswith("/"):
            out.update(posixpath.normpath(posixpath.join(value, rel)) for rel in below)
    return tuple(sorted(out))
