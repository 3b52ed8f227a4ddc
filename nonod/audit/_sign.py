"""Signing a sealed session: what is signed, who signs, and the built-in ECDSA P-256 signer.

What is signed is an in-toto Statement v1 (canonical JSON, keys sorted) whose subject is the
session file (``audit.ndjson``, SHA-256 of all its bytes, seal included) and whose predicate
(type :data:`PREDICATE_TYPE`) repeats the seal: session, event count, chain head, Merkle root
and the seal line's hash. The signature lives beside the file as ``audit.ndjson.bundle``.

Who signs is pluggable. A :class:`Signer` turns the statement into the bytes of that sidecar;
a :class:`SignatureChecker` takes the sidecar back and returns the statement it verified (the
verifier then compares it with what it recomputed from the file). The trust area can plug in
its keychain-backed signer; :class:`EcdsaP256Signer` and :class:`EcdsaP256Checker` use a key
held in memory and write a Sigstore-style bundle (media type v0.3, public key hint, DSSE
envelope over the statement), the shape nono's trust bundles have.

``cryptography`` is imported only when the built-in signer or checker is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Final, Protocol, final

import msgspec

from ._errors import AuditError, AuditSignatureError
from ._events import Seal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://nono.dev/attestation/audit-session/v1"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIDECAR_SUFFIX: Final = ".bundle"
SUBJECT_NAME: Final = "audit.ndjson"


class Signer(Protocol):
    """Signs the statement that closes a session file; returns the sidecar's bytes."""

    def sign_statement(self, statement: bytes) -> bytes: ...


class SignatureChecker(Protocol):
    """Checks a sidecar and returns the statement bytes it verified, or raises a
    ``NonoError`` saying why not. It must not return anything it did not verify.
    ``key_id`` names the key (or identity) it trusts, for the verification result."""

    @property
    def key_id(self) -> str: ...

    def verify_statement(self, sidecar: bytes) -> bytes: ...


class _Subject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    digest: dict[str, str]


class AuditPredicate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = 1
    session: str
    count: int
    head: str
    merkle_root: str
    seal_hash: str


class Statement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                rename={"type": "_type", "predicate_type": "predicateType"}):
    type: str
    subject: tuple[_Subject, ...]
    predicate_type: str
    predicate: AuditPredicate


def session_statement(seal: Seal, seal_hash: str, file_sha256: str) -> bytes:
    """The canonical statement bytes for a sealed file."""
    statement = Statement(
        type=STATEMENT_TYPE,
        subject=(_Subject(name=SUBJECT_NAME, digest={"sha256": file_sha256}),),
        predicate_type=PREDICATE_TYPE,
        predicate=AuditPredicate(session=seal.session, count=seal.count, head=seal.head,
                                 merkle_root=seal.merkle_root, seal_hash=seal_hash),
    )
    return msgspec.json.encode(statement, order="sorted")


def decode_statement(data: bytes) -> Statement:
    statement = msgspec.json.decode(data, type=Statement)
    if statement.type != STATEMENT_TYPE or statement.predicate_type != PREDICATE_TYPE:
        raise ValueError(f"not an audit-session statement ({statement.predicate_type!r})")
    return statement


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature is computed over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


# --------------------------------------------------------------------- the bundle's shape


class _DsseSignature(msgspec.Struct, frozen=True, kw_only=True):
    sig: str
    keyid: str = ""


class _Envelope(msgspec.Struct, frozen=True, kw_only=True,
                rename={"payload_type": "payloadType"}):
    payload: str
    payload_type: str
    signatures: tuple[_DsseSignature, ...]


class _PublicKeyHint(msgspec.Struct, frozen=True, kw_only=True):
    hint: str


class _Material(msgspec.Struct, frozen=True, kw_only=True,
                rename={"public_key": "publicKey"}):
    public_key: _PublicKeyHint


class _Bundle(msgspec.Struct, frozen=True, kw_only=True,
              rename={"media_type": "mediaType", "verification_material":
                      "verificationMaterial", "dsse_envelope": "dsseEnvelope"}):
    media_type: str
    verification_material: _Material
    dsse_envelope: _Envelope


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: how nono names a key."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _require_p256(curve_name: str) -> None:
    if curve_name != "secp256r1":
        raise AuditError(f"audit signing needs an ECDSA P-256 key, not {curve_name}",
                         hint="generate one with `nonoctl trust keygen`")


