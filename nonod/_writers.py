"""Whether a file could have been written by another user than the one reading it.

As ssh does for its own files: a file is the reader's when it belongs to the reader or to
root and is writable by no one else, and every directory above it belongs to the reader or
root and is writable by no one else, or is sticky (``/tmp``: others may add names there, not
replace the reader's). A group counts as "no one else" only when it is the owner's private
group (same name, no other members, no other user's primary group), as user-private-group
systems (Debian, Fedora) give every user; such group bits are then also checked against a
POSIX ACL's named users and groups (with an ACL, they are only its mask). Used for what
nonod trusts without a signature: profiles, and the public keys that become trust anchors.
Blocking (``stat`` of each directory above the file).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import struct

_WHAT = "\0"


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _private_group(gid: int, owner: int) -> bool:
    """Whether ``gid`` is ``owner``'s private group: named like the owner, no other member
    listed, and no other user's primary group (``useradd -g``, which lists no member)."""
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    name = _name(owner)
    if group.gr_name != name or not set(group.gr_mem) <= {name}:
        return False
    return all(user.pw_uid == owner for user in pwd.getpwall() if user.pw_gid == gid)


# A POSIX access ACL as the kernel stores it (``system.posix_acl_access``): a version, then
# (tag, permissions, id) entries; the tags of named users and named groups, and write.
_ACL_HEADER = 4
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_USER = 0x02
_ACL_GROUP = 0x08
_ACL_WRITE = 0x02


def _acl_writer(path: str, owner: int, reader: int) -> str | None:
    """A named user (not the reader or root) or a named group (not the owner's private
    one) that ``path``'s ACL lets write, as a phrase, or None. Only asked when the group
    bits allow writing: with an ACL they are its mask, which bounds the named entries."""
    try:
        raw = os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except OSError:
        return None  # no ACL (ENODATA), or none on this file system
    for offset in range(_ACL_HEADER, len(raw) - _ACL_ENTRY.size + 1, _ACL_ENTRY.size):
        tag, perm, ident = _ACL_ENTRY.unpack_from(raw, offset)
        if not perm & _ACL_WRITE:
            continue
        if tag == _ACL_USER and ident not in (reader, 0):
            return f"{_name(ident)} may write {_WHAT} (an ACL)"
        if tag == _ACL_GROUP and not _private_group(ident, owner):
            return f"the group {ident} may write {_WHAT} (an ACL)"
    return None


def _others(uid: int, gid: int, mode: int, reader: int, path: str) -> str | None:
    """Who besides the reader and root may write the file or directory ``path`` of this
    owner, group and mode (a phrase with :data:`_WHAT` for what it is about), or None."""
    if uid not in (reader, 0):
        return f"{_WHAT} belongs to another user ({_name(uid)})"
    if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
        return None  # sticky: others may add their own names, not replace the reader's
    if mode & stat.S_IWOTH:
        return f"every user may write {_WHAT}"
    if mode & stat.S_IWGRP:
        if not _private_group(gid, uid):
            return f"the group {gid} may write {_WHAT}"
        return _acl_writer(path, uid, reader)
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
    why = _others(uid, gid, mode, reader, real_path)
    if why is not None:
        return why.replace(_WHAT, "it"), True
    directory = os.path.dirname(real_path)
    while True:
        try:
            above = os.stat(directory)
        except OSError as exc:
            return f"{directory} cannot be checked ({exc.strerror})", False
        why = _others(above.st_uid, above.st_gid, above.st_mode, reader, directory)
        if why is not None:
            return why.replace(_WHAT, directory), False
        if directory == "/":
            return None
        directory = os.path.dirname(directory)


__all__ = ["descriptor_path", "other_writers"]
