"""The per-session certificate authority of TLS interception (``docs/network.md``).

One :class:`SessionCA` per session that intercepts: an ECDSA P-256 key made in memory and
never serialised, a self-signed CA certificate that may only vouch for the session's
intercepted hosts (a critical ``NameConstraints`` extension: OpenSSL refuses a leaf of this CA
for any other name), and a short-lived leaf certificate per intercepted host, made on first
use and kept for the session. Only the CA *certificate* leaves this object (it goes into the
session's trust bundle); the CA key is dropped with the object when the session ends.

``ssl.SSLContext.load_cert_chain`` reads files only: a leaf's key and certificate are handed
to it through a memfd (anonymous memory, no file system) that is closed right after.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable
from typing import Final, final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: nono's defaults: a CA for a day, leaves for an hour (capped by the CA's own expiry).
CA_VALIDITY: Final = 24 * 3600
LEAF_VALIDITY: Final = 3600
#: The trust bundle a session reads (Debian's, which OpenSSL, curl, git and Python use): the
#: session's view gets the host's bundle plus the session CA at this path, and the variables
#: below point there for programs that look elsewhere by default.
TRUST_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"
BUNDLE_VARIABLES: Final = ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
                           "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
#: Clock skew allowance: certificates start being valid a little in the past.
_BACKDATE: Final = datetime.timedelta(minutes=5)


@final
class SessionCA:
    """A CA for ``hosts`` (exact names, lower case) and the TLS server contexts made with it.

    ``ca_validity`` and ``leaf_validity`` are seconds. Building one makes a key (a few
    milliseconds); :meth:`server_context` makes a leaf the first time a host is asked for.
    """

    __slots__ = ("_cert", "_contexts", "_hosts", "_key", "_leaf_validity", "_not_after")

    def __init__(self, hosts: Iterable[str], *, ca_validity: int = CA_VALIDITY,
                 leaf_validity: int = LEAF_VALIDITY) -> None:
        names = sorted({host.lower() for host in hosts})
        if not names:
            raise ValueError("a session CA needs at least one intercepted host")
        if ca_validity < 1 or leaf_validity < 1:
            raise ValueError("validities must be positive")
        now = datetime.datetime.now(datetime.UTC)
        self._hosts = frozenset(names)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._not_after = now + datetime.timedelta(seconds=ca_validity)
        self._leaf_validity = datetime.timedelta(seconds=leaf_validity)
        self._contexts: dict[str, ssl.SSLContext] = {}
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nonod"),
            x509.NameAttribute(NameOID.COMMON_NAME, "nonod session interception CA"),
        ])
        public = self._key.public_key()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.NameConstraints(
                permitted_subtrees=[_general_name(name) for name in names],
                excluded_subtrees=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def hosts(self) -> frozenset[str]:
        return self._hosts

    @property
    def not_after(self) -> datetime.datetime:
        return self._not_after

    def cert_pem(self) -> bytes:
        """The CA certificate (public), PEM, for the session's trust bundle."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def trust_bundle(self, system_bundle: bytes) -> bytes:
        """``system_bundle`` (the host's CA bundle, as read) with this CA appended."""
        head = system_bundle if not system_bundle or system_bundle.endswith(b"\n") else (
            system_bundle + b"\n")
        return head + b"# nonod: this session's interception CA\n" + self.cert_pem()

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a leaf for ``host`` (one of :attr:`hosts`),
        HTTP/1.1 only; made once per host."""
        name = host.lower()
        if name not in self._hosts:
            raise ValueError(f"{host} is not an intercepted host of this session")
        context = self._contexts.get(name)
        if context is None:
            context = self._contexts[name] = self._new_context(name)
        return context

    def _new_context(self, host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        not_after = min(now + self._leaf_validity, self._not_after)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        pem += leaf.public_bytes(serialization.Encoding.PEM) + self.cert_pem()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        fd = os.memfd_create("nonod-leaf", os.MFD_CLOEXEC)
        try:
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view):]
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return context


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _general_name(host: str) -> x509.GeneralName:
    """The name constraint that permits exactly ``host`` (and, for a name, its subdomains)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return x509.DNSName(host)
    if isinstance(address, ipaddress.IPv4Address):
        return x509.IPAddress(ipaddress.IPv4Network(f"{address}/32"))
    return x509.IPAddress(ipaddress.IPv6Network(f"{address}/128"))


def session_trust(ca: SessionCA, bundle_path: str = TRUST_BUNDLE
                  ) -> tuple[tuple[str, bytes], tuple[tuple[str, str], ...]]:
    """What the session's view needs to trust ``ca``: the pin ``(path, bytes)`` that puts the
    host's bundle plus the CA at ``bundle_path`` in the view (the host's file is only read),
    and the environment variables that name it. Blocking (reads the bundle)."""
    with open(bundle_path, "rb") as bundle:
        system = bundle.read()
    return ((bundle_path, ca.trust_bundle(system)),
            tuple((name, bundle_path) for name in BUNDLE_VARIABLES))


__all__ = ["BUNDLE_VARIABLES", "CA_VALIDITY", "LEAF_VALIDITY", "TRUST_BUNDLE", "SessionCA",
           "session_trust"]
