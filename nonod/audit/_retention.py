"""What audit files there are, and pruning old ones by age and count.

:func:`list_sessions` reads only the first and last line of each file: it is a catalogue,
not a verification. :func:`prune_sessions` removes whole session directories, and only of
sessions whose file is sealed and that the caller does not name in ``keep`` (the live ones):
an unsealed file belongs to a live session or awaits ``daemon_lost`` recovery, and is never
pruned. The ledger keeps its line for every pruned session, so the record that a session
existed, and its Merkle root, survive its file.

Both functions block on the filesystem; the daemon calls them through ``trio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Final

import msgspec

from ._chain import WireLine
from ._errors import AuditError
from ._events import Entry, Seal, SessionStarted
from ._verify import AUDIT_FILE, SESSION_ID

_TAIL: Final = 64 * 1024
_LINE: Final = msgspec.json.Decoder(WireLine)
_ENTRY: Final = msgspec.json.Decoder(Entry)


class SessionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One session's audit file at a glance (unverified).

    ``started``/``ended`` are the timestamps of its first line and of its seal; ``count`` is
    the seal's event count, or None while the file is not sealed; ``uid`` is the uid its
    ``session_started`` record says it ran as (None if that line is unreadable).
    """

    session: str
    path: str
    size: int
    sealed: bool
    count: int | None = None
    started: str | None = None
    ended: str | None = None
    uid: int | None = None


def _parse_ts(ts: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(ts)
    except ValueError:
        return None


def _decode(raw: bytes) -> tuple[str, Entry] | None:
    try:
        wire = _LINE.decode(raw)
        return wire.ts, _ENTRY.decode(bytes(wire.event))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def read_summary(session: str, path: Path) -> SessionSummary | None:
    try:
        with open(path, "rb") as f:
            first = f.readline()
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc.strerror}") from exc
    started = _decode(first.rstrip(b"\n")) if first.endswith(b"\n") else None
    sealed, count, ended = False, None, None
    if tail.endswith(b"\n"):
        last = _decode(tail[:-1].rpartition(b"\n")[2])
        if last is not None and isinstance(last[1], Seal):
            sealed, count, ended = True, last[1].count, last[0]
    uid = started[1].uid if started and isinstance(started[1], SessionStarted) else None
    return SessionSummary(session=session, path=str(path), size=size, sealed=sealed,
                          count=count, started=started[0] if started else None, ended=ended,
                          uid=uid)


def list_sessions(state_dir: str | os.PathLike[str]) -> list[SessionSummary]:
    """Every ``<state>/sessions/<id>/audit.ndjson``, oldest first."""
    sessions = Path(state_dir) / "sessions"
    try:
        names = sorted(os.listdir(sessions))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AuditError(f"cannot list {sessions}: {exc.strerror}") from exc
    out = []
    for name in names:
        if not SESSION_ID.fullmatch(name):
            continue
        summary = read_summary(name, sessions / name / AUDIT_FILE)
        if summary is not None:
            out.append(summary)
    out.sort(key=lambda s: (s.started or "", s.session))
    return out


def prune_sessions(
    state_dir: str | os.PathLike[str],
    *,
    max_age: dt.timedelta | None = None,
    max_count: int | None = None,
    keep: Collection[str] = (),
    now: dt.datetime | None = None,
    dry_run: bool = False,
    per_uid: bool = False,
) -> list[SessionSummary]:
    """Remove sealed sessions older than ``max_age`` (by seal time) and all but the
    ``max_count`` most recently sealed (``per_uid``: of each uid, as the system daemon counts,
    so that one user's sessions never push out another's); return what was (or, with
    ``dry_run``, would be) removed. Unsealed sessions and those in ``keep`` are never touched.
    With neither limit, nothing is removed.
    """
    if max_count is not None and max_count < 0:
        raise AuditError(f"max_count must be >= 0, not {max_count}")
    if max_age is not None and max_age < dt.timedelta(0):
        raise AuditError("max_age must not be negative")
    when = now or dt.datetime.now(dt.UTC)
    sealed = [s for s in list_sessions(state_dir)
              if s.sealed and s.ended is not None and s.session not in keep]
    sealed.sort(key=lambda s: (s.ended or "", s.session), reverse=True)  # newest first
    doomed: list[SessionSummary] = []
    ranks: dict[int | None, int] = {}
    for summary in sealed:
        group = summary.uid if per_uid else None
        rank = ranks[group] = ranks.get(group, -1) + 1
        too_many = max_count is not None and rank >= max_count
        ended = _parse_ts(summary.ended) if summary.ended else None
        too_old = max_age is not None and ended is not None and when - ended > max_age
        if too_many or too_old:
            doomed.append(summary)
    if dry_run:
        return doomed
    for summary in doomed:
        directory = Path(summary.path).parent
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            raise AuditError(f"cannot remove {directory}: {exc.strerror}") from exc
    return doomed
