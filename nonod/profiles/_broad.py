"""Working directories too broad to be granted writable without being named.

``--allow-cwd``, a profile's ``workdir.access`` and a profile path through ``$WORKDIR`` grant
a directory found from where the launch runs. Run from
``/``, ``$HOME`` or a system tree, that is the whole host (or every project and dotfile of the
user) read-write, from a flag meant for "this project". Such a grant is refused unless the
directory (or one holding it) is also granted by an absolute path: a profile's filesystem
key (``$HOME``, ``/srv``) or ``--allow``/``--write``. A flag names what it grants even when
written relative (``--allow .``: nonoctl sends it absolute, and it was typed on purpose).
"""

from __future__ import annotations

import posixpath
import re
from typing import Final

_WORKDIR_REF: Final = re.compile(r"\$(\{WORKDIR\}|WORKDIR\b)")

# Host trees no project lives directly in (both platforms' spellings); their subdirectories
# are not broad: `/srv/app`, `/opt/tool` are ordinary working directories.
SYSTEM_TREES: Final = frozenset({
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
    "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/usr", "/var",
    "/nix", "/Applications", "/Library", "/System", "/Users", "/Volumes", "/private",
    "/private/etc", "/private/var", "/cores",
})


def broad_directory(path: str, home: str) -> str | None:
    """Why ``path`` (canonical) is too broad to grant as a working directory, or None."""
    if path == "/":
        return "it is the root of the file system"
    home = posixpath.normpath(home)
    if path == home:
        return "it is your home directory"
    if home.startswith(path.rstrip("/") + "/"):
        return "it holds your home directory"
    if path in SYSTEM_TREES:
        return "it is a system directory"
    return None


def named_by(path: str, granted: list[str]) -> bool:
    """Whether one of the grants the user named (a profile key, a flag) is ``path`` or holds it."""
    for given in granted:
        if given == path or given == "/" or path.startswith(given.rstrip("/") + "/"):
            return True
    return False


def through_workdir(raw: str) -> bool:
    """Whether a profile's path, as written, is found from where the launch runs."""
    return _WORKDIR_REF.search(raw) is not None
