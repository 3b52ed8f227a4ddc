"""Verification: a file (or a policy) against its bundle and the publishers the caller trusts.

The checks run in a fixed order, each passing or raising one :class:`TrustError` subclass with a
message that names the file and what was wrong. What comes back is the verified thing itself
(:class:`VerifiedFile`, or the parsed :class:`TrustPolicy`), never a boolean.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final, NoReturn, TypeVar, cast, final

from ._bundle import (
    INSTRUCTION_PREDICATE_TYPE,
    MULTI_SUBJECT_PREDICATE_TYPE,
    POLICY_PREDICATE_TYPE,
    Bundle,
    check_base_name,
    parse_bundle,
    parse_multi_statement,
    parse_statement,
    shown_name,
)
from ._errors import (
    BadBundle,
    BadSignature,
    Blocked,
    DigestMismatch,
    SubjectMismatch,
    TrustPolicyError,
    Unsigned,
    UntrustedSigner,
)
from ._keys import PublicKey
from ._policy import POLICY_FILE_NAME, Blocklist, Publisher, TrustPolicy, parse_policy

_T = TypeVar("_T")
_SHORT: Final = 16
#: Distinct keys a bundle without a key hint is tried against (nono's bundles carry one).
_MAX_UNHINTED: Final = 4
_PREDICATE_KINDS: Final = MappingProxyType(
    {
        INSTRUCTION_PREDICATE_TYPE: "an instruction file attestation",
        POLICY_PREDICATE_TYPE: "a trust policy attestation",
        MULTI_SUBJECT_PREDICATE_TYPE: "a multi-file attestation",
    }
)


class _NoPublicConstructor(type):
    """Metaclass for types that only this package may create (``Cls._create(...)``)."""

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor")

    def _create(cls: type[_T], *args: object, **kwargs: object) -> _T:
        return cast("_T", type.__call__(cls, *args, **kwargs))


@final
class VerifiedFile(metaclass=_NoPublicConstructor):
    """A file that passed every check, with the exact bytes that did.

    Only :func:`verify_file` (and the tree scan) make these. ``data`` is what was hashed and
    verified: the session must be given these bytes, never the file on disk again.
    """

    __slots__ = ("data", "fingerprint", "name", "publisher", "sha256", "signer")

    def __init__(
        self, *, name: str, data: bytes, sha256: str, signer: str, publisher: str, fingerprint: str
    ) -> None:
        self.name: Final = name
        self.data: Final = data
        self.sha256: Final = sha256
        self.signer: Final = signer
        """The key id that signed it (``predicate.signer.key_id``)."""
        self.publisher: Final = publisher
        """The name of the trust policy publisher that vouched for the key."""
        self.fingerprint: Final = fingerprint
        """Hex SHA-256 of the signing key's DER SPKI."""

    def __repr__(self) -> str:
        return (
            f"VerifiedFile(name={self.name!r}, sha256={self.sha256!r}, size={len(self.data)}, "
            f"signer={self.signer!r}, publisher={self.publisher!r})"
        )


def _short(fingerprint: str) -> str:
    return fingerprint[:_SHORT]


def _authenticate(
    parsed: Bundle,
    key_id: str,
    keyed: Sequence[Publisher],
    blocked_signers: Sequence[str],
    shown: str,
    bundle_name: str,
    name: str,
) -> tuple[Publisher, PublicKey]:
    """Steps 6 and 7 of :func:`verify_file`, shared with the multi-subject bundle: the
    publisher whose key made the bundle's signature, or the error saying why there is none.
    ``shown`` names what was signed in messages, ``name`` goes into the error."""
    # (6) The signer is a publisher the caller trusts, and is not blocklisted. The key id picks
    #     the publishers; the (unauthenticated) hint, when present, must be one of their keys.
    if key_id in blocked_signers:
        raise Blocked(f"{shown} is signed by {key_id[:80]!r}, which is on the blocklist", name=name)
    candidates = [(p, p.key()) for p in keyed if p.key_id == key_id]
    if not candidates:
        raise UntrustedSigner(
            f"{shown} is signed by {key_id[:80]!r}, which is not a trusted publisher",
            name=name,
            hint="add its public key to the trust policy's publishers, or re-sign with a "
            "trusted key",
        )
    if parsed.hint is None and len({k.fingerprint for _, k in candidates}) > _MAX_UNHINTED:
        raise UntrustedSigner(
            f"{shown} is signed by {key_id[:80]!r} without a key hint, and "
            f"{len(candidates)} publishers have that key id: it is checked against at most "
            f"{_MAX_UNHINTED} keys",
            name=name,
            hint="re-sign it with `nonoctl trust sign` (its bundles name their key)",
        )
    if parsed.hint is not None:
        hinted = [(p, k) for p, k in candidates if k.fingerprint == parsed.hint.lower()]
        if not hinted:
            trusted = ", ".join(f"{p.name!r} ({_short(k.fingerprint)})" for p, k in candidates)
            raise UntrustedSigner(
                f"{shown} is signed by key {_short(parsed.hint)!r}, which no publisher trusts for "
                f"key id {key_id[:80]!r} (trusted: {trusted})",
                name=name,
                hint="someone else signed it with a key of the same name; re-sign with yours",
            )
        candidates = hinted

    # (7) The signature verifies over PAE(payloadType, payload) with that publisher's key.
    message = parsed.envelope.pae()
    signer: tuple[Publisher, PublicKey] | None = None
    tried: set[str] = set()
    for publisher, key in candidates:
        if key.fingerprint in tried:  # the same key under several publishers: once
            continue
        tried.add(key.fingerprint)
        try:
            key.verify(parsed.envelope.signature.sig, message)
        except BadSignature:
            continue
        signer = (publisher, key)
        break
    if signer is None:
        raise BadSignature(
            f"{bundle_name}: the signature does not verify with the key of publisher "
            f"{candidates[0][0].name!r}; the bundle was modified or signed over other bytes",
            name=name,
        )
    publisher, key = signer
    if key.fingerprint in {identity.lower() for identity in blocked_signers}:
        raise Blocked(
            f"{shown} is signed by a blocklisted key ({_short(key.fingerprint)})", name=name
        )
    return publisher, key


