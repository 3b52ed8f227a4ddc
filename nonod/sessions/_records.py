"""Session records: what ``session.json`` holds, and the session directories on disk.

Records persist as ``<state_dir>/sessions/<id>/session.json`` (directories ``0700``, files
``0600``; see :func:`write_record`), beside the session's ``output.log`` and audit file. A record
never holds the environment (it may carry secrets), and its ``argv`` is redacted by the audit
rule and kept to a prefix of at most :data:`ARGV_KEPT` bytes (:func:`shorten_argv`; the audit
file has it whole).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import stat
from pathlib import Path
from typing import Final

import msgspec
import structlog

from .. import protocol as p
from ..sandbox import EnforcementReport
from ._output import write_all

log = structlog.get_logger()

RECORD_VERSION: Final = 1
#: Bytes (UTF-8) of a session's arguments its record keeps, in the daemon's memory, in
#: ``session.json`` and in every ``ps``/``inspect`` reply: a launch's argv may be up to a
#: control message's size (1 MiB), and a uid's ended sessions are bounded by its disk budget
#: only (GiBs of the system daemon's memory, and of root's ``ps --all`` replies).
ARGV_KEPT: Final = 4096


class SessionRecord(msgspec.Struct, kw_only=True):
    """What ``session.json`` holds. Never the environment: it may carry secrets."""

    version: int = RECORD_VERSION
    id: str
    name: str
    owner_uid: int
    owner_gid: int
    uid: int
    gid: int
    profile: str | None = None
    argv: tuple[str, ...] = ()
    #: Set when ``argv`` is a prefix of the one the session ran (:func:`shorten_argv`).
    argv_shortened: p.ArgvShortened | None = None
    cwd: str = "/"
    #: The session that ran this one as a tool (``nonod.toolsandbox``).
    parent: str | None = None
    state: p.SessionState = "starting"
    pid: int | None = None
    detached: bool = False
    tty: bool = False
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: p.EndReason = ""
    policy_digest: str = ""
    enforcement: p.Enforcement | None = None
    daemon_pid: int = 0
    #: The key its audit record is signed with (a daemon_lost seal is signed with it too).
    audit_sign_key: str | None = None
    #: An audit write failed (a full disk): the file is sealed as truncated once it can be.
    audit_truncated: bool = False
    #: Its effective resource limits, and what it used (final once it ended).
    limits: p.Limits | None = None
    usage: p.Usage | None = None
    #: The hosts whose TLS the daemon intercepts for it (its session CA's names).
    intercepts: tuple[str, ...] = ()
    #: The variables of its environment that hold real secrets (``env_credentials``).
    secret_env: tuple[str, ...] = ()
    #: The protections its profile or command line turned off (``_dryrun.weakened``).
    weakened: tuple[str, ...] = ()
    #: The secrets its launch routed for the first time (``credentials._hosts``).
    secrets_bound: tuple[str, ...] = ()


def shorten_argv(record: SessionRecord) -> None:
    """Keep a prefix of ``record.argv`` of at most :data:`ARGV_KEPT` bytes: whole arguments
    while they fit, the one that does not cut to what is left (at a character), none after
    it; ``argv_shortened`` says what the whole one was. Called once its audit record holds
    it whole (``session_started``), and on records read from disk."""
    sizes = [len(arg.encode("utf-8", "surrogatepass")) for arg in record.argv]
    if sum(sizes) <= ARGV_KEPT:
        return
    kept: list[str] = []
    room = ARGV_KEPT
    for arg, size in zip(record.argv, sizes, strict=True):
        if size > room:
            cut = arg.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
            if cut:
                kept.append(cut)
            break
        kept.append(arg)
        room -= size
    shortened = record.argv_shortened or p.ArgvShortened(arguments=len(record.argv),
                                                         bytes=sum(sizes))
    record.argv, record.argv_shortened = tuple(kept), shortened


record_decoder = msgspec.json.Decoder(SessionRecord)
record_encoder = msgspec.json.Encoder(order="sorted")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def enforcement_of(report: EnforcementReport) -> p.Enforcement:
    return p.Enforcement(
        fully_enforced=report.fully_enforced,
        summary=report.summary(),
        landlock_abi=report.landlock_abi,
        layers=tuple(
            p.Layer(name=lay.name, state=lay.state, reason=lay.reason, detail=lay.detail)
            for lay in report.layers
        ),
    )


def make_private_dirs(*dirs: Path) -> None:
    for directory in dirs:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)


def forget_session(directory: Path) -> None:
    """Remove a session's directory but its audit files (``audit.ndjson*``)."""
    from ..audit import AUDIT_FILE

    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    kept = False
    for entry in entries:
        if entry.name.startswith(AUDIT_FILE) and not entry.name.endswith(".tmp"):
            kept = True
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not kept:
        with contextlib.suppress(OSError):
            directory.rmdir()


