"""Reading what a sink has not acknowledged yet, from the session files themselves.

Every line is checked as ``audit verify`` checks it (canonical form, sequence, chain, hash)
before it is shipped: a file edited on the host is not passed on as if it were the record.
The file is fsynced before its lines are returned, so a record leaves the host only once it
is durable on it (the writer syncs on an interval; a power cut could otherwise lose a line a
receiver already has, and the next line would reuse its id with another hash).

Blocking: the exporter calls :meth:`SessionReader.read` through ``trio.to_thread``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import msgspec

from ..audit._chain import ENTRY_TAG, session_genesis
from ..audit._errors import AuditVerifyError
from ..audit._retention import read_summary
from ..audit._verify import AUDIT_FILE, SESSION_ID, check_line
from ._errors import ExportError

#: Bytes read from a file per call (a batch is cut there; the next call goes on).
READ_CHUNK: Final = 4 * 1024 * 1024
SEAL_KIND: Final = "seal"
_NOTABLE_KINDS: Final = frozenset({"fs_denied", "trust_failed"})


class _Peek(msgspec.Struct, frozen=True):
    """Just enough of an event to classify it."""

    type: str
    decision: str | None = None
    action: str | None = None


_PEEK: Final = msgspec.json.Decoder(_Peek)


@final
@dataclass(frozen=True)
class ShipRecord:
    """One stored line on its way out. ``id`` (``<session>:<seq>``) is the same every time
    the record is sent; with ``hash`` a receiver drops copies it already has."""

    session: str
    seq: int
    ts: str
    hash: str
    kind: str
    #: A refusal or failure (a denied connection or file, a failed trust check, a lost view).
    notable: bool
    line: bytes
    #: Offset in the file just after this line.
    end: int

    @property
    def id(self) -> str:
        return f"{self.session}:{self.seq}"


@final
@dataclass(frozen=True)
class _Mark:
    seq: int
    offset: int
    head: bytes


@final
class SessionReader:
    """Reads a state directory's session files after a sink's position.

    It remembers, per session, where the last acknowledged record ended (:meth:`acknowledge`),
    so that a growing file is not read again from its start; after a restart it walks the
    file once from line 1 to find its place (and to check the chain up to it).
    """

    def __init__(self, state_dir: Path) -> None:
        self.sessions_dir = state_dir / "sessions"
        self._marks: dict[str, _Mark] = {}

    def sessions(self) -> list[str]:
        try:
            names = os.listdir(self.sessions_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ExportError(f"cannot list {self.sessions_dir}: {exc.strerror}") from exc
        return sorted(n for n in names if SESSION_ID.fullmatch(n)
                      and os.path.exists(self.sessions_dir / n / AUDIT_FILE))

    def path(self, session: str) -> Path:
        return self.sessions_dir / session / AUDIT_FILE

    def sealed(self, session: str) -> bool:
        summary = read_summary(session, self.path(session))
        return summary is not None and summary.sealed

    def pending_bytes(self, session: str) -> int:
        """Bytes of the file after the last acknowledged record (all of it if unknown)."""
        try:
            size = os.stat(self.path(session)).st_size
        except FileNotFoundError:
            return 0
        mark = self._marks.get(session)
        return max(0, size - (mark.offset if mark is not None else 0))

    def acknowledge(self, record: ShipRecord) -> None:
        self._marks[record.session] = _Mark(record.seq, record.end, bytes.fromhex(record.hash))

    def forget(self, session: str) -> None:
        self._marks.pop(session, None)

    def read(self, session: str, after: int, limit: int | None) -> list[ShipRecord]:
        """Up to ``limit`` complete, verified records with ``seq > after`` (all with None)."""
        path = self.path(session)
        mark = self._marks.get(session)
        if mark is None or mark.seq != after:
            mark = _Mark(0, 0, session_genesis(session))
        out: list[ShipRecord] = []
        try:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
                f.seek(mark.offset)
                offset, head, seq = mark.offset, mark.head, mark.seq
                while limit is None or len(out) < limit:
                    chunk = f.read(READ_CHUNK)
                    lines = chunk.split(b"\n")[:-1]
                    if not lines:
                        break
                    for raw in lines:
                        seq += 1
                        wire = check_line(str(path), seq, raw, ENTRY_TAG, head)
                        offset += len(raw) + 1
                        head = bytes.fromhex(wire.hash)
                        if seq <= after:
                            continue
                        peek = _PEEK.decode(bytes(wire.event))
                        notable = (peek.type in _NOTABLE_KINDS or peek.decision == "deny"
                                   or peek.action == "lost")
                        out.append(ShipRecord(session=session, seq=seq, ts=wire.ts,
                                              hash=wire.hash, kind=peek.type, notable=notable,
                                              line=raw, end=offset))
                        if limit is not None and len(out) >= limit:
                            break
                    f.seek(offset)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc.strerror}") from exc
        except (AuditVerifyError, msgspec.DecodeError) as exc:
            raise ExportError(f"{path} does not verify; not shipping it further: {exc}",
                              hint="check it with `nonoctl audit verify`") from exc
        return out