def _check(
    data: bytes,
    name: str,
    bundle: bytes | None,
    *,
    publishers: Sequence[Publisher],
    blocklist: Blocklist,
    predicate_type: str,
) -> VerifiedFile:
    """The checklist shared by files and policies. See :func:`verify_file` for the steps."""
    # (0) Something must be trusted: an empty allowlist is misuse, not "allow nothing quietly".
    keyed = [p for p in publishers if p.keyed]
    if not keyed:
        raise TrustPolicyError(
            "the trust policy has no keyed publisher, so nothing can be trusted",
            name=name,
            hint="add your key with `nonoctl trust init` / `nonoctl trust export-key`",
        )

    # (1) The name being verified is a base name: subjects never carry paths.
    try:
        check_base_name(name)
    except ValueError as exc:
        raise SubjectMismatch(f"cannot verify {name[:80]!r}: {exc}", name=name) from None

    shown = shown_name(name)

    # (2) A blocklisted digest is refused before anything else, whatever the signature says.
    sha256 = hashlib.sha256(data).hexdigest()
    blocked = next((d for d in blocklist.digests if d.sha256.lower() == sha256), None)
    blocked_signers = [p.identity for p in blocklist.publishers if p.repository is None]
    if blocked is not None:
        raise Blocked(
            f"{shown} is on the trust policy's blocklist (sha256 {sha256}): "
            f"{blocked.description or 'no reason given'}",
            name=name,
        )

    # (3) There is a bundle.
    bundle_name = f"{shown}.bundle"
    if bundle is None:
        raise Unsigned(
            f"{shown} is not signed (no {bundle_name})",
            name=name,
            hint=f"sign it with `nonoctl trust sign {shown}`",
        )

    # (4) The bundle is a well-formed keyed v0.3 bundle with an in-toto DSSE envelope.
    # (5) Its statement has one subject and the expected predicate type.
    try:
        parsed = parse_bundle(bundle)
        statement = parse_statement(parsed.envelope.payload)
    except BadBundle as exc:
        raise BadBundle(
            f"{bundle_name}: {exc.message}",
            name=name,
            hint="the bundle may have been corrupted or modified; re-sign the file",
        ) from None
    if statement.predicate_type != predicate_type:
        kind = _PREDICATE_KINDS.get(statement.predicate_type, repr(statement.predicate_type[:80]))
        raise BadBundle(
            f"{bundle_name}: wrong bundle type: expected {_PREDICATE_KINDS[predicate_type]}, "
            f"got {kind}",
            name=name,
        )

    publisher, key = _authenticate(parsed, statement.key_id, keyed, blocked_signers, shown,
                                   bundle_name, name)
    key_id = statement.key_id

    # (8) The (now authenticated) subject is this file's name, and is a base name.
    subject = statement.subject
    try:
        check_base_name(subject.name)
    except ValueError as exc:
        raise SubjectMismatch(
            f"{bundle_name}: subject name {subject.name[:80]!r} is not a file name: {exc}",
            name=name,
        ) from None
    if subject.name != name:
        raise SubjectMismatch(
            f"{bundle_name} attests {subject.name[:80]!r}, not {shown!r} "
            "(subject mismatch: a bundle for another file?)",
            name=name,
        )

    # (9) The attested digest is the digest of these bytes.
    if subject.sha256 != sha256:
        raise DigestMismatch(
            f"{shown} has been modified since it was signed (digest mismatch: signed "
            f"{_short(subject.sha256)}..., found {_short(sha256)}...)",
            name=name,
            hint=f"restore the signed content, or review it and re-sign: "
            f"`nonoctl trust sign {shown}`",
        )

    return VerifiedFile._create(
        name=name,
        data=data,
        sha256=sha256,
        signer=key_id,
        publisher=publisher.name,
        fingerprint=key.fingerprint,
    )