#: The most a record rewritten in place may take (with its padding): one page, which one
#: ``pwrite`` at offset 0 replaces whole even when the daemon is killed during it (the kernel
#: stops a write for a fatal signal only between pages).
IN_PLACE_MAX: Final = 4096


def write_record(directory: Path, data: bytes) -> None:
    """``directory``'s ``session.json`` says ``data`` from now on.

    Made with the first record (``O_EXCL``, one write: no temporary file), then rewritten in
    place, padded with blanks to a page (JSON ends in whitespace as well), while the whole
    fits in one page; else, or if the rewrite fails, a temporary file renamed over
    it, as before. Every session's record changes two or three times: each temporary file was
    an inode allocated and one freed, and on ext4 without a journal (this project's hosts)
    each allocation scans past the inodes freed in the last seconds. A daemon killed during a
    write leaves the old record or the new one; a reader racing a rewrite may see a page
    half-copied (``read_records`` runs before any session does; ``nonoctl``'s offline lookup
    by name skips an unreadable record)."""
    text = data + b"\n"
    path = directory / "session.json"
    try:
        fd = _create(path)
    except FileNotFoundError:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _create(path)
    except FileExistsError:
        if not _rewritten(path, text):
            _replace(directory, text)
        return
    try:
        write_all(fd, _padded(text))
    finally:
        os.close(fd)


def _padded(text: bytes) -> bytes:
    """``text`` padded with blanks to a page when it fits in one: the file keeps that size
    while it is rewritten in place, so no crash (a power loss) can leave an inode whose size
    disagrees with its data (the old record cut short, or NULs after it: a record the next
    daemon could not read, its session never sealed as ``daemon_lost``). The file takes a
    block either way; its allocated size is what the audit budget counts."""
    return text.ljust(IN_PLACE_MAX, b" ") if len(text) <= IN_PLACE_MAX else text


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                   0o600)


def _rewritten(path: Path, text: bytes) -> bool:
    """``text`` over the record at ``path`` in one ``pwrite``; False if it did not fit in a
    page or did not go in whole (then nothing trusts what is there: it is replaced)."""
    if len(text) > IN_PLACE_MAX:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > IN_PLACE_MAX or st.st_nlink != 1:
            return False  # a second name would be written through too (a rename replaces one)
        padded = _padded(text)  # a page: a file made smaller (an older daemon's) grows once
        return os.pwrite(fd, padded, 0) == len(padded)
    except OSError:
        return False
    finally:
        os.close(fd)


def _replace(directory: Path, text: bytes) -> None:
    tmp = directory / "session.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, _padded(text))
    finally:
        os.close(fd)
    os.replace(tmp, directory / "session.json")


def read_records(sessions_dir: Path) -> list[SessionRecord]:
    out: list[SessionRecord] = []
    try:
        entries = sorted(sessions_dir.iterdir())
    except FileNotFoundError:
        return out
    for entry in entries:
        path = entry / "session.json"
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            log.warning("cannot read session record", path=str(path), error=str(exc))
            continue
        try:
            record = record_decoder.decode(data)
        except msgspec.DecodeError as exc:
            log.warning("ignoring a damaged session record", path=str(path), error=str(exc))
            continue
        if record.id != entry.name:
            log.warning("ignoring a session record filed under another id", path=str(path))
            continue
        shorten_argv(record)  # (one written before the bound)
        out.append(record)
    return out


#: Touched by a running daemon every ``HEARTBEAT_INTERVAL`` seconds: when the daemon dies, its
#: mtime says until when its sessions were known to be alive.
HEARTBEAT_FILE: Final = "daemon.alive"
HEARTBEAT_INTERVAL: Final = 5.0


def touch_heartbeat(state_dir: Path) -> None:
    path = state_dir / HEARTBEAT_FILE
    try:
        os.utime(path)
    except FileNotFoundError:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))


def last_alive(state_dir: Path, record: SessionRecord, directory: Path) -> dt.datetime:
    """When a session that died with its daemon was last known to be alive: the later of the
    daemon's last heartbeat and the session's last audit write (never before it started,
    never in the future)."""
    from ..audit import AUDIT_FILE

    seen = [record.started_at]
    for path in (state_dir / HEARTBEAT_FILE, directory / AUDIT_FILE):
        with contextlib.suppress(OSError):
            seen.append(dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.UTC))
    return min(max(seen), now())
