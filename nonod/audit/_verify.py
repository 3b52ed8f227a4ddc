"""Verification of session files and of the ledger.

:func:`verify_session_file` returns a :class:`VerifyResult` (what it verified) or raises
:class:`AuditVerifyError` naming the first line that is wrong. It never returns a bool.

Blocking (it reads whole files): the daemon calls it through ``trio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, final

import msgspec

from ..errors import NonoError
from ._chain import (
    ENTRY_TAG,
    LEDGER_TAG,
    Chain,
    MerkleAccumulator,
    WireLine,
    entry_hash,
    ledger_genesis,
    session_genesis,
)
from ._errors import (
    AuditError,
    AuditIncomplete,
    AuditLedgerError,
    AuditNotFound,
    AuditSignatureError,
    AuditVerifyError,
)
from ._events import Entry, Record, Seal, SessionSealed, SessionStarted
from ._sign import SIDECAR_SUFFIX, SignatureChecker, decode_statement, session_statement

AUDIT_FILE: Final = "audit.ndjson"
LEDGER_FILE: Final = "ledger.ndjson"
SESSION_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_LINE_DECODER: Final = msgspec.json.Decoder(WireLine)
_ENTRY_DECODER: Final = msgspec.json.Decoder(Entry)
_LEDGER_DECODER: Final = msgspec.json.Decoder(SessionSealed)
_RECORD_DECODER: Final = msgspec.json.Decoder(Record)
_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def check_session_id(session: str) -> str:
    if not SESSION_ID.fullmatch(session):
        raise AuditError(f"{session!r} is not a session id")
    return session


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`verify_session_file` verified.

    ``count`` events were verified; ``head`` is the hash of the last of them (the chain head
    the seal names). ``sealed`` is False only when the caller allowed an incomplete file;
    then ``merkle_root`` and ``seal_hash`` are None and ``torn_bytes`` counts the bytes of a
    partial last line that were not checked. ``ledger_line`` is the ledger line listing the
    session, or None when no ledger was given (or the file is not sealed). ``signature`` is
    ``verified``, ``absent`` (no sidecar, no checker) or ``unchecked`` (a sidecar, but no
    checker was given).
    """

    path: str
    session: str
    count: int
    head: str
    sealed: bool
    merkle_root: str | None
    seal_hash: str | None
    file_sha256: str
    torn_bytes: int = 0
    ledger_line: int | None = None
    signature: Literal["verified", "absent", "unchecked"] = "absent"
    signer: str | None = None


@final
@dataclass
class Scan:
    """What walking a session file found (internal: the writer resumes from it)."""

    session: str
    count: int = 0  # events, seal excluded
    head: bytes = b""
    merkle: MerkleAccumulator = field(default_factory=MerkleAccumulator)
    seal: Seal | None = None
    seal_hash: str | None = None
    valid_length: int = 0  # bytes of complete, verified lines
    torn_bytes: int = 0
    file_sha256: str = ""

    def chain(self) -> Chain:
        """A chain positioned to continue after the last verified line."""
        return Chain(ENTRY_TAG, session_genesis(self.session), seq=self.count,
                     head=self.head, merkle=self.merkle.copy())


