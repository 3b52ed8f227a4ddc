"""Signing keys: ECDSA P-256, stored as nono stores them.

A key has a *name*, which is also the ``key_id`` that signatures carry and trust policies
match: a keychain account (``default``) or a ``file:///abs/path`` key ref. Its *fingerprint*
is the hex SHA-256 of its DER SubjectPublicKeyInfo; bundles carry it as the key hint.

Storage (the daemon owns it; clients never see private keys):

- keychain (:class:`KeyringKeyStore`): service ``nono-trust``, account = key name, the PKCS#8
  DER private key as standard base64; service ``nono-trust-pub`` holds the DER SPKI public key
  as base64, so that verifying never loads a private key.
- file (:class:`FileKeyStore`): the key ref ``file:///abs/path`` names a file holding the base64
  PKCS#8 DER private key (mode 0600), next to ``<path>.pub`` holding the base64 DER SPKI public
  key (also 0600). Loading refuses a private key file that other users can read, as ssh does.

Private key material lives only inside :class:`SigningKey`, whose ``repr`` shows the name and
fingerprint and which refuses to be pickled or copied.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TypeVar, final

from ._bundle import b64decode, b64encode
from ._errors import BadSignature, TrustKeyError

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric import ec

# ``cryptography`` (OpenSSL, ~8 MiB of the daemon's memory) is imported by the functions that
# handle a key, not with this module: a launch whose workdir has no trust policy never loads it.

KEYRING_SERVICE: Final = "nono-trust"
KEYRING_PUB_SERVICE: Final = "nono-trust-pub"
DEFAULT_KEY_NAME: Final = "default"
FILE_KEYREF_PREFIX: Final = "file://"

_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}")
_MAX_KEY_FILE_BYTES: Final = 64 * 1024
_T = TypeVar("_T")


def _ecdsa() -> ec.ECDSA:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(hashes.SHA256())


def _is_p256(key: object) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec

    return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def validate_key_name(name: str) -> str:
    """Check a key name: a keychain account name or a ``file:///abs/path`` key ref.

    Returns the name unchanged; raises :class:`TrustKeyError` naming what is wrong.
    """
    if name.startswith(FILE_KEYREF_PREFIX):
        key_file_path(name)
        return name
    if not _KEY_NAME.fullmatch(name) or name.lower().startswith("file:"):
        raise TrustKeyError(
            f"invalid key name {name[:40]!r}",
            hint="use letters, digits and . _ @ : + - (up to 128), or a file:///abs/path key ref",
        )
    return name


def key_file_path(keyref: str) -> str:
    """The private key path of a ``file:///abs/path`` key ref (its public key is ``<path>.pub``)."""
    if not keyref.startswith(FILE_KEYREF_PREFIX):
        raise TrustKeyError(f"{keyref[:60]!r} is not a file:// key ref")
    path = keyref[len(FILE_KEYREF_PREFIX) :]
    if (
        not path.startswith("/")
        or path.startswith("//")
        or "\0" in path
        or path.endswith("/")
        or any(part in (".", "..") for part in path.split("/"))
        or os.path.normpath(path) != path
        or any(c in path for c in "?#")
    ):
        raise TrustKeyError(
            f"invalid key ref {keyref[:80]!r}",
            hint="a file key ref is file:// followed by an absolute, normalized path "
            "(file:///home/me/.keys/nono-signing)",
        )
    return path


