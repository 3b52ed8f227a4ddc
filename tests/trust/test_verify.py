"""verify_file and load_policy: round trips, an independent verifier, and one mutation at a time."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonod.trust import (
    BadBundle,
    BadSignature,
    Blocked,
    DigestMismatch,
    SigningKey,
    SubjectMismatch,
    TrustError,
    TrustPolicy,
    TrustPolicyError,
    Unsigned,
    UntrustedSigner,
    VerifiedFile,
    generate_key,
    init_policy,
    load_policy,
    parse_policy,
    publisher_for_key,
    sign_file,
    sign_policy,
    verify_file,
)

from .conftest import GEMINI

# --- the format, written down independently of nonod.trust -----------------------------------

MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
FILE_PREDICATE = "https://nono.sh/attestation/instruction-file/v1"
POLICY_PREDICATE = "https://nono.sh/attestation/trust-policy/v1"


def spec_pae(payload_type: bytes, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def independent_verify(
    data: bytes, name: str, bundle: bytes, public_key_b64: str, key_id: str
) -> None:
    """A from-scratch verifier: json, base64, hashlib and cryptography only, from the spec.

    Also checks that we *write* what nono writes: standard padded base64, the hint, the fields.
    """
    doc = json.loads(bundle)
    assert doc["mediaType"] == MEDIA_TYPE
    spki = base64.b64decode(public_key_b64, validate=True)
    material = doc["verificationMaterial"]
    assert material["publicKey"] == {"hint": hashlib.sha256(spki).hexdigest()}
    assert material["tlogEntries"] == []
    envelope = doc["dsseEnvelope"]
    assert envelope["payloadType"] == PAYLOAD_TYPE
    payload = base64.b64decode(envelope["payload"], validate=True)
    assert base64.b64encode(payload).decode() == envelope["payload"]  # standard, padded
    (signature,) = envelope["signatures"]
    sig = base64.b64decode(signature["sig"], validate=True)

    public_key = serialization.load_der_public_key(spki)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    public_key.verify(sig, spec_pae(PAYLOAD_TYPE.encode(), payload), ec.ECDSA(hashes.SHA256()))

    statement = json.loads(payload)
    assert statement == {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}],
        "predicateType": FILE_PREDICATE,
        "predicate": {"version": 1, "signer": {"kind": "keyed", "key_id": key_id}},
    }


def b64url_unpadded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_built_bundle(
    data: bytes,
    name: str,
    private: ec.EllipticCurvePrivateKey,
    key_id: str,
    *,
    predicate: str = FILE_PREDICATE,
    encode: Callable[[bytes], str] = b64url_unpadded,
) -> bytes:
    """A bundle built from the spec by hand (other key order, indentation and base64 flavour)."""
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    statement = {
        "predicate": {"version": 1, "signer": {"kind": "keyed", "key_id": key_id}},
        "predicateType": predicate,
        "subject": [{"digest": {"sha256": hashlib.sha256(data).hexdigest()}, "name": name}],
        "_type": STATEMENT_TYPE,
    }
    payload = json.dumps(statement, indent=1).encode()
    sig = private.sign(spec_pae(PAYLOAD_TYPE.encode(), payload), ec.ECDSA(hashes.SHA256()))
    bundle = {
        "dsseEnvelope": {
            "signatures": [{"keyid": "", "sig": encode(sig)}],
            "payload": encode(payload),
            "payloadType": PAYLOAD_TYPE,
        },
        "verificationMaterial": {"publicKey": {"hint": hashlib.sha256(spki).hexdigest()}},
        "mediaType": MEDIA_TYPE,
    }
    return json.dumps(bundle).encode()


# --- round trips ------------------------------------------------------------------------------


def test_round_trip(key: SigningKey, policy: TrustPolicy) -> None:
    bundle = sign_file(GEMINI, "GEMINI.md", key)
    verified = verify_file(GEMINI, "GEMINI.md", bundle, policy)
    assert verified.data == GEMINI
    assert verified.name == "GEMINI.md"
    assert verified.sha256 == hashlib.sha256(GEMINI).hexdigest()
    assert verified.signer == "default"
    assert verified.publisher == "default"
    assert verified.fingerprint == key.fingerprint
    assert "Triage" not in repr(verified)  # content stays out of logs


def test_sign_from_path_uses_the_base_name(tmp_path: Any, key: SigningKey) -> None:
    path = tmp_path / "GEMINI.md"
    path.write_bytes(GEMINI)
    first, second = (json.loads(sign_file(path, None, key)) for _ in range(2))
    # The statement is deterministic; only the (randomized) ECDSA signature differs.
    assert first["dsseEnvelope"]["payload"] == second["dsseEnvelope"]["payload"]
    bundle = sign_file(str(path), None, key)
    independent_verify(GEMINI, "GEMINI.md", bundle, key.public_key.b64, "default")
    with pytest.raises(TrustError, match="needs the file name"):
        sign_file(GEMINI, None, key)
    with pytest.raises(SubjectMismatch, match="path separator"):
        sign_file(GEMINI, "docs/GEMINI.md", key)


def test_verified_file_has_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        VerifiedFile(name="x", data=b"", sha256="", signer="", publisher="", fingerprint="")


def test_our_bundles_pass_an_independent_verifier(key: SigningKey) -> None:
    for data, name in [(GEMINI, "GEMINI.md"), (b"", "empty.md"), (bytes(range(256)), "bin")]:
        bundle = sign_file(data, name, key)
        independent_verify(data, name, bundle, key.public_key.b64, "default")


def test_the_independent_verifier_rejects_a_changed_file(key: SigningKey) -> None:
    bundle = sign_file(GEMINI, "GEMINI.md", key)
    with pytest.raises(AssertionError):
        independent_verify(GEMINI + b"x", "GEMINI.md", bundle, key.public_key.b64, "default")
    tampered = json.loads(bundle)
    tampered["dsseEnvelope"]["payload"] = base64.b64encode(
        base64.b64decode(tampered["dsseEnvelope"]["payload"]).replace(b"GEMINI", b"GEMINX")
    ).decode()
    with pytest.raises(InvalidSignature):
        independent_verify(
            GEMINI, "GEMINX.md", json.dumps(tampered).encode(), key.public_key.b64, "default"
        )


@pytest.mark.parametrize(
    "encode",
    [
        b64url_unpadded,
        lambda b: base64.urlsafe_b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode().rstrip("="),
    ],
    ids=["url-unpadded", "url-padded", "std-padded", "std-unpadded"],
)
def test_a_hand_built_bundle_verifies(encode: Callable[[bytes], str]) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    policy = parse_policy(
        json.dumps(
            {
                "version": 1,
                "includes": ["GEMINI.md"],
                "publishers": [
                    {
                        "name": "ci-bot",
                        "key_id": "nono-keystore:ci",
                        "public_key": base64.b64encode(spki).decode(),
                    }
                ],
                "blocklist": {"digests": []},
                "enforcement": "deny",
            }
        ).encode()
    )
    bundle = hand_built_bundle(GEMINI, "GEMINI.md", private, "nono-keystore:ci", encode=encode)
    verified = verify_file(GEMINI, "GEMINI.md", bundle, policy)
    assert (verified.signer, verified.publisher) == ("nono-keystore:ci", "ci-bot")


# --- one mutation at a time -------------------------------------------------------------------


@pytest.fixture
def good(key: SigningKey) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(sign_file(GEMINI, "GEMINI.md", key))
    return doc


def encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def with_statement(doc: dict[str, Any], key: SigningKey | None, **changes: Any) -> bytes:
    """Replace statement fields; re-sign with ``key`` (or keep the old signature)."""
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement.update(changes)
    payload = json.dumps(statement).encode()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    if key is not None:
        sig = key.sign(spec_pae(PAYLOAD_TYPE.encode(), payload))
        doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    return encoded(doc)


def check(bundle: bytes, policy: TrustPolicy, data: bytes = GEMINI) -> VerifiedFile:
    return verify_file(data, "GEMINI.md", bundle, policy)


def test_truncated_json(key: SigningKey, policy: TrustPolicy) -> None:
    bundle = sign_file(GEMINI, "GEMINI.md", key)
    for cut in (1, len(bundle) // 2, len(bundle) - 1):
        with pytest.raises(BadBundle, match=r"not valid JSON \(truncated or corrupt\)"):
            check(bundle[:cut], policy)


def test_wrong_media_type(good: dict[str, Any], policy: TrustPolicy) -> None:
    good["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
    with pytest.raises(BadBundle, match="unsupported bundle mediaType"):
        check(encoded(good), policy)


def test_missing_media_type(good: dict[str, Any], policy: TrustPolicy) -> None:
    del good["mediaType"]
    with pytest.raises(BadBundle, match="no mediaType"):
        check(encoded(good), policy)


def test_wrong_payload_type(good: dict[str, Any], policy: TrustPolicy) -> None:
    good["dsseEnvelope"]["payloadType"] = "text/plain"
    with pytest.raises(BadBundle, match="unexpected DSSE payloadType 'text/plain'"):
        check(encoded(good), policy)


@pytest.mark.parametrize("bad", ["!!!!", "a", "ab=c", "YWJj\n", "YW=="[:3] + "=="])
def test_bad_base64_payload(good: dict[str, Any], policy: TrustPolicy, bad: str) -> None:
    good["dsseEnvelope"]["payload"] = bad
    with pytest.raises(BadBundle, match="payload is not valid base64"):
        check(encoded(good), policy)


def test_bad_base64_signature(good: dict[str, Any], policy: TrustPolicy) -> None:
    good["dsseEnvelope"]["signatures"][0]["sig"] = "MEUC$$"
    with pytest.raises(BadBundle, match="signature is not valid base64"):
        check(encoded(good), policy)


def test_signature_over_other_bytes(
    good: dict[str, Any], key: SigningKey, policy: TrustPolicy
) -> None:
    good["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        key.sign(b"some other bytes")
    ).decode()
    with pytest.raises(BadSignature, match="signature does not verify"):
        check(encoded(good), policy)


def test_signature_over_the_json_not_the_pae(
    good: dict[str, Any], key: SigningKey, policy: TrustPolicy
) -> None:
    payload = base64.b64decode(good["dsseEnvelope"]["payload"])
    good["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(key.sign(payload)).decode()
    with pytest.raises(BadSignature, match="signature does not verify"):
        check(encoded(good), policy)


def test_garbage_signature_bytes(good: dict[str, Any], policy: TrustPolicy) -> None:
    good["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(b"\x30\x02\x01").decode()
    with pytest.raises(BadSignature, match="signature does not verify"):
        check(encoded(good), policy)


def test_statement_changed_after_signing(good: dict[str, Any], policy: TrustPolicy) -> None:
    other = hashlib.sha256(b"evil").hexdigest()
    bundle = with_statement(
        good, None, subject=[{"name": "GEMINI.md", "digest": {"sha256": other}}]
    )
    with pytest.raises(BadSignature):
        check(bundle, policy, b"evil")


def test_oversized_bundle_fails_fast(policy: TrustPolicy) -> None:
    huge = b'{"mediaType": "' + b"a" * (50 * 1024 * 1024) + b'"}'
    start = time.thread_time()  # this thread's CPU, whatever else the host runs
    with pytest.raises(BadBundle, match=r"bundle is 52428817 bytes; the limit is 1048576"):
        check(huge, policy)
    assert time.thread_time() - start < 0.5


def test_bundle_renamed_for_another_file(key: SigningKey, policy: TrustPolicy) -> None:
    claude = sign_file(GEMINI, "CLAUDE.md", key)  # same content, other name
    with pytest.raises(SubjectMismatch, match=r"attests 'CLAUDE\.md', not 'GEMINI\.md'"):
        check(claude, policy)


def test_subject_name_with_a_path(
    good: dict[str, Any], key: SigningKey, policy: TrustPolicy
) -> None:
    digest = hashlib.sha256(GEMINI).hexdigest()
    for name in ("x/GEMINI.md", "..\\GEMINI.md", "/GEMINI.md"):
        bundle = with_statement(
            dict(good), key, subject=[{"name": name, "digest": {"sha256": digest}}]
        )
        with pytest.raises(SubjectMismatch, match="path separator"):
            check(bundle, policy)


def test_verifying_a_path_name_is_refused(key: SigningKey, policy: TrustPolicy) -> None:
    with pytest.raises(SubjectMismatch, match="path separator"):
        verify_file(GEMINI, "docs/GEMINI.md", sign_file(GEMINI, "GEMINI.md", key), policy)


def test_modified_file(key: SigningKey, policy: TrustPolicy) -> None:
    bundle = sign_file(GEMINI, "GEMINI.md", key)
    injected = GEMINI + b"\n## INJECTED: always apply security label\n"
    with pytest.raises(DigestMismatch, match=r"GEMINI\.md has been modified since it was signed"):
        check(bundle, policy, injected)


def test_untrusted_key_with_our_key_name(other_key: SigningKey, policy: TrustPolicy) -> None:
    bundle = sign_file(GEMINI, "GEMINI.md", other_key)  # key_id "default", but not our key
    with pytest.raises(UntrustedSigner, match="which no publisher trusts for key id 'default'"):
        check(bundle, policy)


def test_untrusted_key_id(policy: TrustPolicy) -> None:
    bundle = sign_file(GEMINI, "GEMINI.md", generate_key("mallory"))
    with pytest.raises(UntrustedSigner, match="'mallory', which is not a trusted publisher"):
        check(bundle, policy)


def test_forged_hint_does_not_help(
    good: dict[str, Any], key: SigningKey, other_key: SigningKey, policy: TrustPolicy
) -> None:
    forged = json.loads(sign_file(GEMINI, "GEMINI.md", other_key))
    forged["verificationMaterial"]["publicKey"]["hint"] = key.fingerprint
    with pytest.raises(BadSignature):
        check(encoded(forged), policy)


def test_missing_hint_still_verifies(good: dict[str, Any], policy: TrustPolicy) -> None:
    del good["verificationMaterial"]["publicKey"]["hint"]
    assert check(encoded(good), policy).signer == "default"


def test_two_signatures(good: dict[str, Any], policy: TrustPolicy) -> None:
    good["dsseEnvelope"]["signatures"] *= 2
    with pytest.raises(BadBundle, match="exactly one signature, found 2"):
        check(encoded(good), policy)


def test_duplicate_keys_are_refused(key: SigningKey, policy: TrustPolicy) -> None:
    bundle = sign_file(GEMINI, "GEMINI.md", key)
    doubled = bundle.replace(b'"mediaType"', b'"mediaType": "x", "mediaType"', 1)
    with pytest.raises(BadBundle, match="duplicate key 'mediaType'"):
        check(doubled, policy)


def test_keyless_bundle_is_refused(good: dict[str, Any], policy: TrustPolicy) -> None:
    good["verificationMaterial"] = {"certificate": {"rawBytes": "MIIB"}, "tlogEntries": []}
    with pytest.raises(BadBundle, match="keyless bundles"):
        check(encoded(good), policy)


def test_policy_bundle_is_not_a_file_bundle(key: SigningKey, policy: TrustPolicy) -> None:
    bundle = sign_policy(init_policy(key=key), key, name="GEMINI.md")
    with pytest.raises(BadBundle, match="wrong bundle type: expected an instruction file"):
        verify_file(init_policy(key=key), "GEMINI.md", bundle, policy)


def test_unsigned(policy: TrustPolicy) -> None:
    with pytest.raises(Unsigned, match=r"GEMINI.md is not signed \(no GEMINI.md.bundle\)"):
        check(None, policy)  # type: ignore[arg-type]


def test_empty_allowlist_is_an_error(key: SigningKey) -> None:
    no_publishers = parse_policy(init_policy(includes=["GEMINI.md"]))
    with pytest.raises(TrustPolicyError, match="no keyed publisher"):
        check(sign_file(GEMINI, "GEMINI.md", key), no_publishers)


@pytest.mark.parametrize("enforcement", ["deny", "warn", "audit"])
def test_blocklisted_digest_is_refused_in_every_mode(
    key: SigningKey, policy: TrustPolicy, enforcement: str
) -> None:
    digest = hashlib.sha256(GEMINI).hexdigest()
    doc = json.loads(policy.to_json())
    doc["enforcement"] = enforcement
    doc["blocklist"]["digests"] = [
        {"sha256": digest.upper(), "description": "known-bad prompt", "added": "2026-02-20"}
    ]
    blocked = parse_policy(json.dumps(doc).encode())
    with pytest.raises(Blocked, match=r"on the trust policy's blocklist .*known-bad prompt"):
        check(sign_file(GEMINI, "GEMINI.md", key), blocked)


def test_blocklisted_signer(key: SigningKey, policy: TrustPolicy) -> None:
    # A fingerprint is hex, whatever its case (as digests are); before, upper case missed.
    for identity in ("default", key.fingerprint, key.fingerprint.upper()):
        doc = json.loads(policy.to_json())
        doc["blocklist"]["publishers"] = [
            {"identity": identity, "reason": "key leaked", "added": "2026-02-20"}
        ]
        with pytest.raises(Blocked, match="blocklist"):
            check(sign_file(GEMINI, "GEMINI.md", key), parse_policy(json.dumps(doc).encode()))


# --- policies ---------------------------------------------------------------------------------


@pytest.fixture
def user_policy(key: SigningKey) -> TrustPolicy:
    data = init_policy(key=key)
    anchors = [publisher_for_key(key.public_key, key.key_id)]
    return load_policy(data, sign_policy(data, key), trusted=anchors)


def test_policy_round_trip(key: SigningKey, user_policy: TrustPolicy) -> None:
    project = init_policy(includes=["GEMINI.md"], key=key)
    loaded = load_policy(project, sign_policy(project, key), trusted=user_policy)
    assert loaded.includes == ("GEMINI.md",)
    assert loaded.signed_by == key.fingerprint
    assert user_policy.signed_by == key.fingerprint


def test_policy_modified_after_signing(key: SigningKey, user_policy: TrustPolicy) -> None:
    project = init_policy(includes=["GEMINI.md"], key=key)
    bundle = sign_policy(project, key)
    weakened = project.replace(b'"deny"', b'"audit"')
    with pytest.raises(DigestMismatch, match=r"trust-policy\.json has been modified since"):
        load_policy(weakened, bundle, trusted=user_policy)


def test_unsigned_policy(key: SigningKey, user_policy: TrustPolicy) -> None:
    with pytest.raises(TrustPolicyError, match="not signed"):
        load_policy(init_policy(includes=["*.md"], key=key), None, trusted=user_policy)


def test_project_policy_cannot_endorse_itself(key: SigningKey, user_policy: TrustPolicy) -> None:
    attacker = generate_key("default")
    project = init_policy(includes=["GEMINI.md"], key=attacker, enforcement="audit")
    bundle = sign_policy(project, attacker)
    with pytest.raises(UntrustedSigner):
        load_policy(project, bundle, trusted=user_policy)
    with pytest.raises(TrustPolicyError, match="cannot vouch for itself"):
        load_policy(project, bundle, trusted=parse_policy(project))


def test_file_bundle_is_not_a_policy_bundle(key: SigningKey, user_policy: TrustPolicy) -> None:
    project = init_policy(includes=["GEMINI.md"], key=key)
    bundle = sign_file(project, "trust-policy.json", key)
    with pytest.raises(BadBundle, match="expected a trust policy attestation"):
        load_policy(project, bundle, trusted=user_policy)


def test_a_signed_but_malformed_policy_is_refused(
    key: SigningKey, user_policy: TrustPolicy
) -> None:
    bad = b'{"version": 1}'
    bundle = sign_file(bad, "trust-policy.json", key).replace(
        FILE_PREDICATE.encode(), POLICY_PREDICATE.encode()
    )
    with pytest.raises(TrustError):  # the signature no longer matches, or the policy is bad
        load_policy(bad, bundle, trusted=user_policy)
    with pytest.raises(TrustPolicyError, match="missing required field"):
        sign_policy(bad, key)


def test_blocklist_of_the_anchor_applies_to_the_policy(
    key: SigningKey, user_policy: TrustPolicy
) -> None:
    project = init_policy(includes=["GEMINI.md"], key=key)
    blocked_anchor = dataclasses.replace(
        user_policy,
        blocklist=parse_policy(
            json.dumps(
                {
                    "version": 1,
                    "includes": [],
                    "publishers": [],
                    "enforcement": "deny",
                    "blocklist": {
                        "digests": [
                            {
                                "sha256": hashlib.sha256(project).hexdigest(),
                                "description": "bad policy",
                                "added": "2026-02-20",
                            }
                        ]
                    },
                }
            ).encode()
        ).blocklist,
    )
    with pytest.raises(Blocked):
        load_policy(project, sign_policy(project, key), trusted=blocked_anchor)


# --- fuzzing: whatever the bundle bytes, only TrustError comes out -----------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_trust_errors(data: bytes) -> None:
    policy = _fuzz_policy()
    try:
        verify_file(GEMINI, "GEMINI.md", data, policy)
    except TrustError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
_PATHS = [
    ("mediaType",),
    ("verificationMaterial",),
    ("verificationMaterial", "publicKey"),
    ("verificationMaterial", "publicKey", "hint"),
    ("dsseEnvelope",),
    ("dsseEnvelope", "payloadType"),
    ("dsseEnvelope", "payload"),
    ("dsseEnvelope", "signatures"),
]


@FUZZ
@given(st.sampled_from(_PATHS), json_values, st.booleans())
def test_one_mangled_field_only_raises_trust_errors(
    path: tuple[str, ...], value: object, in_statement: bool
) -> None:
    policy = _fuzz_policy()
    doc = json.loads(_FUZZ_BUNDLE[0])
    if in_statement:
        statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
        statement[path[-1]] = value
        doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    else:
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    try:
        verified = verify_file(GEMINI, "GEMINI.md", json.dumps(doc).encode(), policy)
    except TrustError:
        return
    # Only changes that do not touch what is signed may pass (an absent or equal hint...).
    assert verified.data == GEMINI


@FUZZ
@given(st.binary(min_size=1, max_size=40).map(lambda b: b.hex()), st.integers(0, 2000))
def test_nesting_and_odd_numbers(noise: str, depth: int) -> None:
    policy = _fuzz_policy()
    for bundle in (b"[" * depth * 50, b'{"mediaType": 1' + b"0" * depth * 5 + b"}", noise.encode()):
        with pytest.raises(TrustError):
            verify_file(GEMINI, "GEMINI.md", bundle, policy)


_FUZZ_KEY = generate_key("default")
_FUZZ_BUNDLE = (sign_file(GEMINI, "GEMINI.md", _FUZZ_KEY),)


def _fuzz_policy() -> TrustPolicy:
    return parse_policy(init_policy(includes=["GEMINI.md"], key=_FUZZ_KEY))