def _msg(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without newline) and the bytes after the last newline."""
    parts = data.split(b"\n")
    return parts[:-1], parts[-1]


def check_line(path: str, number: int, raw: bytes, tag: bytes, head: bytes,
                error: type[AuditVerifyError] = AuditVerifyError) -> WireLine:
    """Steps (a)-(e) for one line: parse, canonical form, seq, prev, hash."""
    # (a) it parses as an audit line
    if not raw:
        raise error(path, number, "empty line")
    try:
        wire = _LINE_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise error(path, number, f"not a valid audit line: {_msg(exc)}") from exc
    # (b) it is exactly what the writer would have written
    if _ENCODER.encode(wire) != raw:
        raise error(path, number, "not in canonical form: bytes were changed or added")
    # (c) it is where it says it is
    if wire.seq != number:
        raise error(path, number,
                    f"sequence number {wire.seq} where {number} was expected: lines were "
                    "deleted, reordered or inserted")
    # (d) it follows the line before
    if wire.prev != head.hex():
        if number == 1:
            raise error(path, number, "does not start this chain: the first line was "
                        "replaced, or the file belongs to another session")
        raise error(path, number, f"prev does not match the hash of line {number - 1}")
    # (e) its content is what was hashed
    body = bytes(wire.event)
    if entry_hash(tag, head, wire.seq, wire.ts, body).hex() != wire.hash:
        raise error(path, number, "hash does not match the line's content: it was edited")
    return wire


def scan_session(data: bytes, path: str, session: str, *, allow_incomplete: bool) -> Scan:
    """Walk a session file from its first line, checking each; see :func:`verify_session_file`."""
    scan = Scan(session=session, head=session_genesis(session))
    lines, tail = _split(data)
    offset = 0
    for index, raw in enumerate(lines):
        number = index + 1
        if scan.seal is not None:
            raise AuditVerifyError(path, number, "lines after the final record")
        wire = check_line(path, number, raw, ENTRY_TAG, scan.head)
        # (f) the event is one this version knows, well-formed
        try:
            event = _ENTRY_DECODER.decode(bytes(wire.event))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise AuditVerifyError(path, number, f"event does not decode: {_msg(exc)}") from exc
        if isinstance(event, SessionStarted) and event.session != session:
            raise AuditVerifyError(path, number,
                                   f"session_started names session {event.session!r}")
        # (g) a seal closes the file and must describe what came before it
        if isinstance(event, Seal):
            expected = (session, scan.count, scan.head.hex(), scan.merkle.root().hex())
            found = (event.session, event.count, event.head, event.merkle_root)
            for name, want, got in zip(("session", "count", "head", "merkle_root"),
                                       expected, found, strict=True):
                if want != got:
                    raise AuditVerifyError(path, number, f"final record: {name} is {got!r}, "
                                           f"the lines before it give {want!r}")
            scan.seal = event
            scan.seal_hash = wire.hash
        else:
            scan.count += 1
            scan.merkle.add(bytes.fromhex(wire.hash))
        scan.head = bytes.fromhex(wire.hash)
        offset += len(raw) + 1
        scan.valid_length = offset
    number = len(lines) + 1
    if tail:
        if scan.seal is not None:
            raise AuditVerifyError(path, number, "bytes after the final record")
        if not allow_incomplete:
            raise AuditIncomplete(path, number, "incomplete: the last line was cut short "
                                  "and there is no final record")
        scan.torn_bytes = len(tail)
    if scan.seal is None and not allow_incomplete:
        empty = " (the file is empty)" if not lines and not tail else ""
        raise AuditIncomplete(path, number, "incomplete: no final record" + empty)
    scan.file_sha256 = hashlib.sha256(data[:scan.valid_length]).hexdigest()
    return scan


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise AuditNotFound(f"no {what} at {path}") from exc
    except OSError as exc:
        raise AuditError(f"cannot read {what} {path}: {exc.strerror}") from exc


@final
@dataclass(frozen=True)
class LedgerView:
    """A verified ledger: each sealed session's entry and the line it is on."""

    path: str
    count: int
    head: str
    entries: dict[str, tuple[int, SessionSealed]]
    torn_bytes: int = 0


def scan_ledger(data: bytes, path: str, *, allow_torn: bool = False) -> LedgerView:
    """Walk the ledger, checking every line; a partial last line is an error unless allowed."""
    head = ledger_genesis()
    entries: dict[str, tuple[int, SessionSealed]] = {}
    lines, tail = _split(data)
    for index, raw in enumerate(lines):
        number = index + 1
        wire = check_line(path, number, raw, LEDGER_TAG, head, AuditLedgerError)
        try:
            entry = _LEDGER_DECODER.decode(bytes(wire.event))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise AuditLedgerError(path, number, f"entry does not decode: {_msg(exc)}") from exc
        if entry.session in entries:
            raise AuditLedgerError(path, number, f"session {entry.session} is listed twice "
                                   f"(first on line {entries[entry.session][0]})")
        entries[entry.session] = (number, entry)
        head = bytes.fromhex(wire.hash)
    if tail and not allow_torn:
        raise AuditLedgerError(path, len(lines) + 1, "the last line was cut short")
    return LedgerView(path=path, count=len(lines), head=head.hex(), entries=entries,
                      torn_bytes=len(tail))


def verify_ledger_file(path: str | os.PathLike[str]) -> LedgerView:
    """Check every line of the ledger (``<state>/ledger.ndjson``); raise or return it.

    A ledger has no final record: lines cut off its end cannot be told from lines never
    written. Compare its ``head`` with one kept elsewhere to detect that.
    """
    ledger = Path(path)
    return scan_ledger(_read(ledger, "ledger"), str(ledger))


