"""nono's bundle format: a Sigstore bundle v0.3 holding a DSSE envelope over an in-toto statement.

A keyed bundle, as nono writes it (and as we write it, key for key)::

    {
      "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
      "verificationMaterial": {
        "publicKey": {"hint": "<hex SHA-256 of the signer's DER SPKI>"},
        "tlogEntries": [],
        "timestampVerificationData": {}
      },
      "dsseEnvelope": {
        "payloadType": "application/vnd.in-toto+json",
        "payload": "<standard base64 of the statement JSON>",
        "signatures": [{"sig": "<base64 of a DER ECDSA P-256/SHA-256 signature>"}]
      }
    }

The signature covers ``PAE(payloadType, payload)`` (DSSE v1), never the JSON. The payload is a
compact in-toto Statement v1 with exactly one subject (the file's base name and SHA-256) and the
predicate ``{"signer": {"key_id": ..., "kind": "keyed"}, "version": 1}``.

Parsing only establishes that the bytes have this shape; nothing here is trusted until
``_verify`` has checked the signature. Readers accept standard and URL-safe base64, padded or
not. Every malformed input raises :class:`BadBundle` with a message naming the field;
nothing else escapes (the JSON parser's ``RecursionError`` and ``ValueError`` included).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Final, final

import msgspec

from ._errors import BadBundle
from ._limits import MAX_BUNDLE_BYTES as MAX_BUNDLE_BYTES

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
# The other spelling of v0.3 that Sigstore clients accept; read, never written.
BUNDLE_MEDIA_TYPE_ALT: Final = "application/vnd.dev.sigstore.bundle+json;version=0.3"
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
INSTRUCTION_PREDICATE_TYPE: Final = "https://nono.sh/attestation/instruction-file/v1"
POLICY_PREDICATE_TYPE: Final = "https://nono.sh/attestation/trust-policy/v1"
#: nono's one bundle for many files (``nono trust sign --multi-subject``).
MULTI_SUBJECT_PREDICATE_TYPE: Final = "https://nono.sh/attestation/multi-file/v1"
#: Subjects one multi-subject bundle may carry (nono's signer refuses more).
MAX_SUBJECTS: Final = 1_000


_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_SHOWN = 80


def _shown(value: object) -> str:
    """A value from untrusted input, quoted and cut short for an error message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def shown_name(name: str) -> str:
    """A file name or path for a message: as is if printable, else escaped (no terminal
    control sequences from a hostile file name)."""
    return name if name.isprintable() else repr(name)[1:-1]