def verify_file(data: bytes, name: str, bundle: bytes | None, policy: TrustPolicy) -> VerifiedFile:
    """Verify one file's bytes against its ``.bundle`` and a trust policy.

    ``name`` is the file's base name as the program will open it; ``bundle`` the sidecar's bytes
    (``None`` if there is none). ``policy`` is required: use the merged policy of
    ``merge_policies``. The steps, each raising the error named:

    0. the policy has a keyed publisher (else :class:`TrustPolicyError`);
    1. ``name`` is a base name (:class:`SubjectMismatch`);
    2. the file's SHA-256 is not blocklisted (:class:`Blocked`, in every enforcement mode);
    3. there is a bundle (:class:`Unsigned`);
    4. the bundle is at most 1 MiB of JSON with the v0.3 media type, a public-key hint and a DSSE
       envelope of type ``application/vnd.in-toto+json`` with valid base64 (:class:`BadBundle`);
    5. its in-toto statement has one subject and the instruction-file predicate
       (:class:`BadBundle`);
    6. the signer's key id belongs to a keyed publisher, the key hint is that publisher's key,
       and neither is blocklisted (:class:`UntrustedSigner`, :class:`Blocked`);
    7. the DSSE signature verifies with the publisher's key (:class:`BadSignature`);
    8. the attested subject name is ``name`` and contains no path separator
       (:class:`SubjectMismatch`);
    9. the attested digest is the file's (:class:`DigestMismatch`).

    The caller MUST still apply the policy's enforcement mode to failures and MUST give the
    program the returned ``data``, not re-read the file.
    """
    return _check(
        data,
        name,
        bundle,
        publishers=policy.publishers,
        blocklist=policy.blocklist,
        predicate_type=INSTRUCTION_PREDICATE_TYPE,
    )


MULTI_SUBJECT_BUNDLE: Final = ".nono-trust.bundle"
"""nono's one bundle for many files (``nono trust sign --multi-subject``), read at the top
of the scan root; its subjects are paths relative to that directory."""


@final
class VerifiedManifest(metaclass=_NoPublicConstructor):
    """A multi-subject bundle whose signature verified with a trusted publisher's key: the
    digest each of its subjects was signed with, nothing about the files yet.

    Only :func:`verify_manifest` makes these; :func:`verify_subject` checks one file
    against it.
    """

    __slots__ = ("fingerprint", "publisher", "signer", "subjects")

    def __init__(self, *, subjects: Mapping[str, str], signer: str, publisher: str,
                 fingerprint: str) -> None:
        self.subjects: Final = subjects
        """Canonical relative path (``_bundle.check_subject_path``) to hex SHA-256, in the
        bundle's order."""
        self.signer: Final = signer
        self.publisher: Final = publisher
        self.fingerprint: Final = fingerprint

    def __repr__(self) -> str:
        return (f"VerifiedManifest(subjects={len(self.subjects)}, signer={self.signer!r}, "
                f"publisher={self.publisher!r})")


def verify_manifest(bundle: bytes, policy: TrustPolicy) -> VerifiedManifest:
    """Verify nono's multi-subject bundle (``.nono-trust.bundle``) as a whole.

    The steps of :func:`verify_file` that concern the bundle, each raising the error named:

    0. the policy has a keyed publisher (:class:`TrustPolicyError`);
    4. the bundle is a well-formed keyed v0.3 bundle of at most 1 MiB (:class:`BadBundle`);
    5. its statement carries the multi-file predicate and 1 to 1,000 subjects, each a
       relative path inside the bundle's directory (no absolute path, no ``..``) with a
       SHA-256, no path twice (:class:`BadBundle`: one bad subject refuses them all);
    6. the signer's key id and key hint are a trusted publisher's and not blocklisted
       (:class:`UntrustedSigner`, :class:`Blocked`);
    7. the signature verifies with that key (:class:`BadSignature`).

    One signature covers every subject: the caller MUST still check each file with
    :func:`verify_subject` (its digest, the digest blocklist) and give the program the
    bytes that passed.
    """
    shown = MULTI_SUBJECT_BUNDLE
    # (0) As for a single file: an empty allowlist is misuse.
    keyed = [p for p in policy.publishers if p.keyed]
    if not keyed:
        raise TrustPolicyError(
            "the trust policy has no keyed publisher, so nothing can be trusted",
            name=shown,
            hint="add your key with `nonoctl trust init` / `nonoctl trust export-key`",
        )
    # (4) (5) The shape, the predicate and the subject list.
    try:
        parsed = parse_bundle(bundle)
        statement = parse_multi_statement(parsed.envelope.payload)
    except BadBundle as exc:
        raise BadBundle(
            f"{shown}: {exc.message}",
            name=shown,
            hint="the bundle may have been corrupted or modified; sign the files again",
        ) from None
    if statement.predicate_type != MULTI_SUBJECT_PREDICATE_TYPE:
        kind = _PREDICATE_KINDS.get(statement.predicate_type, repr(statement.predicate_type[:80]))
        raise BadBundle(
            f"{shown}: wrong bundle type: expected a multi-file attestation, got {kind}",
            name=shown,
        )
    # (6) (7) Who signed it, and that they did.
    blocked_signers = [p.identity for p in policy.blocklist.publishers if p.repository is None]
    publisher, key = _authenticate(parsed, statement.key_id, keyed, blocked_signers, shown,
                                   shown, shown)
    return VerifiedManifest._create(
        subjects=MappingProxyType({s.name: s.sha256 for s in statement.subjects}),
        signer=statement.key_id,
        publisher=publisher.name,
        fingerprint=key.fingerprint,
    )


