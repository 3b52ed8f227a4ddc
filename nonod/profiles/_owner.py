"""Whose policy is a profile file: one that another user could write is not the caller's.

A profile is a session's whole policy and is not signed, so whoever may change the file, or
replace it in its directory, chooses what the session may do: a profile is loaded only when
no user but the reader and root could have written it or its directories
(:func:`nonod._writers.other_writers`).
"""

from __future__ import annotations

import os

from .._callerfs import Opened
from .._writers import other_writers
from ..errors import ProfileError

_HINT = "keep profiles in files and directories only you (or root) may write"


class ProfileWritable(ProfileError):
    """A profile file, or a directory above it, that another user could write."""

    code = "profile.writable_by_others"


def check_writers(path: str, opened: Opened, *, reader: int) -> None:
    """Raise :class:`ProfileWritable` if another user than ``reader`` (or root) could have
    written the profile read from ``path`` (``opened``: its descriptor's owner, group, mode
    and real path). Blocking: looks at each directory above the file it read."""
    found = other_writers(opened.real or os.path.realpath(path), opened.uid, opened.gid,
                          opened.mode, reader=reader)
    if found is None:
        return
    why, itself = found
    done = "written" if itself else "replaced"
    raise ProfileWritable(f"not loaded: {why}, so another user could have {done} this policy",
                          source=path, hint=_HINT)
