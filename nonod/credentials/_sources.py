"""Credential references, as nono writes them, and reading the value each one names.

A reference is one of:

==================================  ======================================================
``NAME``                            the keychain: keyring service ``nono``, account ``NAME``
``keyring://SERVICE/ACCOUNT``       the keychain, any service; ``?decode=go-keyring`` reads a
                                    value a Go tool stored (``gh``: ``go-keyring-base64:...``)
``env://VAR``                       a variable of the daemon's own environment
``file:///abs/path``                a file owned by the expected user, mode ``0600``/``0400``
``op://vault/item/field``           1Password, through ``op read`` (the CLI must be signed in)
``systemd-creds://NAME``            ``$CREDENTIALS_DIRECTORY/NAME`` (systemd ``LoadCredential=``)
==================================  ======================================================

``bw://`` and ``apple-password(s)://`` are nono references that nonod does not read; they fail
with :class:`UnsupportedSource` rather than being taken for a keychain name.

Everything here blocks (D-Bus, files, a subprocess): call it from a worker thread
(``trio.to_thread.run_sync``), as :func:`nonod.credentials.load_route_secrets` does. No function
here logs, and no error message contains a value.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from .._callerfs import Identity, acting_as
from ._errors import (
    BadReference,
    BadValue,
    CredentialError,
    CredentialNotFound,
    CredentialUnavailable,
    InsecureSource,
    SourceNotPermitted,
    UnsupportedSource,
)
from ._secret import Secret

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

#: The keyring service nono (and nonod) store credentials under.
KEYRING_SERVICE: Final = "nono"

SourceKind = Literal["keychain", "env", "file", "op", "systemd"]

#: Keychain account names: what nono accepts for ``credential_key`` plus ``-`` and ``.``,
#: because built-in route names (``google-ai``) are their own default account names.
ACCOUNT_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYSTEMD_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}")
_UNSUPPORTED: Final = ("bw://", "apple-password://", "apple-passwords://")
#: What ``zalando/go-keyring`` puts before the base64 of a value it stores.
_GO_KEYRING_PREFIX: Final = "go-keyring-base64:"
_MAX_VALUE: Final = 64 * 1024
_STORE_HINT: Final = ("store it with `nonoctl secret set {name}`, or with secret-tool: "
                      "secret-tool store --label='nono: {name}' service nono username {name} "
                      "target default")


class CredentialRef(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed reference. ``text`` is the reference as written (it names a credential and
    is safe to show); the other fields are set according to ``kind``."""

    text: str
    kind: SourceKind
    service: str = ""
    account: str = ""
    variable: str = ""
    path: str = ""
    name: str = ""
    #: ``keyring://...?decode=go-keyring``: the stored value is a Go tool's encoding.
    go_keyring: bool = False


class SourceOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the daemon reads sources.

    ``op_command``/``op_timeout``: the 1Password CLI and how long ``op read`` may take.
    ``credentials_directory``: systemd's ``$CREDENTIALS_DIRECTORY``; None reads the daemon's
    own environment (never the ``environ`` mapping, which may be a client's).
    ``file_owner``: the uid a ``file://`` credential must belong to (None: the daemon's
    effective uid). ``file_roots``: directories ``file://`` credentials must lie under (after
    resolving symlinks); None means anywhere the owner rule allows. A system daemon should set
    both, since a profile chooses the path. ``file_identity``: whose rights open a ``file://``
    credential (``nonod._callerfs``; None: the daemon's own). The system daemon sets it, and
    ``file_owner``, to its caller's, so a profile cannot name a file only root may read.
    ``daemon_stores``: whether the daemon's own stores (its environment, its keychain, its
    1Password sign-in, its systemd credentials) may be read. The system daemon sets it False
    for a caller other than root: those hold the daemon's secrets, not the caller's, and the
    caller's profile chooses the upstream a route sends them to. ``exact_paths``: a
    ``file://`` credential is read only if the file opened is at the path given, with no link
    on the way (the daemon gives the path it bound, its links resolved: a link changed since
    would send another file than the one bound, ``credentials._hosts``).
    """

    op_command: str = "op"
    op_timeout: float = 30.0
    credentials_directory: str | None = None
    file_owner: int | None = None
    file_roots: tuple[str, ...] | None = None
    file_identity: Identity | None = None
    daemon_stores: bool = True
    exact_paths: bool = False

    def __post_init__(self) -> None:
        if not self.op_timeout > 0:
            raise ValueError("op_timeout must be positive")
        if self.file_roots is not None:
            if not self.file_roots:
                raise ValueError("file_roots is empty: use None for no restriction")
            for root in self.file_roots:
                if not root.startswith("/"):
                    raise ValueError(f"file_roots: `{root}` is not an absolute path")


def parse_credential_ref(text: str) -> CredentialRef:
    """Parse a reference; raises BadReference or UnsupportedSource."""
    if not isinstance(text, str) or not text:
        raise BadReference("empty credential reference")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadReference("a credential reference contains a control character")
    if text.startswith(_UNSUPPORTED):
        scheme = text.split("://", 1)[0]
        raise UnsupportedSource(
            f"`{scheme}://` credentials are not supported by nonod", reference=text,
            hint="store the value in the keychain (`nonoctl secret set NAME`) and use its name")
    if text.startswith("keyring://"):
        where, _, query = text[len("keyring://"):].partition("?")
        service, sep, account = where.partition("/")
        if not sep or not service or "#" in text or not ACCOUNT_NAME.fullmatch(account):
            raise BadReference(f"`{text}` is not keyring://SERVICE/ACCOUNT", reference=text)
        # nono's one query parameter; anything else is refused, as nono refuses it.
        if query and query != "decode=go-keyring":
            raise BadReference(f"`{text}`: the only query a keyring reference takes is "
                               "?decode=go-keyring", reference=text)
        return CredentialRef(text=text, kind="keychain", service=service, account=account,
                             go_keyring=bool(query))
    if text.startswith("env://"):
        variable = text[len("env://"):]
        if not _ENV_NAME.fullmatch(variable):
            raise BadReference(f"`{text}` does not name an environment variable",
                               reference=text)
        return CredentialRef(text=text, kind="env", variable=variable)
    if text.startswith("file://"):
        path = text[len("file://"):]
        if not path.startswith("/"):
            raise BadReference(f"`{text}` is not file:///absolute/path", reference=text,
                               hint="file references are absolute: file:///run/keys/token")
        if "\\" in path or "/../" in path + "/" or "/./" in path + "/":
            raise BadReference(f"`{text}` is not a plain absolute path", reference=text)
        return CredentialRef(text=text, kind="file", path=path)
    if text.startswith("op://"):
        parts = text[len("op://"):].split("/")
        if len(parts) < 3 or not all(parts):
            raise BadReference(f"`{text}` is not op://VAULT/ITEM/FIELD", reference=text)
        return CredentialRef(text=text, kind="op")
    if text.startswith("systemd-creds://"):
        name = text[len("systemd-creds://"):]
        if not _SYSTEMD_NAME.fullmatch(name) or name in (".", ".."):
            raise BadReference(f"`{text}` is not systemd-creds://NAME", reference=text)
        return CredentialRef(text=text, kind="systemd", name=name)
    if "://" in text:
        raise BadReference(f"`{text}`: unknown credential scheme", reference=text,
                           hint="use a keychain name, keyring://, env://, file://, op:// or "
                           "systemd-creds://")
    if not ACCOUNT_NAME.fullmatch(text):
        raise BadReference(f"`{text}` is not a keychain account name (letters, digits, _ - .)",
                           reference=text)
    return CredentialRef(text=text, kind="keychain", service=KEYRING_SERVICE, account=text)


def resolve_credential(
    ref: str | CredentialRef,
    *,
    environ: Mapping[str, str],
    keyring_backend: KeyringBackend | None = None,
    options: SourceOptions = SourceOptions(),  # noqa: B008 - frozen, immutable
) -> Secret:
    """The value ``ref`` names. Blocking; run it in a worker thread.

    ``environ`` is the environment ``env://`` reads: the daemon passes its own
    (``os.environ``), never a client's. ``keyring_backend`` defaults to
    ``keyring.get_keyring()``. Raises a CredentialError subclass: CredentialNotFound,
    CredentialUnavailable, BadReference, UnsupportedSource, InsecureSource or BadValue.
    """
    parsed = ref if isinstance(ref, CredentialRef) else parse_credential_ref(ref)
    if not options.daemon_stores and parsed.kind != "file":
        raise SourceNotPermitted(
            f"`{parsed.text}`: the system daemon reads its own {_STORE_NAMES[parsed.kind]} for "
            "root only: for another caller it would hand the daemon's secret to that caller's "
            "route", reference=parsed.text,
            hint="use a file:///path credential that you own, mode 0600 (the daemon opens it "
            "with your rights), or run your own user daemon with its own secrets")
    if parsed.kind == "keychain":
        value = _from_keychain(parsed, keyring_backend)
    elif parsed.kind == "env":
        found = environ.get(parsed.variable)
        if not found:
            raise CredentialNotFound(
                f"`{parsed.text}`: the variable {parsed.variable} is not set (or empty) in the "
                "daemon's environment", reference=parsed.text,
                hint=f"set {parsed.variable} in nonod's environment (Environment= or "
                "EnvironmentFile= of its unit), or store the value with `nonoctl secret set` "
                "and name the keychain entry instead; a client's environment is never read")
        value = found
    elif parsed.kind == "file":
        value = _from_file(parsed, options)
    elif parsed.kind == "op":
        value = _from_op(parsed, options)
    else:
        value = _from_systemd(parsed, options)
    return Secret(value)


_STORE_NAMES: Final = {"keychain": "keychain", "env": "environment",
                       "op": "1Password sign-in", "systemd": "systemd credentials",
                       "file": "files"}


def source_kind(ref: str) -> SourceKind:
    """The kind of store a reference reads (``keychain``, ``env``, ``file``, ``op``,
    ``systemd``), for audit events."""
    return parse_credential_ref(ref).kind


def resolve_env_credentials(
    pairs: Sequence[tuple[str, str]],
    *,
    environ: Mapping[str, str],
    keyring_backend: KeyringBackend | None = None,
    options: SourceOptions = SourceOptions(),  # noqa: B008 - frozen, immutable
) -> tuple[tuple[str, Secret], ...]:
    """``env_credentials`` (reference, variable) pairs as (variable, value) pairs: the
    weaker mode, where the real value goes into the program's environment. Blocking."""
    return tuple(
        (variable, resolve_credential(ref, environ=environ, keyring_backend=keyring_backend,
                                      options=options))
        for ref, variable in pairs
    )