def _check_ledger(ledger: Path, scan: Scan) -> int:
    view = scan_ledger(_read(ledger, "ledger"), str(ledger))
    found = view.entries.get(scan.session)
    if found is None:
        raise AuditLedgerError(
            str(ledger), None, f"session {scan.session} is not in the ledger",
            hint="a session sealed just before the daemon died is added at its next start",
        )
    number, entry = found
    if scan.seal is None or scan.seal_hash is None:
        raise AuditLedgerError(str(ledger), number,
                               f"lists session {scan.session}, whose file has no final record")
    expected = {"count": scan.seal.count, "merkle_root": scan.seal.merkle_root,
                "seal_hash": scan.seal_hash, "file_sha256": scan.file_sha256}
    for name, want in expected.items():
        if getattr(entry, name) != want:
            raise AuditLedgerError(str(ledger), number,
                                   f"the entry for session {scan.session} does not match its "
                                   f"file: {name} differs")
    return number


def refuse_listed_unsealed(ledger: Path, session: str) -> None:
    """Raise :class:`AuditLedgerError` if the ledger (verified first) lists ``session``,
    whose file has no final record. A session's ledger line is written only once its seal is
    durable, so such a file is no live session's, nor one a dead daemon left: lines were cut
    off it after it was sealed, and the ledger is the proof (its count, root and digest)."""
    view = scan_ledger(_read(ledger, "ledger"), str(ledger))
    found = view.entries.get(session)
    if found is None:
        return
    number, entry = found
    raise AuditLedgerError(
        str(ledger), number,
        f"lists session {session} as sealed with {entry.count} events, but its file has no "
        "final record: lines were cut off after the seal",
        hint="the file was truncated after it was sealed; keep a copy before doing anything",
    )


def _check_signature(sidecar: Path, scan: Scan,
                     checker: SignatureChecker) -> None:
    if scan.seal is None or scan.seal_hash is None:
        raise AuditSignatureError(str(sidecar), None, "an unsealed file has no signature")
    try:
        data = sidecar.read_bytes()
    except FileNotFoundError as exc:
        raise AuditSignatureError(str(sidecar), None, "no signature beside the file") from exc
    except OSError as exc:
        raise AuditSignatureError(str(sidecar), None,
                                  f"cannot read the signature: {exc.strerror}") from exc
    check_bundle(data, scan, checker, str(sidecar))


