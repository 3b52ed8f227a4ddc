"""Where the caller's environment moved the caches host tools run code from.

The sandbox makes writable grants in the user's caches copy-on-write (``_mounts.OVERLAY``):
the cache home, and the places below ``$HOME`` each tool uses by default
(``_mounts.HOME_CACHES``). A user who set ``GOCACHE``, ``GOPATH`` or ``CARGO_HOME`` keeps
them elsewhere, and host tools read them there. The caller's environment is how the host's
tools are configured (the daemon never reads its own for this): its values name cache roots
too (``ResolvedPolicy.cache_dirs``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Final

# Variable -> the cache directories below its value ("" for the value itself) whose
# contents the tool runs later without checking them again.
MOVED: Final = {
    "GOCACHE": ("",),  # Go's build cache: linked after a size check
    "GOMODCACHE": ("",),  # Go's module sources
    "GOPATH": ("pkg/mod",),  # the first entry's (GOMODCACHE's default)
    "CARGO_HOME": ("registry", "git"),  # crate sources: build.rs runs on the host
    "GRADLE_USER_HOME": ("caches", "wrapper"),  # jars, plugins, Gradle distributions
    "npm_config_cache": ("",),  # npx runs what _npx holds
    "NPM_CONFIG_CACHE": ("",),
    "YARN_CACHE_FOLDER": ("",),
    "BUN_INSTALL": ("install/cache",),
    "BUN_INSTALL_CACHE_DIR": ("",),
    "UV_CACHE_DIR": ("",),
    "UV_PYTHON_INSTALL_DIR": ("",),
    "UV_TOOL_DIR": ("",),
    "PIP_CACHE_DIR": ("",),
    "PRE_COMMIT_HOME": ("",),  # hook environments
    "HF_HOME": ("",),  # trust_remote_code modules
    "HF_MODULES_CACHE": ("",),
    "PLAYWRIGHT_BROWSERS_PATH": ("",),  # browser binaries host tests start
    "DENO_DIR": ("",),
    "NUGET_PACKAGES": ("",),
    "PUB_CACHE": ("",),
    "CONDA_PKGS_DIRS": ("",),  # a comma-separated list
    "PIPX_HOME": ("",),  # the tools' virtual environments (what ~/.local/bin links to)
    "XDG_DATA_HOME": ("uv", "pnpm", "pipx"),  # uv's Pythons and tools, pnpm's store, pipx's
}


# The entries of CONDA_PKGS_DIRS looked at: each is a path the plan asks about at every
# launch, and the caller writes the list.
MAX_LISTED: Final = 16


def moved_caches(env: Mapping[str, str]) -> tuple[str, ...]:
    """The cache directories the variables of :data:`MOVED` in ``env`` name, normalized
    (absolute values only; ``GOPATH``'s first entry, the first :data:`MAX_LISTED` of
    ``CONDA_PKGS_DIRS``)."""
    out: set[str] = set()
    for key, below in MOVED.items():
        value = env.get(key, "")
        if key == "GOPATH":
            value = value.split(":", 1)[0]
        listed = value.split(",", MAX_LISTED)[:MAX_LISTED] if key == "CONDA_PKGS_DIRS" else ()
        for entry in listed or (value,):
            if entry.startswith("/"):
                out.update(posixpath.normpath(posixpath.join(entry, rel)) for rel in below)
    return tuple(sorted(out))
