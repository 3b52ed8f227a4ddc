"""How many bytes of audit each user's sessions keep on the daemon's disk.

``[audit] session_max_bytes`` bounds one session's file; ``[audit] user_max_bytes`` bounds
all of one uid's, live and sealed alike, on the system daemon: one member of the socket group
must not fill the disk every user's sessions write their audit to. Sealed files count until
retention removes them (``prune`` forgets a session's record, not its audit file, so it does
not give bytes back either).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import final

from ..audit import AUDIT_FILE


def audit_bytes(directory: Path) -> int:
    """What a session directory's audit files take (0 if there are none)."""
    total = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(AUDIT_FILE):
            try:
                total += entry.stat().st_size
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
                self.charge(entry.name, uid, audit_bytes(entry))
