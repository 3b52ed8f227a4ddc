"""Whose policy is a profile file: one that another user could write is not the caller's.

A profile is a session's whole policy and is not signed, so whoever may change the file, or
replace it in its directory, chooses what the session may do. As ssh does for its own files,
a profile is accepted only when it belongs to the reader or to root and is writable by no one
else, and every directory above it belongs to the reader or root and is writable by no one
else, or is sticky (``/tmp``: others may add names there, not replace the reader's). A group
counts as "no one else" only when it is the owner's private group (same name, no other
members), as the user-private-group systems (Debian, Fedora) give every user.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

from .._callerfs import Opened
from ..errors import ProfileError

_WHAT = "\0"


class ProfileWritable(ProfileError):
    """A profile file, or a directory above it, that another user could write."""

    code = "profile.writable_by_others"


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


def check_writers(path: str, opened: Opened, *, reader: int) -> None:
    """Raise :class:`ProfileWritable` if another user than ``reader`` (or root) could have
    written the profile read from ``path`` (``opened``: its descriptor's owner, group, mode
    and real path). Blocking: looks at each directory above the file it read."""
    uid, gid, mode = opened.uid, opened.gid, opened.mode
    why = _others(uid, gid, mode, reader)
    if why is not None:
        raise ProfileWritable(
            f"not loaded: {why.replace(_WHAT, 'it')}, so another user could have written this "
            "policy", source=path,
            hint="keep profiles in files and directories only you (or root) may write")
    directory = os.path.dirname(opened.real or os.path.realpath(path))
    while True:
        try:
            above = os.stat(directory)
        except OSError as exc:
            raise ProfileWritable(f"cannot check {directory}: {exc.strerror}",
                                  source=path) from None
        why = _others(above.st_uid, above.st_gid, above.st_mode, reader)
        if why is not None:
            raise ProfileWritable(
                f"not loaded: {why.replace(_WHAT, directory)}, so another user could have "
                "replaced this policy",
                source=path,
                hint="keep profiles in files and directories only you (or root) may write")
        if directory == "/":
            return
        directory = os.path.dirname(directory)
