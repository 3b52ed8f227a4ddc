"""Keys: generation, ids, export formats, the file and keychain stores, and no leaked secrets."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nonod.trust import (
    FileKeyStore,
    KeyringKeyStore,
    PublicKey,
    SigningKey,
    TrustKeyError,
    export_public_key,
    generate_key,
    keystore_for,
)
from nonod.trust._keys import validate_key_name

from .conftest import MemoryKeyring


def secret_b64(key: SigningKey) -> str:
    return base64.b64encode(key.export_pkcs8_der()).decode()


def test_key_id_and_fingerprint(key: SigningKey) -> None:
    spki = base64.b64decode(export_public_key(key))
    loaded = serialization.load_der_public_key(spki)
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    assert isinstance(loaded.curve, ec.SECP256R1)
    assert key.fingerprint == hashlib.sha256(spki).hexdigest()
    assert key.key_id == key.name == "default"


def test_pem_export(key: SigningKey) -> None:
    pem = export_public_key(key, pem=True)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert PublicKey.from_pem(pem.encode()) == key.public_key
    assert PublicKey.from_b64(export_public_key(key.public_key)) == key.public_key


def test_pkcs8_round_trip(key: SigningKey) -> None:
    again = SigningKey.from_pkcs8_der("default", key.export_pkcs8_der())
    assert again.fingerprint == key.fingerprint
    again.public_key.verify(key.sign(b"m"), b"m")


def test_secrets_stay_out_of_repr_pickle_and_copies(key: SigningKey) -> None:
    assert secret_b64(key) not in repr(key)
    assert repr(key) == f"SigningKey(name='default', fingerprint='{key.fingerprint}')"
    for leak in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be pickled or copied"):
            leak(key)


def test_other_curves_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    der = p384.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(TrustKeyError, match="not an ECDSA P-256 key"):
        SigningKey.from_pkcs8_der("k", der)
    spki = p384.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(TrustKeyError, match="not an ECDSA P-256 key"):
        PublicKey.from_der(spki)
    with pytest.raises(TrustKeyError, match="not valid base64"):
        PublicKey.from_b64("<nono trust export-key output>")


def test_compressed_points_get_the_canonical_fingerprint(key: SigningKey) -> None:
    point = key.public_key._key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    # SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } with a 33-byte compressed point.
    header = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")
    compressed = PublicKey.from_der(header + point)
    assert compressed.der != header + point
    assert compressed.fingerprint == key.fingerprint


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a/b",
        "../x",
        "file:relative",
        "file://relative",
        "file:///a/../b",
        "file:///a/",
        "file:///a?x",
        "-dash",
        "x" * 200,
    ],
)
def test_bad_key_names(name: str) -> None:
    with pytest.raises(TrustKeyError):
        validate_key_name(name)


@pytest.mark.parametrize("name", ["default", "ci.bot", "nono-keystore:default", "file:///k/key"])
def test_good_key_names(name: str) -> None:
    assert validate_key_name(name) == name


# --- file store -------------------------------------------------------------------------------


@pytest.fixture
def keyref(tmp_path: Path) -> str:
    return f"file://{tmp_path}/signing-key"


def test_file_store_round_trip(keyref: str, tmp_path: Path) -> None:
    key = generate_key(keyref)
    store = keystore_for(keyref)
    assert isinstance(store, FileKeyStore)
    assert not store.exists(keyref)
    store.store(key)
    assert store.exists(keyref)

    private, public = tmp_path / "signing-key", tmp_path / "signing-key.pub"
    for path in (private, public):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert private.read_text() == secret_b64(key)
    assert public.read_text() == export_public_key(key)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    loaded = store.load_signing_key(keyref)
    assert (loaded.name, loaded.fingerprint) == (keyref, key.fingerprint)
    assert store.load_public_key(keyref) == key.public_key


def test_file_store_does_not_clobber(keyref: str) -> None:
    store = FileKeyStore()
    first = generate_key(keyref)
    store.store(first)
    with pytest.raises(TrustKeyError, match="already exists"):
        store.store(generate_key(keyref))
    second = generate_key(keyref)
    store.store(second, force=True)
    assert store.load_public_key(keyref) == second.public_key


def test_file_store_refuses_readable_private_keys(keyref: str, tmp_path: Path) -> None:
    store = FileKeyStore()
    key = generate_key(keyref)
    store.store(key)
    os.chmod(tmp_path / "signing-key", 0o644)
    with pytest.raises(TrustKeyError, match=r"accessible by other users \(mode 0644\)") as info:
        store.load_signing_key(keyref)
    assert info.value.hint == f"chmod 600 {tmp_path / 'signing-key'}"
    assert secret_b64(key) not in info.value.diagnostics()


def test_file_store_refuses_symlinks(keyref: str, tmp_path: Path) -> None:
    store = FileKeyStore()
    elsewhere = f"file://{tmp_path}/real-key"
    store.store(generate_key(elsewhere))
    os.symlink(tmp_path / "real-key", tmp_path / "signing-key")
    with pytest.raises(TrustKeyError, match="is a symlink"):
        store.load_signing_key(keyref)


def test_file_store_missing_and_corrupt(keyref: str, tmp_path: Path) -> None:
    store = FileKeyStore()
    with pytest.raises(TrustKeyError, match="signing key not found") as info:
        store.load_signing_key(keyref)
    assert info.value.hint == "run `nonoctl trust keygen`"
    fd = os.open(tmp_path / "signing-key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"c2VjcmV0LWJ1dC1ub3QtYS1rZXk=")
    os.close(fd)
    with pytest.raises(TrustKeyError, match="not a PKCS#8 private key") as info:
        store.load_signing_key(keyref)
    assert "c2VjcmV0" not in info.value.diagnostics()


# --- keychain store ---------------------------------------------------------------------------


def test_keyring_store_uses_nonos_services_and_accounts(key: SigningKey) -> None:
    backend = MemoryKeyring()
    store = keystore_for("default", keyring_backend=backend)
    assert isinstance(store, KeyringKeyStore)
    store.store(key)
    assert backend.items == {
        ("nono-trust", "default"): secret_b64(key),
        ("nono-trust-pub", "default"): export_public_key(key),
    }
    assert store.load_signing_key("default").fingerprint == key.fingerprint
    assert store.load_public_key("default") == key.public_key
    with pytest.raises(TrustKeyError, match="already exists in the keychain"):
        store.store(generate_key("default"))


def test_keyring_store_missing_key() -> None:
    store = KeyringKeyStore(MemoryKeyring())
    with pytest.raises(TrustKeyError, match="'ci' not found in the keychain") as info:
        store.load_signing_key("ci")
    assert info.value.hint == "run `nonoctl trust keygen --key ci`"
    assert not store.exists("ci")


def test_keyring_errors_are_translated_without_their_text(key: SigningKey) -> None:
    from keyring.errors import KeyringLocked

    class Locked(MemoryKeyring):
        def set_password(self, service: str, username: str, password: str) -> None:
            raise KeyringLocked(f"refused {password}")

    with pytest.raises(TrustKeyError, match=r"keychain error while storing key 'default' \(Keyri"):
        KeyringKeyStore(Locked()).store(key)
    try:
        KeyringKeyStore(Locked()).store(key)
    except TrustKeyError as exc:
        assert secret_b64(key) not in exc.diagnostics()
        assert secret_b64(key) not in str(exc)


def test_no_trust_policy_means_no_cryptography(tmp_path: Path) -> None:
    """A launch whose workdir and user config hold no trust policy reads the (absent) policy
    files and verifies nothing: the daemon does not load OpenSSL for it (~8 MiB of its idle
    memory). Checked in a fresh interpreter, since this one has loaded it already."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "import nonod._daemon, nonod._session_services\n"
        "from nonod import trust\n"
        f"files = trust.read_policy_files(trust.user_policy_path(Path({str(tmp_path)!r})),"
        f" {str(tmp_path)!r})\n"
        "assert trust.load_policies(files, user_anchors=lambda declared: []) is None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
