"""Our bundles, read by sigstore-python (a test-only dependency): valid Sigstore v0.3 bundles.

sigstore-python parses bundles with the protobuf-specs model (``sigstore_models``), which is
where the v0.3 format is checked. Its ``sigstore.models.Bundle`` adds the *keyless* verifier's
invariants on top (a Fulcio certificate, one transparency log entry); keyed bundles, nono's
included, cannot meet them by design, and the test pins down that this is the only objection.
"""

from __future__ import annotations

import pytest

from nonod.trust import SigningKey, init_policy, sign_file, sign_files, sign_policy

from .conftest import GEMINI

bundle_v1 = pytest.importorskip("sigstore_models.bundle.v1")
dsse = pytest.importorskip("sigstore.dsse")
sigstore_models = pytest.importorskip("sigstore.models")


def test_bundle_parses_as_a_v03_bundle(key: SigningKey) -> None:
    bundle = bundle_v1.Bundle.from_json(sign_file(GEMINI, "GEMINI.md", key))
    assert bundle.media_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle.verification_material.public_key.hint == key.fingerprint
    assert bundle.verification_material.certificate is None
    assert bundle.message_signature is None
    assert bundle.dsse_envelope.payload_type == "application/vnd.in-toto+json"
    assert len(bundle.dsse_envelope.signatures) == 1


@pytest.mark.parametrize("kind", ["file", "policy", "multi"])
def test_sigstore_verifies_our_dsse_signature(key: SigningKey, kind: str) -> None:
    if kind == "file":
        raw = sign_file(GEMINI, "GEMINI.md", key)
    elif kind == "multi":
        raw = sign_files([("GEMINI.md", GEMINI), ("skills/SKILL.md", b"# skill\n")], key)
    else:
        raw = sign_policy(init_policy(includes=["GEMINI.md"], key=key), key)
    envelope = dsse.Envelope(bundle_v1.Bundle.from_json(raw).dsse_envelope)
    verify = getattr(dsse, "_verify", None)
    if verify is None:
        pytest.skip("this sigstore version has no dsse._verify")
    payload = verify(key.public_key._key, envelope)
    statement = dsse.Statement(payload)
    subject = statement._inner.subjects[0]
    assert subject.name == ("trust-policy.json" if kind == "policy" else "GEMINI.md")
    if kind == "multi":
        assert [s.name for s in statement._inner.subjects] == ["GEMINI.md", "skills/SKILL.md"]
    assert statement._inner.predicate_type.startswith("https://nono.sh/attestation/")


def test_sigstore_rejects_a_tampered_envelope(key: SigningKey, other_key: SigningKey) -> None:
    envelope = dsse.Envelope(
        bundle_v1.Bundle.from_json(sign_file(GEMINI, "GEMINI.md", other_key)).dsse_envelope
    )
    verify = getattr(dsse, "_verify", None)
    if verify is None:
        pytest.skip("this sigstore version has no dsse._verify")
    with pytest.raises(Exception, match="invalid signature"):
        verify(key.public_key._key, envelope)


def test_only_keyless_invariants_stop_sigstores_bundle_class(key: SigningKey) -> None:
    with pytest.raises(sigstore_models.InvalidBundle, match="expected certificate in bundle"):
        sigstore_models.Bundle.from_json(sign_file(GEMINI, "GEMINI.md", key))
