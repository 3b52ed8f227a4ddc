"""Audit seals signed through the trust key store's keys (``KeySigner``), and the ways
``nonoctl audit verify --key`` reads a public key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from nonod import trust
from nonod.audit import (
    AuditError,
    AuditSignatureError,
    EcdsaP256Checker,
    KeySigner,
    bundle_key_hint,
    read_lines,
    verify_session_file,
)

from ._support import write_session


async def test_a_trust_key_signs_a_bundle_the_checker_verifies(tmp_path: Path) -> None:
    key = trust.generate_key("audit")
    signer = KeySigner(key)
    assert signer.key_id == key.fingerprint and "audit" not in repr(signer)
    path = await write_session(tmp_path / "state", signer=signer)
    sidecar = path.with_name(path.name + ".bundle").read_bytes()
    assert bundle_key_hint(sidecar) == key.fingerprint

    by_pem = EcdsaP256Checker.from_text(key.public_key.pem.encode())
    by_b64 = EcdsaP256Checker.from_text(trust.export_public_key(key).encode() + b"\n")
    for checker in (by_pem, by_b64):
        result = verify_session_file(path, checker=checker)
        assert result.signature == "verified" and result.signer == key.fingerprint

    other = trust.generate_key("other")
    with pytest.raises(AuditSignatureError, match="signed with another key"):
        verify_session_file(path, checker=EcdsaP256Checker.from_text(other.public_key.pem.encode()))


def test_verification_keys_that_are_not_keys() -> None:
    with pytest.raises(AuditError, match="neither PEM nor base64"):
        EcdsaP256Checker.from_text(b"not a key!")
    with pytest.raises(AuditError, match="could not be loaded"):
        EcdsaP256Checker.from_text(base64.b64encode(b"\x30\x03\x02\x01\x00"))
    assert bundle_key_hint(b"{}") is None


async def test_read_lines_gives_the_stored_bytes(tmp_path: Path) -> None:
    path = await write_session(tmp_path / "state")
    stored = path.read_bytes().splitlines()
    lines = read_lines(path)
    assert [raw for _, raw in lines] == stored
    assert [record.seq for record, _ in lines] == list(range(1, len(stored) + 1))
    assert lines[-1][0].kind == "seal"