def verify_subject(manifest: VerifiedManifest, data: bytes, path: str,
                   policy: TrustPolicy) -> VerifiedFile:
    """Verify one file's bytes against the verified multi-subject bundle that names it.

    ``path`` is the file's canonical path relative to the bundle's directory, a key of
    ``manifest.subjects``. The steps (numbered as in :func:`verify_file`):

    1. ``path`` is one of the bundle's subjects (:class:`SubjectMismatch`);
    2. the file's SHA-256 is not blocklisted (:class:`Blocked`, in every mode);
    9. the signed digest is the file's (:class:`DigestMismatch`).

    The caller MUST give the program the returned ``data``.
    """
    shown = shown_name(path)
    # (1) The bundle names this path.
    expected = manifest.subjects.get(path)
    if expected is None:
        raise SubjectMismatch(f"{MULTI_SUBJECT_BUNDLE} does not name {shown}", name=path)
    # (2) The digest blocklist, as for a file signed alone.
    sha256 = hashlib.sha256(data).hexdigest()
    blocked = next((d for d in policy.blocklist.digests if d.sha256.lower() == sha256), None)
    if blocked is not None:
        raise Blocked(
            f"{shown} is on the trust policy's blocklist (sha256 {sha256}): "
            f"{blocked.description or 'no reason given'}",
            name=path,
        )
    # (9) The signed digest is this file's.
    if expected != sha256:
        raise DigestMismatch(
            f"{shown} has been modified since it was signed in {MULTI_SUBJECT_BUNDLE} "
            f"(digest mismatch: signed {_short(expected)}..., found {_short(sha256)}...)",
            name=path,
            hint="restore the signed content, or review it and sign the files again",
        )
    return VerifiedFile._create(
        name=path.rsplit("/", 1)[-1],
        data=data,
        sha256=sha256,
        signer=manifest.signer,
        publisher=manifest.publisher,
        fingerprint=manifest.fingerprint,
    )


def load_policy(
    data: bytes,
    bundle: bytes | None,
    *,
    trusted: TrustPolicy | Sequence[Publisher],
    name: str = POLICY_FILE_NAME,
) -> TrustPolicy:
    """Verify a trust policy's signature, then parse it.

    ``trusted`` is who may sign it, and never the policy itself: for a project policy, the
    user-level policy (its publishers and blocklist); for the user-level policy, publishers
    made from the daemon's own public keys (``publisher_for_key``). The checks are those of
    :func:`verify_file`, with the trust-policy predicate; a modified policy fails at step 9.
    The result carries the signing key's fingerprint in ``signed_by``.
    """
    if isinstance(trusted, TrustPolicy):
        if trusted.sha256 is not None and trusted.sha256 == hashlib.sha256(data).hexdigest():
            raise TrustPolicyError(
                f"{name}: a trust policy cannot vouch for itself; verify it against the "
                "user-level policy or the daemon's keys",
                name=name,
            )
        publishers: Sequence[Publisher] = trusted.publishers
        blocklist = trusted.blocklist
    else:
        publishers = trusted
        blocklist = Blocklist(digests=())
    if bundle is None:
        raise TrustPolicyError(
            f"{name} is not signed (no {name}.bundle)",
            name=name,
            hint="sign it with `nonoctl trust sign-policy`",
        )
    verified = _check(
        data,
        name,
        bundle,
        publishers=publishers,
        blocklist=blocklist,
        predicate_type=POLICY_PREDICATE_TYPE,
    )
    policy = parse_policy(verified.data, source=name)
    return dataclasses.replace(policy, signed_by=verified.fingerprint)
