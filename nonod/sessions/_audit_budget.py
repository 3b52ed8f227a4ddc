"""How many bytes each user's sessions keep on the daemon's disk.

``[audit] session_max_bytes`` bounds one session's audit file and ``[sessions]
log_max_bytes`` its output log; ``[audit] user_max_bytes`` bounds what all of one uid's
session directories hold (audit files, output logs, records), live and ended alike, on the
system daemon: one member of the socket group must not fill the disk every user's sessions
write to. A live session is charged its audit file as it grows, an ended one its whole
directory; what stays counts until it is removed (``prune`` removes the output and the
record but keeps the audit files, which only retention removes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import final

from ..audit import AUDIT_FILE


def _on_disk(info: os.stat_result) -> int:
    """What one file or directory takes on the disk: its allocated blocks (a 300-byte file
    takes a whole block), at least its size."""
    return max(info.st_size, info.st_blocks * 512)


def kept_bytes(directory: Path) -> int:
    """What a session directory (itself, and its files and directories below it) takes on
    the disk; 0 if it is gone. Allocated blocks, not sizes: the many small files of short
    sessions take several times their size, and sizes let a user fill that much more."""
    try:
        total = _on_disk(os.lstat(directory))
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += kept_bytes(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += _on_disk(entry.stat(follow_symlinks=False))
        except OSError:
            continue
    return total


def started_uid(directory: Path) -> int | None:
    """The uid in the first record of an audit file whose session record is gone."""
    try:
        with (directory / AUDIT_FILE).open("rb") as file:
            first = file.readline(1 << 20)
        uid = json.loads(first)["event"]["uid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return uid if isinstance(uid, int) and not isinstance(uid, bool) else None


@final
class AuditBudget:
    """Bytes charged per session and per uid (in memory, rebuilt from the disk at start)."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[int, int]] = {}
        self._used: dict[int, int] = {}

    def charge(self, session: str, uid: int, size: int) -> int:
        """``session``'s audit now takes ``size`` bytes; what its uid's take in all."""
        _, before = self._sessions.get(session, (uid, 0))
        self._sessions[session] = (uid, size)
        used = self._used[uid] = self._used.get(uid, 0) + size - before
        return used

    def release(self, session: str) -> None:
        """``session``'s audit files were removed."""
        found = self._sessions.pop(session, None)
        if found is not None:
            uid, size = found
            self._used[uid] = self._used.get(uid, 0) - size

    def used(self, uid: int) -> int:
        return self._used.get(uid, 0)

    def load(self, sessions_dir: Path, owners: dict[str, int]) -> None:
        """Charge every audit file under ``sessions_dir``: to the owner ``owners`` names for
        its session, else (a pruned record) to the uid its first record ran as."""
        try:
            entries = sorted(sessions_dir.iterdir())
        except OSError:
            return
        for entry in entries:
            uid = owners.get(entry.name)
            if uid is None:
                uid = started_uid(entry)
            if uid is not None:
                self.charge(entry.name, uid, kept_bytes(entry))
