"""The daemon-owned keychain, for ``nonoctl secret set | list | delete | test``.

Entries live under keyring service ``nono`` with the credential's name as the account, exactly
where nono looks. On Linux (Secret Service) an entry carries the attributes ``service``,
``username`` and ``target=default``: the three that ``secret-tool store ... service nono
username NAME target default`` writes, as nono's documentation tells its users to do, and that
nono's keyring crate looks for. Entries made either way are found either way. Elsewhere (the
macOS Keychain) the ``keyring`` backend's own calls are used; they match nono's
``security add-generic-password -s nono -a NAME``.

Nothing here returns a value: ``list`` gives names and where they are stored, ``test`` says
whether a name is there. Every method blocks (D-Bus); call them from a worker thread.
"""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Any, Final, Literal, final

import msgspec

from ._errors import BadReference, CredentialNotFound, CredentialUnavailable
from ._secret import Secret
from ._sources import ACCOUNT_NAME, KEYRING_SERVICE, default_backend, keychain_errors

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

#: The attribute nono's keyring crate adds to every Secret Service entry it reads and writes.
_TARGET: Final = "default"


class SecretInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One stored credential: its name and where it lives (never its value)."""

    name: str
    source: str
    label: str = ""


class SecretStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of :meth:`Keychain.test`."""

    name: str
    found: bool
    source: str


@final
class Keychain:
    """The ``nono`` service of one keyring backend (by default ``keyring``'s choice)."""

    def __init__(self, backend: KeyringBackend | None = None, *,
                 service: str = KEYRING_SERVICE) -> None:
        self._backend = backend
        self._service = service

    @property
    def backend(self) -> KeyringBackend:
        return self._backend if self._backend is not None else default_backend()

    def describe(self) -> str:
        """Where entries go, for people: ``Secret Service (service nono)``..."""
        backend = self.backend
        kind = "Secret Service" if _secret_service(backend) else type(backend).__module__
        return f"{kind} (service {self._service})"

    def set(self, name: str, value: Secret) -> None:
        """Store ``value`` under ``name``, replacing every earlier entry of that name."""
        _check_name(name)
        if not isinstance(value, Secret):
            raise TypeError("Keychain.set takes a Secret")
        backend = self.backend
        with _translated(name):
            if _secret_service(backend):
                collection = backend.get_preferred_collection()  # type: ignore[attr-defined]
                with closing(collection.connection):
                    for item in collection.search_items(self._query(name)):
                        item.delete()
                    collection.create_item(
                        f"nono: {name}",
                        {**self._query(name), "target": _TARGET},
                        value.reveal().encode("utf-8"),
                        replace=True,
                    )
            else:
                backend.set_password(self._service, name, value.reveal())

    def delete(self, name: str) -> None:
        """Remove every entry of ``name``; CredentialNotFound if there is none."""
        _check_name(name)
        backend = self.backend
        with _translated(name):
            if _secret_service(backend):
                collection = backend.get_preferred_collection()  # type: ignore[attr-defined]
                with closing(collection.connection):
                    items = list(collection.search_items(self._query(name)))
                    for item in items:
                        item.delete()
                found = bool(items)
            else:
                from keyring.errors import PasswordDeleteError

                try:
                    backend.delete_password(self._service, name)
                    found = True
                except PasswordDeleteError:
                    found = False
        if not found:
            raise CredentialNotFound(f"no keychain entry named `{name}`", reference=name)

    def test(self, name: str) -> SecretStatus:
        """Whether ``name`` is stored (the value is read to be sure it is there, and dropped)."""
        _check_name(name)
        backend = self.backend
        with _translated(name):
            found = bool(backend.get_password(self._service, name))
        return SecretStatus(name=name, found=found, source=self.describe())

    def list(self) -> tuple[SecretInfo, ...]:
        """The names stored under the service, sorted. Needs a backend that can search
        (the Secret Service); others raise CredentialUnavailable with a hint."""
        backend = self.backend
        if not _secret_service(backend):
            raise CredentialUnavailable(
                f"this keychain ({type(backend).__module__}) cannot list its entries",
                hint="use `nonoctl secret test NAME` for one name")
        source = self.describe()
        names: dict[str, SecretInfo] = {}
        with _translated(""):
            collection = backend.get_preferred_collection()  # type: ignore[attr-defined]
            with closing(collection.connection):
                for item in collection.search_items({"service": self._service}):
                    attributes: dict[str, str] = item.get_attributes()
                    name = attributes.get("username", "")
                    if name and name not in names:
                        names[name] = SecretInfo(name=name, source=source,
                                                 label=str(item.get_label()))
        return tuple(names[name] for name in sorted(names))

    def _query(self, name: str) -> dict[str, str]:
        return {"service": self._service, "username": name}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
        raise BadReference(f"`{name}` is not a credential name (letters, digits, _ - ., at "
                           "most 128)", reference=str(name))


def _secret_service(backend: object) -> bool:
    try:
        from keyring.backends import SecretService
    except ImportError:
        return False
    return isinstance(backend, SecretService.Keyring)


@final
class _translated:
    """Turns a backend's failure into CredentialUnavailable (without its message text, which
    is about D-Bus, not the value, but is not ours to show)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> Literal[False]:
        if exc is not None and isinstance(exc, keychain_errors()):
            where = f" for `{self._name}`" if self._name else ""
            raise CredentialUnavailable(
                f"the keychain failed{where} ({type(exc).__name__})", reference=self._name,
                hint="is the Secret Service running and unlocked on the daemon's session bus?",
            ) from exc
        return False