# keychain


def default_backend() -> KeyringBackend:
    """``keyring``'s choice of backend for this process (Secret Service on Linux, the login
    Keychain on macOS). Raises CredentialUnavailable when it found none."""
    import keyring
    from keyring.backends import fail

    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        raise CredentialUnavailable(
            "no keychain is available to the daemon",
            hint="on Linux, run a Secret Service (gnome-keyring, KeePassXC) on the daemon's "
            "D-Bus session bus (DBUS_SESSION_BUS_ADDRESS); or use env://, file://, op:// or "
            "systemd-creds:// references")
    return backend


def keychain_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a keychain backend raises when it cannot answer (no service, locked,
    D-Bus trouble); translated at the boundary into CredentialUnavailable."""
    from keyring.errors import KeyringError

    errors: list[type[BaseException]] = [KeyringError, RuntimeError, OSError, EOFError]
    try:
        from secretstorage.exceptions import SecretStorageException
    except ImportError:
        pass  # not on Linux: the macOS backend raises KeyringError
    else:
        errors.append(SecretStorageException)
    try:
        from jeepney.wrappers import DBusErrorResponse  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        errors.append(DBusErrorResponse)
    return tuple(errors)


def _from_keychain(ref: CredentialRef, backend: KeyringBackend | None) -> str:
    try:
        chosen = backend if backend is not None else default_backend()
        value = chosen.get_password(ref.service, ref.account)
    except CredentialError:
        raise
    except keychain_errors() as exc:
        raise CredentialUnavailable(
            f"`{ref.text}`: the keychain could not be read ({type(exc).__name__})",
            reference=ref.text,
            hint="is the Secret Service running and unlocked on the daemon's session bus?",
        ) from exc
    if not value:
        hint = _STORE_HINT.format(name=ref.account) if ref.service == KEYRING_SERVICE else None
        raise CredentialNotFound(
            f"`{ref.text}`: no keychain entry for service `{ref.service}`, account "
            f"`{ref.account}`", reference=ref.text, hint=hint)
    return _go_keyring_decoded(ref, value) if ref.go_keyring else value


def _go_keyring_decoded(ref: CredentialRef, value: str) -> str:
    """A value ``zalando/go-keyring`` stored (``go-keyring-base64:`` and base64), decoded."""
    import base64
    import binascii

    if not value.startswith(_GO_KEYRING_PREFIX):
        raise BadValue(f"`{ref.text}`: the stored value does not start with "
                       f"`{_GO_KEYRING_PREFIX}`", reference=ref.text,
                       hint="leave out ?decode=go-keyring for a value a Go tool did not store")
    try:
        return base64.b64decode(value[len(_GO_KEYRING_PREFIX):], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise BadValue(f"`{ref.text}`: the stored go-keyring value is not base64 of UTF-8 "
                       "text", reference=ref.text) from None


# files


def _from_file(ref: CredentialRef, options: SourceOptions) -> str:
    with acting_as(options.file_identity):  # this worker thread only, restored on return
        return _from_file_as_is(ref, options)


def _from_file_as_is(ref: CredentialRef, options: SourceOptions) -> str:
    path = ref.path
    if options.file_roots is not None:
        real = os.path.realpath(path)
        if not any(real == root or real.startswith(root.rstrip("/") + "/")
                   for root in options.file_roots):
            raise InsecureSource(f"`{ref.text}` is outside the directories the daemon reads "
                                 "credentials from", reference=ref.text,
                                 hint="see [credentials] file_roots in nonod.toml")
    owner = os.geteuid() if options.file_owner is None else options.file_owner
    return _read_private_file(path, ref.text, owner=owner, check_mode=True,
                              exact=options.exact_paths)


def _read_private_file(path: str, text: str, *, owner: int | None, check_mode: bool,
                       exact: bool = False) -> str:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CredentialNotFound(f"`{text}`: no such file", reference=text) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InsecureSource(f"`{text}` is a symbolic link", reference=text,
                                 hint="point the reference at the file itself") from None
        raise CredentialUnavailable(f"`{text}` cannot be opened ({os.strerror(exc.errno or 0)})",
                                    reference=text) from None
    try:
        # The kernel's own path of what was opened (one's own descriptors are readable
        # whatever the thread's file identity).
        if exact and _opened_path(fd) != path:
            raise InsecureSource(f"`{text}` is no longer where it was when its hosts were "
                                 "checked: a link on its path changed", reference=text,
                                 hint="launch again; if it recurs, something is changing the "
                                 "links on that path")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InsecureSource(f"`{text}` is not a regular file", reference=text)
        mode = stat.S_IMODE(info.st_mode)
        if check_mode and mode & 0o077:
            raise InsecureSource(
                f"`{text}` is accessible to group or others (mode {mode:04o})",
                reference=text, hint=f"chmod 600 {path}")
        if owner is not None and info.st_uid != owner:
            raise InsecureSource(f"`{text}` belongs to uid {info.st_uid}, not {owner}",
                                 reference=text)
        if info.st_size > _MAX_VALUE:
            raise BadValue(f"`{text}` is larger than {_MAX_VALUE} bytes", reference=text)
        data = os.read(fd, _MAX_VALUE + 1)
    finally:
        os.close(fd)
    return _text_value(data, text)


def _opened_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _text_value(data: bytes, text: str) -> str:
    if len(data) > _MAX_VALUE:
        raise BadValue(f"`{text}` is larger than {_MAX_VALUE} bytes", reference=text)
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadValue(f"`{text}` is not UTF-8 text", reference=text) from None
    # One trailing line break is how files and `op read` end their output, not the value.
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise CredentialNotFound(f"`{text}` is empty", reference=text)
    return value


# 1Password

#: What of the daemon's environment ``op`` gets: where its sign-in and configuration are
#: (``HOME``, ``XDG_*``, ``OP_*``), how it reaches 1Password (proxy and CA settings, the
#: desktop app's session bus) and the locale. Nothing else: the daemon's environment holds
#: the ``env://`` secrets of its routes, and ``op``, once exec'd, is dumpable, so every
#: process of the daemon's user could read them in its ``/proc/PID/environ`` while it runs.
_OP_NAMES: Final = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "LANGUAGE",
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
    "NO_PROXY", "no_proxy",
})


def op_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment ``op read`` runs with: the names of :data:`_OP_NAMES`, ``LC_*`` and
    ``OP_*`` (``OP_SERVICE_ACCOUNT_TOKEN``, ``OP_CONNECT_*``, ``OP_SESSION_*``...)."""
    return {name: value for name, value in environ.items()
            if name in _OP_NAMES or name.startswith(("LC_", "OP_"))}


