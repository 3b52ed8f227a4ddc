"""The envelope sink: each sealed session once, signed, POSTed over HTTPS; and the
receiver's check, ``nonoctl audit verify --envelope``."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nonod.audit import (
    AuditSignatureError,
    AuditVerifyError,
    EcdsaP256Checker,
    EcdsaP256Signer,
    Event,
    SessionEnded,
    build_envelope,
    verify_envelope,
)
from nonod.audit._envelope import MEDIA_TYPE
from nonod.shipping import Exporter, LaneSettings
from nonod.shipping._envelope import EnvelopeSink

from ..conftest import REPO
from ._export_support import HttpReceiver, audit_lines, wait_until
from ._support import write_session

FAST = LaneSettings(retry_min=0.01, retry_max=0.05, poll_interval=0.05, linger=0)


def _pem(key: ec.EllipticCurvePrivateKey, where: Path) -> Path:
    where.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return where


def _verify_cli(tmp: Path, envelope: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "config"),
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nonoctl", "audit", "verify", "--envelope",
                           str(envelope), *args], capture_output=True, text=True, env=env,
                          cwd=tmp, timeout=60, check=False)


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def test_sealed_sessions_arrive_signed_once_and_verify(
        tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    state = tmp_path / "state"
    await write_session(state, session="dddd0001")
    await write_session(state, session="dddd0002", seal=False)  # live: not shipped yet
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    plane = HttpReceiver()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(plane.serve, server_ctx)
        sink = EnvelopeSink("plane", f"https://127.0.0.1:{port}/v1/envelopes",
                            signer=EcdsaP256Signer(key), ssl_context=client_ctx)
        exporter = Exporter(state, [(sink, FAST)])
        await nursery.start(exporter.run)
        await wait_until(lambda: not exporter.undelivered(["dddd0001"]), what="the envelope")
        # One more pass over both sessions, then check nothing else was sent.
        exporter.wake()
        await wait_until(lambda: exporter.statistics()["plane"].pending_sessions == 1,
                         what="a pass")
        nursery.cancel_scope.cancel()
    assert plane.requests is not None and len(plane.requests) == 1
    request = plane.requests[0]
    assert request.target == "/v1/envelopes"
    assert request.headers["content-type"] == MEDIA_TYPE
    envelope = json.loads(request.body)
    assert request.headers["idempotency-key"] == envelope["id"] == \
        f"dddd0001:{envelope['seal_hash']}"
    stored = audit_lines(state / "sessions" / "dddd0001" / "audit.ndjson")
    assert [line.encode() for line in envelope["records"]] == stored
    result = verify_envelope(request.body, checker=EcdsaP256Checker(key.public_key()))
    assert (result.session, result.count, result.signature) == ("dddd0001", 9, "verified")

    # The receiver's command line: verified with the key, tampering and other keys refused.
    saved = tmp_path / "envelope.json"
    saved.write_bytes(request.body)
    pub = _pem(key, tmp_path / "audit.pub")
    done = _verify_cli(tmp_path, saved, "--key", str(pub))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK envelope dddd0001: 9 events, merkle root ")
    assert "signature verified" in done.stdout
    unchecked = _verify_cli(tmp_path, saved)
    assert unchecked.returncode == 0 and "signature unchecked" in unchecked.stdout
    other = _pem(ec.generate_private_key(ec.SECP256R1()), tmp_path / "other.pub")
    refused = _verify_cli(tmp_path, saved, "--key", str(other))
    assert refused.returncode == 1 and "another key" in refused.stderr

    envelope["records"][3] = envelope["records"][3].replace("api.github.com",
                                                            "api.github.org")
    saved.write_text(json.dumps(envelope))
    tampered = _verify_cli(tmp_path, saved, "--key", str(pub))
    assert tampered.returncode == 1 and "line 4" in tampered.stderr


def test_an_envelope_with_a_dropped_record_or_a_forged_summary_fails(
        key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    lines = trio.run(_lines, tmp_path / "a", None)
    good = json.loads(build_envelope("eeee0001", lines, EcdsaP256Signer(key)))
    checker = EcdsaP256Checker(key.public_key())

    dropped = dict(good, records=good["records"][:3] + good["records"][4:])
    with pytest.raises(AuditVerifyError, match="line 4"):
        verify_envelope(json.dumps(dropped).encode(), checker=checker)
    forged = dict(good, merkle_root="00" * 32)
    with pytest.raises(AuditVerifyError, match="merkle_root does not match"):
        verify_envelope(json.dumps(forged).encode(), checker=checker)
    # A valid signature of another session's envelope does not carry over.
    short = [SessionEnded(reason="exited", exit_code=0, duration_ms=1.0)]
    other = json.loads(build_envelope("eeee0001", trio.run(_lines, tmp_path / "b", short),
                                      EcdsaP256Signer(key)))
    swapped = dict(good, signature=other["signature"])
    with pytest.raises(AuditSignatureError, match="other content"):
        verify_envelope(json.dumps(swapped).encode(), checker=checker)


async def _lines(tmp: Path, events: list[Event] | None) -> list[bytes]:
    return audit_lines(await write_session(tmp / "state", session="eeee0001", events=events))
