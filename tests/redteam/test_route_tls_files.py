"""Red team, a credential route's TLS files, read with the system daemon's rights: a route of
a user's own profile (``custom_credentials``) names ``tls_ca``, ``tls_client_cert`` and
``tls_client_key``, and the daemon loaded them with OpenSSL as root. A member of the socket
group named root's 0600 client key and certificate (a host's or a service's mTLS identity)
and the session's proxy then authenticated as root's identity to the upstream the user chose;
a FIFO as ``tls_ca`` blocked a daemon thread for good (the launch never answered), as would
``/dev/zero`` have spun one. Now the files are opened once as the caller, never blocking,
regular files of bounded size, and OpenSSL gets their bytes."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import shared_daemon

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


def _identity(directory: Path, owner: LocalUser | None) -> tuple[Path, Path]:
    """A self-signed certificate and its key, 0600, owned by ``owner`` (None: root)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "client.pem", directory / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    for path in (cert_path, key_path):
        path.chmod(0o600)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
    return cert_path, key_path


@pytest.fixture
def setting(short_tmp: Path) -> Iterator[tuple[DaemonThread, LocalUser]]:
    with shared_daemon(short_tmp, 1) as (handle, users):
        yield handle, users[0]


def _launch(user: LocalUser, tls: dict[str, str], name: str) -> dict[str, object]:
    # A token of its own per launch: a route with a tls_ca of its own is another upstream to
    # the secret's hosts (credentials._hosts), refused before the TLS files are opened.
    token = user.home / f"token-{name}"
    if not token.exists():
        token.write_text("users-own-token")
        token.chmod(0o600)
        os.chown(token, user.uid, user.gid)
    profile = user.home / f"{name}.json"
    profile.write_text(json.dumps({
        "meta": {"name": name},
        "filesystem": {"read": ["/usr", "/etc"]},
        "workdir": {"access": "read"},
        "network": {"credentials": ["svc"], "custom_credentials": {"svc": {
            "upstream": "https://127.0.0.1:9/", "credential_key": f"file://{token}",
            "env_var": "SVC_TOKEN", **tls}}},
    }))
    os.chown(profile, user.uid, user.gid)
    return {"type": "launch", "argv": ["/bin/true"], "cwd": str(user.home),
            "env": session_env(user.home), "profile": str(profile), "name": name,
            "detach": True, "stdio": "null"}


def test_roots_tls_client_key_is_not_lent_to_another_users_route(
        setting: tuple[DaemonThread, LocalUser], short_tmp: Path) -> None:
    handle, user = setting
    user.home.chmod(0o755)
    roots = short_tmp / "root-tls"
    roots.mkdir(mode=0o700)
    root_cert, root_key = _identity(roots, None)
    mine = user.home / "tls"
    mine.mkdir()
    os.chown(mine, user.uid, user.gid)
    own_cert, own_key = _identity(mine, user)
    fifo = user.home / "ca.pem"
    os.mkfifo(fifo)
    os.chown(fifo, user.uid, user.gid)

    lines = raw_client(handle.socket, [
        hello(),
        _launch(user, {"tls_client_cert": str(root_cert), "tls_client_key": str(root_key)},
                "theirs"),
        _launch(user, {"tls_ca": str(fifo)}, "fifo"),
        _launch(user, {"tls_client_cert": str(own_cert), "tls_client_key": str(own_key)},
                "mine"),
    ], prefix=user.prefix(), timeout=60)  # before: the FIFO's launch never answered
    theirs, fifo_reply, mine_reply = (json.loads(line) for line in lines[1:])
    assert theirs["type"] == "error", theirs  # before: launched, with root's identity
    assert theirs["code"] == "file.denied", theirs
    assert str(root_key) in str(theirs["message"]) or str(root_cert) in str(theirs["message"])
    assert fifo_reply["type"] == "error", fifo_reply
    assert fifo_reply["code"] == "file.refused" and "FIFO" in str(fifo_reply["message"])
    assert mine_reply["type"] == "launched", mine_reply  # the caller's own files work
