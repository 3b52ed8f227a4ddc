"""Whether a file could have been written by another user than the one reading it.

As ssh does for its own files: a file is the reader's when it belongs to the reader or to
root and is writable by no one else, and every directory above it belongs to the reader or
root and is writable by no one else, or is sticky (``/tmp``: others may add names there, not
replace the reader's). A group counts as "no one else" only when it is the owner's private
group (same name, no other members), as user-private-group systems (Debian, Fedora) give
every user. Used for what nonod trusts without a signature: profiles, and the public keys
that become trust anchors. Blocking (``stat`` of each directory above the file).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

_WHAT = "\0"


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _private_group(gid: int, owner: int) -> bool:
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    name = _name(owner)
    return group.gr_name == name and set(group.gr_mem) <= {name}


def _others(uid: int, gid: int, mode: int, reader: int) -> str | None:
    """Who besides the reader and root may write a file or directory of this owner, group
    and mode (a phrase with :data:`_WHAT` for what it is about), or None."""
    if uid not in (reader, 0):
        return f"{_WHAT} belongs to another user ({_name(uid)})"
    if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
        return None  # sticky: others may add their own names, not replace the reader's
    if mode & stat.S_IWOTH:
        return f"every user may write {_WHAT}"
    if mode & stat.S_IWGRP and not _private_group(gid, uid):
        return f"the group {gid} may write {_WHAT}"
    return None


def descriptor_path(fd: int) -> str:
    """The path an open descriptor was opened at, as the kernel names it ("" if it cannot)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def other_writers(real_path: str, uid: int, gid: int, mode: int, *,
                  reader: int) -> tuple[str, bool] | None:
    """Why a user other than ``reader`` (or root) could have written the file at
    ``real_path`` (its real path; ``uid``, ``gid`` and ``mode`` from ``fstat`` of the
    descriptor it was read from), and whether it is the file (False: a directory above it)
    that could be changed; None when no one else could."""
    why = _others(uid, gid, mode, reader)
    if why is not None:
        return why.replace(_WHAT, "it"), True
    directory = os.path.dirname(real_path)
    while True:
        try:
            above = os.stat(directory)
        except OSError as exc:
            return f"{directory} cannot be checked ({exc.strerror})", False
        why = _others(above.st_uid, above.st_gid, above.st_mode, reader)
        if why is not None:
            return why.replace(_WHAT, directory), False
        if directory == "/":
            return None
        directory = os.path.dirname(directory)


__all__ = ["descriptor_path", "other_writers"]
