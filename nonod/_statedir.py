"""The daemon's state directory, claimed before anything is written there.

What lives there is the record of what sessions did (audit files, the ledger, session
records) and what the daemon trusts (``secret-files.json``, its log with ``--daemonize``). A
directory another user owns, or one below another user's directory, is that user's to
change: they can remove or replace the records, and put links where the daemon writes (its
log is opened by name). So the directory, its links resolved, and every directory above it
must belong to the daemon's user or root; it is made ``0700`` if it does not exist, and set
to ``0700`` if it does. Directories others may write to above it (``/tmp``, a container's
``emptyDir``) are accepted as long as they belong to root: renaming in a sticky ``/tmp`` takes
the owner, and a container's volume has no other users.

A link on the way is followed only if it belongs to the daemon's user or root: another user's
link in ``/tmp``, at the configured path, would otherwise hand the daemon any directory of
root's (made ``0700`` and filled with state). And a name made in such a directory between the
check and the ``mkdir`` (another user's link, raced in) is caught by a second look, without
following it, once the directory is made.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

from .errors import NonoError

#: Links followed while resolving, as the kernel's own bound.
_MAX_LINKS: Final = 40


class StateDirError(NonoError):
    """The state directory is not the daemon's own."""

    code = "daemon.state_dir"


def claim_state_dir(path: Path) -> Path:
    """``path`` made or taken as the daemon's state directory, resolved; StateDirError if it
    (or a directory above it, or a link on the way) belongs to another user, or is not a
    directory. Nothing is made below another user's directory."""
    try:
        real = _resolve(path if path.is_absolute() else Path.cwd() / path, path)
        for directory in real.parents:  # those that exist, before anything is made
            if directory.exists():
                _check_owner(directory, path, last=False)
        real.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Again, now that it exists, following nothing: a link raced in is refused here.
        if _resolve(real, path) != real:
            raise StateDirError(f"the state directory {path} changed while it was claimed")
        # Every directory above again, now that all exist: one missing above was made by
        # another user between the look and the mkdir (in a sticky /tmp), or by us. From the
        # top down, none a link: one checked is root's or ours, so no one else can change
        # it, and the next is looked up through it.
        for directory in reversed(real.parents):
            _check_owner(directory, path, last=False)
        fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise StateDirError(f"the state directory {path} is not a directory") from exc
        raise StateDirError(f"cannot use the state directory {path}: "
                            f"{exc.strerror or exc}") from exc
    try:
        _check_owner(real, path, last=True, owner=os.fstat(fd).st_uid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return real


def _resolve(path: Path, given: Path) -> Path:
    """``path`` (absolute) with its links resolved, following only links of the daemon's
    user or root; what does not exist yet is kept as it is named."""
    me = os.geteuid()
    current = Path("/")
    pending = list(path.parts[1:])
    links = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        candidate = current / name
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return candidate.joinpath(*pending)
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        if st.st_uid not in (0, me):
            raise StateDirError(
                f"{candidate} is a link of uid {st.st_uid}, who could point the state "
                f"directory {given} anywhere; refusing to use it",
                hint=f"remove {candidate} (it is not yours) or set [daemon] state_dir "
                "elsewhere")
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            current = Path("/")
        pending[:0] = [part for part in target.parts if part != "/"]
    return current


def _check_owner(directory: Path, path: Path, *, last: bool, owner: int | None = None) -> None:
    """The state directory ``last`` must be ours; a directory above it ours or root's, and
    a directory, not a link (the path was resolved: a link is one put there since).
    ``owner``: the state directory's, from its open descriptor."""
    if owner is None:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise StateDirError(f"{directory} changed while the daemon made its state "
                                f"directory {path} (it is no longer a directory); refusing "
                                "to use it")
        owner = st.st_uid
    me = os.geteuid()
    if owner == me or (owner == 0 and not last):
        return
    raise StateDirError(
        f"{directory} belongs to uid {owner}, who could remove or replace the daemon's audit "
        f"records in the state directory {path}; refusing to use it",
        hint=f"remove {directory} (it is not yours) or set [daemon] state_dir elsewhere"
        if last else "set [daemon] state_dir to a directory of yours")