def check_bundle(data: bytes, scan: Scan, checker: SignatureChecker, where: str) -> None:
    """The bundle ``data`` verifies with ``checker`` and signs the statement recomputed from
    the sealed ``scan``; :class:`AuditSignatureError` (naming ``where``) otherwise."""
    if scan.seal is None or scan.seal_hash is None:
        raise AuditSignatureError(where, None, "an unsealed file has no signature")
    try:
        payload = checker.verify_statement(data)
    except AuditVerifyError as exc:
        raise AuditSignatureError(where, None, exc.reason) from exc
    except NonoError as exc:
        raise AuditSignatureError(where, None, exc.message) from exc
    try:
        statement = decode_statement(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise AuditSignatureError(where, None,
                                  f"the signed statement is not an audit-session statement: "
                                  f"{_msg(exc)}") from exc
    if payload != session_statement(scan.seal, scan.seal_hash, scan.file_sha256):
        digest = statement.subject[0].digest.get("sha256") if statement.subject else None
        what = ("file digest" if digest != scan.file_sha256
                else "session summary")
        raise AuditSignatureError(where, None,
                                  f"the signature is valid but for other content: the {what} "
                                  "differs from this file's")


def verify_session_file(
    path: str | os.PathLike[str],
    *,
    session: str | None = None,
    ledger: str | os.PathLike[str] | None = None,
    checker: SignatureChecker | None = None,
    allow_incomplete: bool = False,
) -> VerifyResult:
    """Verify one session's ``audit.ndjson``; return what was verified or raise.

    ``session`` defaults to the name of the file's directory (``sessions/<id>/audit.ndjson``).

    For every line, in order: (a) it parses as ``{"event","hash","prev","seq","ts"}``; (b) it
    is byte for byte its canonical encoding; (c) its ``seq`` is its line number; (d) its
    ``prev`` is the previous line's hash (line 1: the session's genesis value); (e) its hash
    recomputes; (f) its event decodes as a known kind; (g) a seal is the last line and its
    count, head and Merkle root match the lines before it. Then: (h) without
    ``allow_incomplete`` the file must end with a seal (:class:`AuditIncomplete` otherwise);
    (i) with ``ledger``, the ledger verifies and lists the session with this file's count,
    Merkle root, seal hash and SHA-256; a file with no seal must not be listed at all (the
    ledger says it was sealed: :class:`AuditLedgerError`, with ``allow_incomplete`` too);
    (j) with ``checker``, ``audit.ndjson.bundle`` exists and verifies, and the statement it
    signs is the one recomputed from this file.

    Raises :class:`AuditVerifyError` (its subclasses :class:`AuditIncomplete`,
    :class:`AuditLedgerError`, :class:`AuditSignatureError`) naming the first bad line, or
    :class:`AuditNotFound` / :class:`AuditError` when a file cannot be read. The caller MUST
    decide what a result with ``sealed=False`` or ``signature != "verified"`` means to it.
    """
    file = Path(path)
    sid = check_session_id(session if session is not None else file.parent.name)
    data = _read(file, "audit file")
    try:
        scan = scan_session(data, str(file), sid, allow_incomplete=allow_incomplete)
    except AuditIncomplete:
        if ledger is not None:
            refuse_listed_unsealed(Path(ledger), sid)
        raise

    ledger_line: int | None = None
    if ledger is not None:
        if scan.seal is None:
            refuse_listed_unsealed(Path(ledger), sid)
        else:
            ledger_line = _check_ledger(Path(ledger), scan)

    sidecar = file.with_name(file.name + SIDECAR_SUFFIX)
    signature: Literal["verified", "absent", "unchecked"] = "absent"
    signer: str | None = None
    if checker is not None:
        _check_signature(sidecar, scan, checker)
        signature = "verified"
        signer = checker.key_id
    elif sidecar.exists():
        signature = "unchecked"

    return VerifyResult(
        path=str(file), session=sid, count=scan.count,
        head=scan.seal.head if scan.seal is not None else scan.head.hex(),
        sealed=scan.seal is not None,
        merkle_root=scan.seal.merkle_root if scan.seal is not None else None,
        seal_hash=scan.seal_hash, file_sha256=scan.file_sha256, torn_bytes=scan.torn_bytes,
        ledger_line=ledger_line, signature=signature, signer=signer,
    )


def read_lines(path: str | os.PathLike[str]) -> list[tuple[Record, bytes]]:
    """Each complete line of a session file, decoded, with its stored bytes (unverified, as
    :func:`read_records`). A replay sends the bytes exactly as they were written."""
    file = Path(path)
    data = _read(file, "audit file")
    lines, _ = _split(data)
    out: list[tuple[Record, bytes]] = []
    for index, raw in enumerate(lines):
        try:
            out.append((_RECORD_DECODER.decode(raw), raw))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise AuditVerifyError(str(file), index + 1,
                                   f"not a valid audit line: {_msg(exc)}") from exc
    return out


#: What one :func:`read_lines_from` call reads (more only to finish a line longer than this).
REPLAY_CHUNK: Final = 1 << 20


def read_lines_from(path: str | os.PathLike[str], offset: int, *,
                    chunk: int = REPLAY_CHUNK) -> tuple[list[tuple[Record, bytes]], int]:
    """:func:`read_lines` a piece at a time: the complete lines that start at byte ``offset``
    within about ``chunk`` bytes (one line may make it longer), decoded, and the offset after
    them. No lines: the file ends there (or in a partial line). A replay holds one piece."""
    file = Path(path)
    try:
        with open(file, "rb") as f:
            f.seek(offset)
            data = f.read(chunk)
            while b"\n" not in data and len(data) >= chunk:
                more = f.read(chunk)
                if not more:
                    break
                data += more
    except FileNotFoundError as exc:
        raise AuditNotFound(f"no audit file at {file}") from exc
    except OSError as exc:
        raise AuditError(f"cannot read audit file {file}: {exc.strerror}") from exc
    end = data.rfind(b"\n") + 1
    out: list[tuple[Record, bytes]] = []
    for raw in data[:end].split(b"\n")[:-1]:
        try:
            out.append((_RECORD_DECODER.decode(raw), raw))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise AuditVerifyError(str(file), 0,
                                   f"not a valid audit line at byte {offset}: {_msg(exc)}"
                                   ) from exc
        offset += len(raw) + 1
    return out, offset


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """Decode a session file's lines for display, without verifying the chain.

    A line that does not decode raises :class:`AuditVerifyError`; a partial last line is
    skipped. Use :func:`verify_session_file` to know whether to believe what this returns.
    """
    file = Path(path)
    data = _read(file, "audit file")
    lines, _ = _split(data)
    out: list[Record] = []
    for index, raw in enumerate(lines):
        try:
            out.append(_RECORD_DECODER.decode(raw))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise AuditVerifyError(str(file), index + 1,
                                   f"not a valid audit line: {_msg(exc)}") from exc
    return out
