"""A sink's cursor: per session, the last record it acknowledged. The durable outbox.

The audit files are the outbox's contents; the cursor only says how far each sink got. It is
``<state>/export/<sink>.json`` (0600), replaced atomically (a temporary file, fsync, rename,
fsync of the directory) after every acknowledged batch, so a crash at any point leaves either
the old or the new cursor: records are then sent again (at least once), never skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final, final

import msgspec

from ._errors import CursorError

EXPORT_DIR: Final = "export"
SINK_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Position(msgspec.Struct, frozen=True, array_like=True):
    """``seq``: the last acknowledged record; ``done``: that record was the seal."""

    seq: int
    done: bool = False


class _File(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = 1
    sink: str
    sessions: dict[str, Position]


@final
class Cursor:
    """Load with :meth:`load`; :meth:`advance` writes through to disk (blocking)."""

    def __init__(self, path: Path, sink: str, sessions: dict[str, Position]) -> None:
        self.path = path
        self.sink = sink
        self._sessions = sessions

    @classmethod
    def load(cls, state_dir: Path, sink: str) -> Cursor:
        if not SINK_NAME.fullmatch(sink):
            raise CursorError(f"{sink!r} is not a sink name (a-z, 0-9, '_', '-')")
        path = state_dir / EXPORT_DIR / f"{sink}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path, sink, {})
        except OSError as exc:
            raise CursorError(f"cannot read the export cursor {path}: {exc.strerror}") from exc
        try:
            decoded = msgspec.json.decode(data, type=_File)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise CursorError(f"the export cursor {path} is damaged: {str(exc)[:200]}",
                              hint="remove it to send every session to this sink again"
                              ) from exc
        if decoded.sink != sink:
            raise CursorError(f"{path} is the cursor of sink {decoded.sink!r}, not {sink!r}")
        return cls(path, sink, dict(decoded.sessions))

    def position(self, session: str) -> Position:
        return self._sessions.get(session, Position(0))

    def done(self, session: str) -> bool:
        return self.position(session).done

    def sessions(self) -> dict[str, Position]:
        return dict(self._sessions)

    def advance(self, session: str, seq: int, *, done: bool) -> None:
        self._sessions[session] = Position(seq, done)
        self._write()

    def forget(self, gone: set[str]) -> None:
        """Drop sessions whose files no longer exist (retention removed them)."""
        if gone & self._sessions.keys():
            for session in gone:
                self._sessions.pop(session, None)
            self._write()

    def _write(self) -> None:
        directory = self.path.parent
        data = msgspec.json.encode(_File(sink=self.sink, sessions=self._sessions),
                                   order="sorted")
        tmp = directory / f".{self.path.name}.tmp"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise CursorError(f"cannot write the export cursor {self.path}: "
                              f"{exc.strerror}") from exc