def b64decode(text: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not. Raises ``ValueError`` otherwise.

    Whitespace, stray ``=`` and impossible lengths are refused: a bundle that needs a lenient
    reader to make sense was not written by a signer.
    """
    if not _B64_CHARS.fullmatch(text):
        raise ValueError("characters outside the base64 alphabets")
    body = text.rstrip("=")
    if "=" in text and len(text) % 4:
        raise ValueError("padding does not complete a 4-character group")
    if len(body) % 4 == 1:
        raise ValueError("length is not a possible base64 length")
    body = body.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc


def b64encode(data: bytes) -> str:
    """Standard base64 with padding: what nono writes."""
    return base64.b64encode(data).decode("ascii")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes a signature covers.

    ``DSSEv1 <len(type)> <type> <len(payload)> <payload>``, lengths in bytes, in ASCII decimal.
    """
    encoded_type = payload_type.encode("utf-8")
    header = b"DSSEv1 %d %s %d " % (len(encoded_type), encoded_type, len(payload))
    return header + payload


def check_base_name(name: str) -> str:
    """Subject names are base names: no path separator (``/`` or ``\\``), not ``.``/``..``.

    Returns ``name``; raises ``ValueError`` saying what is wrong.
    """
    if not name:
        raise ValueError("the name is empty")
    if "/" in name or "\\" in name:
        raise ValueError("a file name must not contain a path separator")
    if name in (".", "..") or "\0" in name:
        raise ValueError("not a file name")
    return name


def check_subject_path(name: str) -> str:
    """A multi-subject bundle's subject name as a path relative to the bundle's directory.

    nono names each subject by the file's path relative to the directory it signed in, as
    the platform prints it (``docs/GEMINI.md``, ``./a.md``). Returns the canonical form (no
    ``.`` or empty components) that the scan compares with its own relative paths; raises
    ``ValueError`` for what nono refuses (an absolute path, a ``..`` component) and for what
    cannot name a file here (empty, a NUL, a backslash: a Windows separator, or part of a
    name no signer on this system would write).
    """
    if not name:
        raise ValueError("the name is empty")
    if "\0" in name:
        raise ValueError("the name contains a NUL character")
    if name.startswith("/"):
        raise ValueError("absolute paths are not permitted in bundle subjects")
    if "\\" in name:
        raise ValueError("a backslash is not a path separator here")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' components are not permitted in bundle subjects")
    if not parts:
        raise ValueError("the name names the bundle's directory, not a file")
    return "/".join(parts)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            # Two parsers can read a duplicated key differently; refuse rather than pick.
            raise ValueError(f"duplicate key {_shown(key)}")
        result[key] = value
    return result


def _lone_surrogate(doc: object) -> str | None:
    """The first string (key or value) of a parsed JSON document holding a UTF-16
    surrogate, or None. Python's parser keeps an unpaired ``\\ud800`` escape in the string
    (a pair becomes one character); no file name, key id or digest can hold one."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return node
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def load_json(data: bytes, what: str) -> object:
    """Strict JSON: UTF-8 only, no duplicate keys, no unpaired surrogate (``\\ud800``: not
    text; nono's parser, serde_json, refuses it too, and a path holding one cannot be
    encoded to look a file up). ``ValueError`` names ``what`` was wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicates)
    except RecursionError:
        raise ValueError(f"{what} JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON (truncated or corrupt): {exc}") from None
    except ValueError as exc:  # duplicate keys, integers too long to convert
        raise ValueError(f"{what} JSON is not acceptable: {exc}") from None
    found = _lone_surrogate(doc)
    if found is not None:
        raise ValueError(f"{what} JSON is not acceptable: the string {_shown(found)} holds an "
                         "unpaired UTF-16 surrogate escape")
    return doc


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise BadBundle(f"{where} must be a JSON object")
    return value


def _string(obj: dict[str, object], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        raise BadBundle(f"{where}.{key} is missing")
    if not isinstance(value, str):
        raise BadBundle(f"{where}.{key} must be a string")
    return value


@final
class DsseSignature(msgspec.Struct, frozen=True, kw_only=True):
    sig: bytes
    keyid: str = ""


@final
class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """A DSSE envelope with its payload and signature already base64-decoded."""

    payload_type: str
    payload: bytes
    signature: DsseSignature

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)