def _from_op(ref: CredentialRef, options: SourceOptions) -> str:
    command = shutil.which(options.op_command)
    if command is None:
        raise CredentialUnavailable(
            f"`{ref.text}`: the 1Password CLI (`{options.op_command}`) is not installed or not "
            "on the daemon's PATH", reference=ref.text,
            hint="install 1Password CLI and sign in (`op signin`), or set a service account "
            "token (OP_SERVICE_ACCOUNT_TOKEN) for the daemon")
    try:
        # Its own process group, so that a timeout ends everything it started (a helper
        # that kept our pipes open would otherwise keep us waiting).
        with subprocess.Popen([command, "read", ref.text], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env=op_environment(os.environ),
                              start_new_session=True) as process:
            try:
                stdout, _ = process.communicate(timeout=options.op_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                raise CredentialUnavailable(
                    f"`{ref.text}`: `op read` did not answer within {options.op_timeout:g} s",
                    reference=ref.text, hint="is the 1Password app waiting for approval?",
                ) from None
    except OSError as exc:
        raise CredentialUnavailable(f"`{ref.text}`: `op` could not be run "
                                    f"({os.strerror(exc.errno or 0)})",
                                    reference=ref.text) from None
    if process.returncode != 0:
        raise CredentialUnavailable(
            f"`{ref.text}`: `op read` failed (exit status {process.returncode})",
            reference=ref.text,
            hint="check the reference with `op read` as the daemon's user, and that the CLI is "
            "signed in")
    return _text_value(stdout, ref.text)


# systemd


def _from_systemd(ref: CredentialRef, options: SourceOptions) -> str:
    directory = options.credentials_directory
    if directory is None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory or not directory.startswith("/"):
        raise CredentialUnavailable(
            f"`{ref.text}`: the daemon has no systemd credentials ($CREDENTIALS_DIRECTORY is "
            "not set)", reference=ref.text,
            hint=f"add LoadCredential={ref.name}:/path/to/secret to the nonod unit")
    # systemd makes the directory and its files private to the service; the mode check is
    # left to it (it uses 0400 or 0440 with the service's group).
    return _read_private_file(os.path.join(directory, ref.name), ref.text, owner=None,
                              check_mode=False)