@final
class EcdsaP256Signer:
    """Signs with an ECDSA P-256 private key held in memory; writes a bundle."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        _require_p256(private_key.curve.name)
        self._key = private_key
        self.key_id = key_id(private_key.public_key())

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> EcdsaP256Signer:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            raise AuditError("the audit signing key could not be loaded") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AuditError("the audit signing key is not an ECDSA key")
        return cls(key)

    def __repr__(self) -> str:
        return f"EcdsaP256Signer(key_id={self.key_id[:16]}...)"

    def sign_statement(self, statement: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        signature = self._key.sign(pae(PAYLOAD_TYPE, statement), ec.ECDSA(hashes.SHA256()))
        return _encode_bundle(statement, signature, self.key_id)


def _encode_bundle(statement: bytes, signature: bytes, signer_id: str) -> bytes:
    bundle = _Bundle(
        media_type=BUNDLE_MEDIA_TYPE,
        verification_material=_Material(public_key=_PublicKeyHint(hint=signer_id)),
        dsse_envelope=_Envelope(
            payload=base64.b64encode(statement).decode(),
            payload_type=PAYLOAD_TYPE,
            signatures=(_DsseSignature(sig=base64.b64encode(signature).decode(),
                                       keyid=signer_id),),
        ),
    )
    return msgspec.json.encode(bundle, order="sorted") + b"\n"


class RawSigningKey(Protocol):
    """A key that signs raw messages (ECDSA P-256, SHA-256, DER signatures) and names itself
    by ``fingerprint`` (hex SHA-256 of its DER SPKI): ``nonod.trust.SigningKey``."""

    @property
    def fingerprint(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@final
class KeySigner:
    """Signs with a key held by the trust key store (keychain or ``file://`` ref), writing the
    same bundle as :class:`EcdsaP256Signer`; the private key never leaves its holder."""

    def __init__(self, key: RawSigningKey) -> None:
        self._key = key
        self.key_id = key.fingerprint

    def __repr__(self) -> str:
        return f"KeySigner(key_id={self.key_id[:16]}...)"

    def sign_statement(self, statement: bytes) -> bytes:
        return _encode_bundle(statement, self._key.sign(pae(PAYLOAD_TYPE, statement)),
                              self.key_id)


def bundle_key_hint(sidecar: bytes) -> str | None:
    """The key id a bundle says it was signed with (unverified: to pick a key to check it
    with), or None when it is not a bundle."""
    try:
        bundle = msgspec.json.decode(sidecar, type=_Bundle)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return bundle.verification_material.public_key.hint


@final
class EcdsaP256Checker:
    """Checks bundles made by :class:`EcdsaP256Signer` against one trusted public key.

    Steps: (1) the sidecar is a bundle of the expected media type; (2) its DSSE envelope
    carries an in-toto payload and exactly one signature; (3) the signature names this key;
    (4) the signature verifies over PAE(payloadType, payload). Returns the payload; the caller
    MUST still compare it with the statement recomputed from the file.
    """

    def __init__(self, public_key: ec.EllipticCurvePublicKey) -> None:
        _require_p256(public_key.curve.name)
        self._key = public_key
        self.key_id = key_id(public_key)

    @classmethod
    def from_der(cls, data: bytes) -> EcdsaP256Checker:
        return cls._load(data, pem=False)

    @classmethod
    def from_text(cls, data: bytes) -> EcdsaP256Checker:
        """From a PEM public key, or base64 DER SPKI (what ``trust export-key`` prints)."""
        if data.lstrip().startswith(b"-----BEGIN"):
            return cls.from_pem(data)
        try:
            der = base64.b64decode(b"".join(data.split()), validate=True)
        except binascii.Error as exc:
            raise AuditError("the audit verification key is neither PEM nor base64") from exc
        return cls.from_der(der)

    @classmethod
    def from_pem(cls, data: bytes) -> EcdsaP256Checker:
        return cls._load(data, pem=True)

    @classmethod
    def _load(cls, data: bytes, *, pem: bool) -> EcdsaP256Checker:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        load = serialization.load_pem_public_key if pem else serialization.load_der_public_key
        try:
            key = load(data)
        except (ValueError, TypeError) as exc:
            raise AuditError("the audit verification key could not be loaded") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise AuditError("the audit verification key is not an ECDSA key")
        return cls(key)

    def verify_statement(self, sidecar: bytes) -> bytes:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        where = SIDECAR_SUFFIX.lstrip(".")
        # (1) the bundle
        try:
            bundle = msgspec.json.decode(sidecar, type=_Bundle)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise AuditSignatureError(where, None, f"not a signature bundle: {exc}") from exc
        if bundle.media_type != BUNDLE_MEDIA_TYPE:
            raise AuditSignatureError(where, None,
                                      f"unexpected bundle media type {bundle.media_type!r}")
        envelope = bundle.dsse_envelope
        # (2) one signature over an in-toto payload
        if envelope.payload_type != PAYLOAD_TYPE:
            raise AuditSignatureError(where, None,
                                      f"unexpected payload type {envelope.payload_type!r}")
        if len(envelope.signatures) != 1:
            raise AuditSignatureError(
                where, None, f"expected exactly one signature, found {len(envelope.signatures)}")
        signature = envelope.signatures[0]
        # (3) made with this key
        if signature.keyid != self.key_id:
            raise AuditSignatureError(where, None,
                                      "signed with another key than the one trusted here")
        # (4) the signature itself
        try:
            payload = base64.b64decode(envelope.payload, validate=True)
            raw_sig = base64.b64decode(signature.sig, validate=True)
        except binascii.Error as exc:
            raise AuditSignatureError(where, None, "malformed base64 in the bundle") from exc
        try:
            self._key.verify(raw_sig, pae(envelope.payload_type, payload),
                             ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise AuditSignatureError(where, None, "the signature does not verify") from exc
        return payload
