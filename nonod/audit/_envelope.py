"""The signed envelope of one sealed session, as shipped to a control plane.

An envelope is one JSON object: the session's stored lines exactly as written (its seal
last), what the seal says (count, chain head, Merkle root), the seal line's hash, the SHA-256
of the file those lines make, and a signature bundle over the same in-toto statement that
``audit.ndjson.bundle`` signs (:func:`._sign.session_statement`). A receiver needs nothing
else to check it: :func:`verify_envelope` rebuilds the file from the lines, walks its chain,
compares the envelope's summary with it and checks the bundle.

``id`` is ``<session>:<seal hash>``: the same session sent twice has the same id, so a
receiver can drop the second copy.

No trio here: ``nonoctl audit verify --envelope`` uses it.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

import msgspec

from ._errors import AuditIncomplete, AuditVerifyError
from ._events import Seal
from ._sign import SignatureChecker, Signer, session_statement
from ._verify import Scan, VerifyResult, check_bundle, check_session_id, scan_session

ENVELOPE_TYPE: Final = "https://nono.dev/audit/envelope/v1"
MEDIA_TYPE: Final = "application/vnd.nono.audit-envelope.v1+json"


class Envelope(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: str = ENVELOPE_TYPE
    id: str
    session: str
    count: int
    head: str
    merkle_root: str
    seal_hash: str
    file_sha256: str
    records: tuple[str, ...]
    signature: msgspec.Raw


def _file_bytes(lines: tuple[bytes, ...] | list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _sealed_scan(data: bytes, where: str, session: str) -> tuple[Scan, Seal, str]:
    scan = scan_session(data, where, check_session_id(session), allow_incomplete=False)
    if scan.seal is None or scan.seal_hash is None:  # allow_incomplete=False raised already
        raise AuditIncomplete(where, None, "incomplete: no final record")
    return scan, scan.seal, scan.seal_hash


def build_envelope(session: str, lines: list[bytes], signer: Signer, *,
                   where: str = "envelope") -> bytes:
    """The signed envelope of a sealed session whose stored lines (seal last, without their
    newlines) are ``lines``. The lines are checked first: a chain that does not verify is
    never signed (``AuditVerifyError``)."""
    scan, seal, seal_hash = _sealed_scan(_file_bytes(lines), where, session)
    statement = session_statement(seal, seal_hash, scan.file_sha256)
    bundle = signer.sign_statement(statement).strip()
    envelope = Envelope(
        id=f"{session}:{seal_hash}", session=session, count=seal.count,
        head=seal.head, merkle_root=seal.merkle_root, seal_hash=seal_hash,
        file_sha256=scan.file_sha256, records=tuple(line.decode() for line in lines),
        signature=msgspec.Raw(bundle),
    )
    return msgspec.json.encode(envelope, order="sorted")


def envelope_signature(data: bytes) -> bytes | None:
    """The signature bundle an envelope carries (unverified: to choose a key), or None."""
    try:
        return bytes(msgspec.json.decode(data, type=Envelope).signature)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def verify_envelope(data: bytes, *, checker: SignatureChecker | None,
                    where: str = "envelope") -> VerifyResult:
    """Check an envelope: its records form a sealed session chain (every check of
    ``verify_session_file`` but the ledger), its summary and id are those of the records,
    and, with ``checker``, its bundle verifies and signs that session. Without a checker the
    result's ``signature`` is ``unchecked``. Raises :class:`AuditVerifyError` (or a subclass)
    naming what is wrong."""
    try:
        envelope = msgspec.json.decode(data, type=Envelope)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise AuditVerifyError(where, None, f"not an audit envelope: {str(exc)[:200]}") from exc
    if envelope.type != ENVELOPE_TYPE:
        raise AuditVerifyError(where, None, f"unexpected envelope type {envelope.type[:80]!r}")
    session = envelope.session
    file = _file_bytes([line.encode() for line in envelope.records])
    scan, seal, seal_hash = _sealed_scan(file, where, session)
    expected = {"id": f"{session}:{seal_hash}", "count": seal.count, "head": seal.head,
                "merkle_root": seal.merkle_root, "seal_hash": seal_hash,
                "file_sha256": scan.file_sha256}
    for name, want in expected.items():
        if getattr(envelope, name) != want:
            raise AuditVerifyError(where, None,
                                   f"the envelope's {name} does not match its records")
    signature: Literal["verified", "unchecked"] = "unchecked"
    signer: str | None = None
    if checker is not None:
        check_bundle(bytes(envelope.signature), scan, checker, where)
        signature, signer = "verified", checker.key_id
    return VerifyResult(
        path=where, session=session, count=scan.count, head=seal.head, sealed=True,
        merkle_root=seal.merkle_root, seal_hash=seal_hash,
        file_sha256=hashlib.sha256(file).hexdigest(), signature=signature, signer=signer,
    )
