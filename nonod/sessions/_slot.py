"""The next session's directory and audit file, made before the launch that takes them.

Every audited session has a directory of its own under ``<state>/sessions/`` and an audit
file in it. Making them is two inode allocations, and on ext4 without a journal (this
project's hosts) each allocation walks the inodes freed in the last seconds; with the chmod
and the worker thread that does it, about a millisecond of a launch's path. :class:`NextSlot`
makes them ahead, in a worker thread, as ``sessions/.next/audit.next`` (a name that is no
session id and no audit file: every reader of ``sessions/`` passes over it), and a launch
*claims* them: two renames on the event loop (``audit.next`` to ``audit.ndjson`` inside the
slot, then ``.next`` to the session's id), no allocation, no thread. The next slot is made
once the launch's reply went out (``Registry``).

What the audit contract needs stays where it was: the slot's file is empty until the
session's first records; the directory fsyncs (the session's directory, then
``sessions/``) begin once the renames are done (``AuditWriter.create(made=...)``) and the
launch's gate waits for them, so the file's entry and the directory's are durable before
the program exists, as for a file made at the launch. A slot left by a daemon that
died is removed at the next start, one that died in a claim's renames too (its file only
while empty: :func:`clear_slot`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final, final

import outcome
import structlog

from .._soon import Started

log = structlog.get_logger()

#: The slot's directory in ``sessions/``, and its file: neither is a session id
#: (``[0-9a-f]{8}``) nor an audit file's name.
SLOT_DIR: Final = ".next"
SLOT_FILE: Final = "audit.next"
_FLAGS: Final = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
                 | os.O_NOFOLLOW)


def clear_slot(sessions_dir: Path) -> None:
    """Blocking: remove the slot in ``sessions_dir`` if there is one; its file (``audit.next``,
    or ``audit.ndjson`` once a claim renamed it and the daemon died before the directory's
    rename) only while it is empty (nothing but a slot's empty file is ever removed here)."""
    from ..audit import AUDIT_FILE

    directory = sessions_dir / SLOT_DIR
    for file in (directory / SLOT_FILE, directory / AUDIT_FILE):
        try:
            st = os.lstat(file)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(file)
    with contextlib.suppress(OSError):
        directory.rmdir()


def make_slot(sessions_dir: Path) -> int:
    """Blocking: a new slot (a ``0700`` directory with an empty ``0600`` file) in
    ``sessions_dir`` (a leftover removed first); the file's descriptor (``O_APPEND``)."""
    clear_slot(sessions_dir)
    directory = sessions_dir / SLOT_DIR
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    return os.open(directory / SLOT_FILE, _FLAGS, 0o600)


@final
class NextSlot:
    """One slot at a time for the sessions of ``sessions_dir``; used from the event loop."""

    def __init__(self, sessions_dir: Path) -> None:
        self._sessions_dir = sessions_dir
        self._job: Started[int] | None = None

    def refill(self) -> None:
        """Start making the next slot in a worker thread, unless one is made or being made.
        A job that found every thread token of trio's default limiter taken was not started
        and nothing waits for it (``Started`` starts such work at its first wait): it is
        replaced, so that a refill while the threads are busy does not end the slots for the
        daemon's life."""
        if self._job is None or not self._job.started:
            self._job = Started(lambda: make_slot(self._sessions_dir), name="next session slot")

    def ready(self) -> bool:
        """A slot is made and may be claimed (never waits)."""
        made = self._job.finished() if self._job is not None else None
        return isinstance(made, outcome.Value)

    def claim(self, directory: Path) -> int | None:
        """The slot as ``directory`` (a new session's, not there yet) with its file as
        ``audit_file``: the file's descriptor. None when no slot is ready (its worker thread
        has not delivered it yet, or making it failed): the launch makes its own."""
        from ..audit import AUDIT_FILE

        job = self._job
        made = job.finished() if job is not None else None
        if made is None:
            return None
        self._job = None
        try:
            fd = made.unwrap()
        except Exception as exc:  # noqa: BLE001 - the launch makes its own instead
            log.warning("cannot make the next session's directory ahead",
                        error=getattr(exc, "strerror", None) or str(exc))
            return None
        # The file's rename first, inside the slot: a daemon that dies between the two
        # leaves a slot (``clear_slot`` removes it at the next start), never a directory
        # under a session's id with no session in it.
        slot = self._sessions_dir / SLOT_DIR
        try:
            os.rename(slot / SLOT_FILE, slot / AUDIT_FILE)
            os.rename(slot, directory)
        except OSError as exc:
            os.close(fd)
            log.warning("cannot claim the next session's directory and audit file",
                        error=exc.strerror or str(exc))
            return None
        return fd

    async def made(self) -> bool:
        """Wait for the slot being made, if one is; True when one is ready to claim."""
        if self._job is None:
            return False
        with contextlib.suppress(Exception):
            await self._job.result()
        return self.ready()

    async def aclose(self) -> None:
        """Close the descriptor of a slot made and not claimed (its directory stays until
        the next start)."""
        job, self._job = self._job, None
        if job is None or not job.started:  # never started: nothing made, none to make now
            return
        try:
            fd = await job.result()
        except Exception:  # noqa: BLE001 - none was made: nothing to close
            return
        os.close(fd)