@final
class PublicKey:
    """An ECDSA P-256 public key. Its ``der`` is always the canonical (uncompressed) SPKI."""

    __slots__ = ("_key", "der", "fingerprint")

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        from cryptography.hazmat.primitives import serialization

        if not _is_p256(key):
            raise TrustKeyError("only ECDSA P-256 keys are supported")
        self._key = key
        self.der: bytes = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.fingerprint: str = hashlib.sha256(self.der).hexdigest()

    @classmethod
    def from_der(cls, der: bytes) -> PublicKey:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, UnsupportedAlgorithm):
            raise TrustKeyError("public key is not a DER SubjectPublicKeyInfo") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not _is_p256(key):
            raise TrustKeyError("public key is not an ECDSA P-256 key")
        return cls(key)

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        """From base64 DER SPKI (what ``trust export-key`` prints and policies hold)."""
        try:
            der = b64decode(text.strip())
        except ValueError as exc:
            raise TrustKeyError(f"public key is not valid base64: {exc}") from None
        return cls.from_der(der)

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise TrustKeyError("public key is not a PEM SubjectPublicKeyInfo") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not _is_p256(key):
            raise TrustKeyError("public key is not an ECDSA P-256 key")
        return cls(key)

    @property
    def b64(self) -> str:
        """Base64 DER SPKI: the ``public_key`` of a trust policy publisher."""
        return b64encode(self.der)

    @property
    def pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def verify(self, signature: bytes, message: bytes) -> None:
        """Check a DER ECDSA/SHA-256 signature over ``message``; raise :class:`BadSignature`."""
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, message, _ecdsa())
        except (InvalidSignature, ValueError):
            raise BadSignature("signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        return f"PublicKey(fingerprint={self.fingerprint!r})"


@final
class SigningKey:
    """An ECDSA P-256 private key with its name. Never shows, pickles or copies its secret."""

    __slots__ = ("__private", "name", "public_key")

    def __init__(self, name: str, private: ec.EllipticCurvePrivateKey) -> None:
        if not _is_p256(private):
            raise TrustKeyError("only ECDSA P-256 keys are supported")
        self.name: str = validate_key_name(name)
        self.__private = private
        self.public_key: PublicKey = PublicKey(private.public_key())

    @classmethod
    def from_pkcs8_der(cls, name: str, der: bytes) -> SigningKey:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise TrustKeyError(f"key {name[:80]!r} is not a PKCS#8 private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not _is_p256(key):
            raise TrustKeyError(f"key {name[:80]!r} is not an ECDSA P-256 key")
        return cls(name, key)

    @property
    def key_id(self) -> str:
        """What signatures made with this key carry as ``predicate.signer.key_id``."""
        return self.name

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint

    def sign(self, message: bytes) -> bytes:
        """A DER ECDSA P-256/SHA-256 signature over ``message``."""
        return self.__private.sign(message, _ecdsa())

    def export_pkcs8_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER, for a key store to persist. Secret."""
        from cryptography.hazmat.primitives import serialization

        return self.__private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey(name={self.name!r}, fingerprint={self.fingerprint!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SigningKey holds a private key and cannot be pickled or copied")


def generate_key(name: str = DEFAULT_KEY_NAME) -> SigningKey:
    """A fresh ECDSA P-256 key named ``name``. Not stored anywhere: see :class:`KeyStore`."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return SigningKey(name, ec.generate_private_key(ec.SECP256R1()))


def export_public_key(key: SigningKey | PublicKey, *, pem: bool = False) -> str:
    """The public key as base64 DER SPKI (for ``trust-policy.json``), or as PEM."""
    public = key.public_key if isinstance(key, SigningKey) else key
    return public.pem if pem else public.b64


class KeyStore(Protocol):
    """Where the daemon keeps signing keys. Implementations raise :class:`TrustKeyError`."""

    def exists(self, name: str) -> bool: ...

    def store(self, key: SigningKey, *, force: bool = False) -> None:
        """Persist the private and public key; refuse to replace an existing key unless
        ``force``."""
        ...

    def load_signing_key(self, name: str) -> SigningKey: ...

    def load_public_key(self, name: str) -> PublicKey:
        """The public key alone; never loads the private key."""
        ...


# --- files ------------------------------------------------------------------------------------


def _make_private_dirs(directory: str) -> None:
    """Create ``directory`` and each missing parent 0700 (``os.makedirs`` gives the parents
    the umask's mode); existing ones are left as they are."""
    missing: list[str] = []
    while not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
        os.chmod(path, 0o700)  # the umask may have taken bits off, never added


def _write_new(path: str, text: str, *, replace: bool) -> None:
    """Write ``text`` to ``path`` (0600), atomically; without ``replace``, fail if it exists."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.write(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic "create only if absent"
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _check_writers(path: str, fd: int, info: os.stat_result) -> None:
    """Refuse a key file that a user other than the reader (or root) could have written,
    or replaced in its directory (:func:`nonod._writers.other_writers`)."""
    from .._writers import descriptor_path, other_writers

    real = descriptor_path(fd) or os.path.realpath(path)
    found = other_writers(real, info.st_uid, info.st_gid, info.st_mode, reader=os.geteuid())
    if found is not None:
        why, itself = found
        raise TrustKeyError(
            f"key file {path} is not used: {why}, so another user could have "
            f"{'written' if itself else 'replaced'} it",
            hint="keep key files in directories only you (or root) may write")


def _read_key_file(path: str, *, private: bool) -> str:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TrustKeyError(f"{path} is not a regular file")
        if private and info.st_mode & 0o077:
            raise TrustKeyError(
                f"private key file {path} is accessible by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o})",
                hint=f"chmod 600 {path}",
            )
        if private and info.st_uid != os.geteuid():
            raise TrustKeyError(f"private key file {path} belongs to another user")
        if not private:  # a public key becomes a trust anchor: it must be the reader's own
            _check_writers(path, fd, info)
        data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise TrustKeyError(f"{path} is too large to be a key file")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TrustKeyError(f"{path} is not a base64 key file") from None


def _os_error(what: str, path: str, exc: OSError) -> TrustKeyError:
    if exc.errno == errno.ENOENT:
        return TrustKeyError(f"{what} not found at {path}", hint="run `nonoctl trust keygen`")
    if exc.errno == errno.ELOOP:
        return TrustKeyError(f"{what} at {path} is a symlink; key files must not be")
    return TrustKeyError(f"cannot access {what} at {path}: {exc.strerror}")


@final
class FileKeyStore:
    """Keys in files, named by ``file:///abs/path`` key refs (the key ref is the key id)."""

    def exists(self, name: str) -> bool:
        path = key_file_path(name)
        return os.path.lexists(path) or os.path.lexists(path + ".pub")

    def store(self, key: SigningKey, *, force: bool = False) -> None:
        path = key_file_path(key.name)
        if not force and self.exists(key.name):
            raise TrustKeyError(f"a key already exists at {path}", hint="pass force to replace it")
        secret = b64encode(key.export_pkcs8_der())
        try:
            _make_private_dirs(os.path.dirname(path))
            _write_new(path, secret, replace=force)
            _write_new(path + ".pub", key.public_key.b64, replace=force)
        except FileExistsError:
            raise TrustKeyError(f"a key already exists at {path}") from None
        except OSError as exc:
            raise TrustKeyError(f"cannot write key file {path}: {exc.strerror}") from exc

    def load_signing_key(self, name: str) -> SigningKey:
        path = key_file_path(name)
        try:
            text = _read_key_file(path, private=True)
        except OSError as exc:
            raise _os_error("signing key", path, exc) from exc
        try:
            der = b64decode(text)
        except ValueError:
            raise TrustKeyError(f"signing key file {path} is not base64") from None
        return SigningKey.from_pkcs8_der(name, der)

    def load_public_key(self, name: str) -> PublicKey:
        path = key_file_path(name) + ".pub"
        try:
            text = _read_key_file(path, private=False)
        except OSError as exc:
            raise _os_error("public key", path, exc) from exc
        return PublicKey.from_b64(text)


# --- keychain ---------------------------------------------------------------------------------


def _keyring_errors() -> tuple[type[Exception], ...]:
    """What a keychain call may raise: keyring's own errors (when installed) and OSError."""
    try:
        from keyring.errors import KeyringError
    except ImportError:
        return (OSError,)
    return (KeyringError, OSError)


class KeyringBackend(Protocol):
    """The part of the ``keyring`` API the key store uses (the module itself qualifies)."""

    def get_password(self, service_name: str, username: str) -> str | None: ...

    def set_password(self, service_name: str, username: str, password: str) -> None: ...


@final
class KeyringKeyStore:
    """Keys in the OS keychain through ``keyring`` (imported on first use).

    ``backend`` defaults to the ``keyring`` module (the user's default keychain); the daemon or
    a test can pass any object with ``get_password`` and ``set_password``.
    """

    def __init__(self, backend: KeyringBackend | None = None) -> None:
        self._backend = backend

    def _keyring(self) -> KeyringBackend:
        if self._backend is not None:
            return self._backend
        try:
            import keyring
        except ImportError:
            raise TrustKeyError(
                "the keyring package is not installed", hint="use a file:///abs/path key ref"
            ) from None
        return keyring

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except _keyring_errors() as exc:
            # The class name only: a backend's message could echo what it was given.
            raise TrustKeyError(
                f"keychain error while {what} ({type(exc).__name__})",
                hint="is a Secret Service (gnome-keyring, KWallet) running and unlocked?",
            ) from exc

    def exists(self, name: str) -> bool:
        validate_key_name(name)
        backend = self._keyring()
        found = self._call(
            f"looking up key {name!r}", lambda: backend.get_password(KEYRING_SERVICE, name)
        )
        return found is not None

    def store(self, key: SigningKey, *, force: bool = False) -> None:
        if not force and self.exists(key.name):
            raise TrustKeyError(
                f"key {key.name!r} already exists in the keychain", hint="pass force to replace it"
            )
        backend = self._keyring()
        secret = b64encode(key.export_pkcs8_der())
        public = key.public_key.b64
        what = f"storing key {key.name!r}"
        self._call(what, lambda: backend.set_password(KEYRING_SERVICE, key.name, secret))
        self._call(what, lambda: backend.set_password(KEYRING_PUB_SERVICE, key.name, public))

    def load_signing_key(self, name: str) -> SigningKey:
        validate_key_name(name)
        backend = self._keyring()
        text = self._call(
            f"loading key {name!r}", lambda: backend.get_password(KEYRING_SERVICE, name)
        )
        if text is None:
            raise TrustKeyError(
                f"signing key {name!r} not found in the keychain",
                hint=f"run `nonoctl trust keygen --key {name}`",
            )
        try:
            der = b64decode(text.strip())
        except ValueError:
            raise TrustKeyError(f"signing key {name!r} in the keychain is not base64") from None
        return SigningKey.from_pkcs8_der(name, der)

    def load_public_key(self, name: str) -> PublicKey:
        validate_key_name(name)
        backend = self._keyring()
        text = self._call(
            f"loading public key {name!r}",
            lambda: backend.get_password(KEYRING_PUB_SERVICE, name),
        )
        if text is None:
            raise TrustKeyError(
                f"public key {name!r} not found in the keychain",
                hint=f"run `nonoctl trust keygen --key {name}`",
            )
        return PublicKey.from_b64(text)


def keystore_for(name: str, *, keyring_backend: KeyringBackend | None = None) -> KeyStore:
    """The store a key name lives in: files for ``file://`` key refs, the keychain otherwise."""
    validate_key_name(name)
    if name.startswith(FILE_KEYREF_PREFIX):
        return FileKeyStore()
    return KeyringKeyStore(keyring_backend)