@final
class Bundle(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed keyed bundle: its media type, the key hint (``None`` when absent) and the
    envelope. Nothing in it is authenticated yet."""

    media_type: str
    hint: str | None
    envelope: Envelope


@final
class Subject(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    sha256: str
    """Lower-case hex."""


@final
class Statement(msgspec.Struct, frozen=True, kw_only=True):
    """An in-toto statement from a keyed nono signer: one subject and the signer's key id."""

    subject: Subject
    predicate_type: str
    key_id: str


def parse_bundle(data: bytes) -> Bundle:
    """Check the bundle's size, JSON, media type, key hint and DSSE envelope.

    Does not look inside the payload (see :func:`parse_statement`) and checks no signature.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BadBundle(f"bundle is {len(data)} bytes; the limit is {MAX_BUNDLE_BYTES} bytes")
    try:
        doc = _object(load_json(data, "bundle"), "bundle")
    except ValueError as exc:
        raise BadBundle(str(exc)) from None

    media_type = doc.get("mediaType")
    if not isinstance(media_type, str):
        raise BadBundle("bundle has no mediaType string")
    if media_type not in (BUNDLE_MEDIA_TYPE, BUNDLE_MEDIA_TYPE_ALT):
        raise BadBundle(
            f"unsupported bundle mediaType {_shown(media_type)} (expected {BUNDLE_MEDIA_TYPE!r})"
        )

    material = _object(doc.get("verificationMaterial"), "verificationMaterial")
    if "certificate" in material or "x509CertificateChain" in material:
        raise BadBundle(
            "keyless bundles (signed with a Fulcio certificate) are not supported; "
            "only keyed bundles are"
        )
    public_key = _object(material.get("publicKey"), "verificationMaterial.publicKey")
    hint = public_key.get("hint")
    if hint is not None and not isinstance(hint, str):
        raise BadBundle("verificationMaterial.publicKey.hint must be a string")

    if "dsseEnvelope" not in doc:
        if "messageSignature" in doc:
            raise BadBundle("bundle carries a message signature, not a DSSE envelope")
        raise BadBundle("bundle has no dsseEnvelope")
    envelope = _object(doc["dsseEnvelope"], "dsseEnvelope")
    payload_type = _string(envelope, "payloadType", "dsseEnvelope")
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise BadBundle(
            f"unexpected DSSE payloadType {_shown(payload_type)} "
            f"(expected {IN_TOTO_PAYLOAD_TYPE!r})"
        )
    payload_b64 = _string(envelope, "payload", "dsseEnvelope")
    try:
        payload = b64decode(payload_b64)
    except ValueError as exc:
        raise BadBundle(f"DSSE payload is not valid base64: {exc}") from None
    if not payload:
        raise BadBundle("DSSE payload is empty")

    signatures = envelope.get("signatures")
    if not isinstance(signatures, list):
        raise BadBundle("dsseEnvelope.signatures must be a list")
    if len(signatures) != 1:
        raise BadBundle(f"DSSE envelope must carry exactly one signature, found {len(signatures)}")
    entry = _object(signatures[0], "dsseEnvelope.signatures[0]")
    sig_b64 = _string(entry, "sig", "dsseEnvelope.signatures[0]")
    try:
        sig = b64decode(sig_b64)
    except ValueError as exc:
        raise BadBundle(f"DSSE signature is not valid base64: {exc}") from None
    if not sig:
        raise BadBundle("DSSE signature is empty")
    keyid = entry.get("keyid", "")
    if not isinstance(keyid, str):
        raise BadBundle("dsseEnvelope.signatures[0].keyid must be a string")

    return Bundle(
        media_type=media_type,
        hint=hint,
        envelope=Envelope(
            payload_type=payload_type,
            payload=payload,
            signature=DsseSignature(sig=sig, keyid=keyid),
        ),
    )


def _statement_doc(payload: bytes) -> dict[str, object]:
    try:
        doc = _object(load_json(payload, "statement"), "statement")
    except ValueError as exc:
        raise BadBundle(str(exc)) from None
    statement_type = doc.get("_type")
    if statement_type != IN_TOTO_STATEMENT_TYPE:
        raise BadBundle(
            f"unexpected in-toto statement _type {_shown(statement_type)} "
            f"(expected {IN_TOTO_STATEMENT_TYPE!r})"
        )
    return doc


def _subject(value: object, where: str) -> tuple[str, str]:
    """One subject's name (not empty) and lower-case hex SHA-256."""
    subject = _object(value, where)
    name = _string(subject, "name", where)
    if not name:
        raise BadBundle(f"{where}.name is empty")
    digests = _object(subject.get("digest"), f"{where}.digest")
    sha256 = _string(digests, "sha256", f"{where}.digest")
    if not _HEX64.fullmatch(sha256):
        raise BadBundle(f"{where}.digest.sha256 is not 64 hex digits")
    return name, sha256.lower()


def _keyed_signer(doc: dict[str, object]) -> str:
    """The key id of the statement's keyed signer (keyless and unknown kinds refused)."""
    predicate = _object(doc.get("predicate"), "statement.predicate")
    signer = _object(predicate.get("signer"), "statement.predicate.signer")
    kind = _string(signer, "kind", "statement.predicate.signer")
    if kind == "keyless":
        raise BadBundle("keyless signers are not supported; only keyed bundles are")
    if kind != "keyed":
        raise BadBundle(f"unknown signer kind {_shown(kind)}")
    key_id = _string(signer, "key_id", "statement.predicate.signer")
    if not key_id:
        raise BadBundle("statement.predicate.signer.key_id is empty")
    return key_id


def parse_statement(payload: bytes) -> Statement:
    """Read the in-toto statement of a keyed nono bundle (one subject, a keyed signer)."""
    doc = _statement_doc(payload)
    predicate_type = _string(doc, "predicateType", "statement")
    subjects = doc.get("subject")
    if not isinstance(subjects, list):
        raise BadBundle("statement.subject must be a list")
    if len(subjects) != 1:
        raise BadBundle(f"statement must have exactly one subject, found {len(subjects)}")
    name, sha256 = _subject(subjects[0], "statement.subject[0]")
    return Statement(
        subject=Subject(name=name, sha256=sha256),
        predicate_type=predicate_type,
        key_id=_keyed_signer(doc),
    )


@final
class MultiStatement(msgspec.Struct, frozen=True, kw_only=True):
    """The statement of a multi-subject bundle: each subject's canonical relative path
    (:func:`check_subject_path`) and digest, in the bundle's order, and the signer's key id."""

    subjects: tuple[Subject, ...]
    predicate_type: str
    key_id: str


def parse_multi_statement(payload: bytes) -> MultiStatement:
    """Read the statement of nono's multi-subject bundle: 1 to :data:`MAX_SUBJECTS`
    subjects, each a relative path inside the bundle's directory, no path twice (after
    ``./`` and ``//`` are taken out), and a keyed signer. Any bad subject refuses the whole
    bundle: its list is what the signature covers, and one part of it is not read alone."""
    doc = _statement_doc(payload)
    predicate_type = _string(doc, "predicateType", "statement")
    subjects = doc.get("subject")
    if not isinstance(subjects, list):
        raise BadBundle("statement.subject must be a list")
    if not subjects:
        raise BadBundle("statement has no subjects")
    if len(subjects) > MAX_SUBJECTS:
        raise BadBundle(f"statement has {len(subjects)} subjects; the limit is {MAX_SUBJECTS}")
    parsed: dict[str, Subject] = {}
    for index, value in enumerate(subjects):
        where = f"statement.subject[{index}]"
        name, sha256 = _subject(value, where)
        try:
            path = check_subject_path(name)
        except ValueError as exc:
            raise BadBundle(f"{where}.name {_shown(name)}: {exc}") from None
        if path in parsed:
            raise BadBundle(f"{where}.name {_shown(name)} names {_shown(path)} a second time "
                            "(duplicate subject)")
        parsed[path] = Subject(name=path, sha256=sha256)
    return MultiStatement(subjects=tuple(parsed.values()), predicate_type=predicate_type,
                          key_id=_keyed_signer(doc))


def encode_statement(*, name: str, sha256: str, predicate_type: str, key_id: str) -> bytes:
    """The statement JSON as nono writes it: compact, fields in nono's order, UTF-8."""
    statement = {
        "_type": IN_TOTO_STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha256}}],
        "predicateType": predicate_type,
        "predicate": {"signer": {"key_id": key_id, "kind": "keyed"}, "version": 1},
    }
    return json.dumps(statement, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_multi_statement(*, subjects: list[tuple[str, str]], key_id: str) -> bytes:
    """A multi-subject statement as nono writes it: ``(relative path, hex SHA-256)`` per
    subject, in the order given, and the multi-file predicate."""
    statement = {
        "_type": IN_TOTO_STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha256}} for name, sha256 in subjects],
        "predicateType": MULTI_SUBJECT_PREDICATE_TYPE,
        "predicate": {"signer": {"key_id": key_id, "kind": "keyed"}, "version": 1},
    }
    return json.dumps(statement, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_bundle(*, hint: str, payload: bytes, signature: bytes) -> bytes:
    """The bundle JSON as nono writes it (pretty-printed, no trailing newline)."""
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": hint},
            "tlogEntries": [],
            "timestampVerificationData": {},
        },
        "dsseEnvelope": {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": b64encode(payload),
            "signatures": [{"sig": b64encode(signature)}],
        },
    }
    return json.dumps(bundle, indent=2).encode("ascii")
