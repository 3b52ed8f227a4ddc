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
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import NonoError


class StateDirError(NonoError):
    """The state directory is not the daemon's own."""

    code = "daemon.state_dir"


def claim_state_dir(path: Path) -> Path:
    """``path`` made or taken as the daemon's state directory, resolved; StateDirError if it
    (or a directory above it) belongs to another user, or is not a directory. Nothing is
    made below another user's directory."""
    real = Path(os.path.realpath(path))
    try:
        for directory in real.parents:  # those that exist, before anything is made
            if directory.exists():
                _check_owner(directory, path, last=False)
        real.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Every one of them again, now that all exist: a directory missing above was made
        # by another user between the look and the mkdir (in a sticky /tmp), or by us.
        for directory in real.parents:
            _check_owner(directory, path, last=False)
        st = os.stat(real)
    except OSError as exc:
        raise StateDirError(f"cannot use the state directory {path}: "
                            f"{exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"the state directory {path} is not a directory")
    _check_owner(real, path, last=True)
    os.chmod(real, 0o700)
    return real


def _check_owner(directory: Path, path: Path, *, last: bool) -> None:
    """The state directory ``last`` must be ours; a directory above it ours or root's."""
    owner = os.stat(directory).st_uid
    me = os.geteuid()
    if owner == me or (owner == 0 and not last):
        return
    raise StateDirError(
        f"{directory} belongs to uid {owner}, who could remove or replace the daemon's audit "
        f"records in the state directory {path}; refusing to use it",
        hint=f"remove {directory} (it is not yours) or set [daemon] state_dir elsewhere"
        if last else "set [daemon] state_dir to a directory of yours")
