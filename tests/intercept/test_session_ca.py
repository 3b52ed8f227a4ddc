"""The session CA: real TLS handshakes (OpenSSL on both sides, over a socket pair) between a
client that trusts only the session CA and a server context of :class:`SessionCA`."""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nonod.credentials import SessionCA, session_trust


def _client(ca: SessionCA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca.cert_pem().decode())
    return context


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str
                     ) -> x509.Certificate:
    """Run both handshakes over a socket pair; the certificate the client accepted."""
    a, b = trio.socket.socketpair()
    server_side = trio.SSLStream(trio.SocketStream(a), server, server_side=True)
    client_side = trio.SSLStream(trio.SocketStream(b), client, server_hostname=name)
    async def serve() -> None:
        try:
            await server_side.do_handshake()
        except trio.BrokenResourceError:
            pass  # the client refused: its own error is what the test looks at

    failure: trio.BrokenResourceError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            await client_side.do_handshake()
        except trio.BrokenResourceError as exc:
            failure = exc
            await trio.aclose_forcefully(client_side)  # the server sees the end too
    if failure is not None:
        raise failure
    der = client_side.getpeercert(binary_form=True)
    assert der is not None
    await client_side.aclose()
    await server_side.aclose()
    return x509.load_der_x509_certificate(der)


async def test_a_client_that_trusts_the_session_ca_accepts_its_leaf() -> None:
    ca = SessionCA(["api.github.com", "github.com"])
    leaf = await _handshake(ca.server_context("API.github.com"), _client(ca), "api.github.com")
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        x509.SubjectAlternativeName([x509.DNSName("api.github.com")])
    assert ca.server_context("api.github.com") is ca.server_context("api.github.com")


async def test_a_client_without_the_session_ca_refuses_the_leaf() -> None:
    ca = SessionCA(["api.github.com"])
    client = ssl.create_default_context()  # the system roots only
    with pytest.raises(trio.BrokenResourceError) as info:
        await _handshake(ca.server_context("api.github.com"), client, "api.github.com")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_leaves_are_made_only_for_the_intercepted_hosts() -> None:
    ca = SessionCA(["api.github.com"])
    with pytest.raises(ValueError, match="not an intercepted host"):
        ca.server_context("evil.example")
    with pytest.raises(ValueError):
        SessionCA([])


async def test_the_ca_cannot_vouch_for_a_host_outside_its_name_constraints() -> None:
    """Even a leaf signed with the CA's key for another name is refused by OpenSSL: the CA
    certificate's critical NameConstraints permit only the intercepted hosts. (The leaf is
    forged here with the key taken from inside the object, which nothing else ever does.)"""
    ca = SessionCA(["api.github.com"])
    cert = x509.load_pem_x509_certificate(ca.cert_pem())
    constraints = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("api.github.com")]
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank.example")]))
            .issuer_name(cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]),
                           critical=False)
            .sign(ca._key, hashes.SHA256()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + leaf.public_bytes(
        serialization.Encoding.PEM)
    fd = os.memfd_create("test-leaf")
    try:
        os.write(fd, pem)
        server.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    with pytest.raises(trio.BrokenResourceError) as info:
        await _handshake(server, _client(ca), "bank.example")
    assert "name constraint" in str(info.value.__cause__).lower() or "permitted" in str(
        info.value.__cause__).lower()


async def test_validities_and_the_leaf_never_outlives_the_ca() -> None:
    ca = SessionCA(["api.github.com"], ca_validity=600, leaf_validity=3600)
    cert = x509.load_pem_x509_certificate(ca.cert_pem())
    now = datetime.datetime.now(datetime.UTC)
    assert 590 <= (cert.not_valid_after_utc - now).total_seconds() <= 600
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The leaf asked to live an hour ends with the CA, ten minutes from now.
    leaf = await _handshake(ca.server_context("api.github.com"), _client(ca), "api.github.com")
    assert leaf.not_valid_after_utc == cert.not_valid_after_utc


def test_the_session_trust_bundle_is_the_hosts_plus_the_ca(tmp_path: Path) -> None:
    host = tmp_path / "bundle.crt"
    host.write_bytes(b"-----BEGIN CERTIFICATE-----\nsystem\n-----END CERTIFICATE-----")
    before = host.read_bytes()
    ca = SessionCA(["api.github.com"])
    (path, data), env = session_trust(ca, str(host))
    assert path == str(host)
    assert data.startswith(before + b"\n") and data.endswith(ca.cert_pem())
    assert host.read_bytes() == before  # only read
    assert dict(env) == {name: str(host) for name in (
        "SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS")}
    assert b"PRIVATE KEY" not in data
