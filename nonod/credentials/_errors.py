"""Errors of the credentials area: one base class, a code per kind of failure.

Every message names the credential *reference* (``gemini``, ``env://GITHUB_TOKEN``,
``file:///run/keys/gh``) and says what went wrong; none ever contains a credential value, and
none carries the text of a value-bearing exception (``from exc`` keeps the cause for the
traceback, which the daemon renders without local variables).
"""

from __future__ import annotations

from ..errors import NonoError


class CredentialError(NonoError):
    """A credential could not be found, read or used. ``reference`` is what was asked for."""

    code = "credential.error"

    def __init__(self, message: str, *, reference: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reference = reference


class CredentialNotFound(CredentialError):
    """The store answered, and it has no such credential (or an empty one)."""

    code = "credential.not_found"


class CredentialUnavailable(CredentialError):
    """The store could not be asked: no keychain service, a locked keychain, no ``op`` binary,
    ``op`` failed or timed out, no ``$CREDENTIALS_DIRECTORY``."""

    code = "credential.unavailable"


class BadReference(CredentialError):
    """The reference itself is malformed (``keyring://nothing``, ``file://relative``...)."""

    code = "credential.bad_reference"


class UnsupportedSource(CredentialError):
    """A reference nono knows but nonod does not read here (``bw://``,
    ``apple-password://``)."""

    code = "credential.unsupported"


class SourceNotPermitted(CredentialError):
    """A source this caller may not use: the system daemon reads its own stores (environment,
    keychain, 1Password, systemd credentials) for root only."""

    code = "credential.not_permitted"


class InsecureSource(CredentialError):
    """A file that group or others can access, that is not owned by the expected user, that is
    not a regular file, that lies outside the configured roots, or that is no longer at the
    path its hosts were checked for (``SourceOptions.exact_paths``)."""

    code = "credential.insecure"


class BadValue(CredentialError):
    """The value cannot be used as asked (not UTF-8, too large, not valid in an HTTP header)."""

    code = "credential.bad_value"


class RouteElsewhere(CredentialError):
    """A profile's route takes a built-in route's name or credential to another upstream than
    the built-in's (``docs/credentials.md``, "Built-in names and credentials stay home")."""

    code = "credential.route_elsewhere"


class UnknownRoute(CredentialError):
    """A profile enables a credential route that is neither built in nor defined by the
    profile's ``custom_credentials``."""

    code = "credential.unknown_route"


class SecretElsewhere(CredentialError):
    """A route would send a secret to an upstream it has never been sent to
    (``docs/credentials.md``, "Each secret stays with its hosts")."""

    code = "credential.secret_elsewhere"


class SecretHostsError(CredentialError):
    """Where secrets have been sent cannot be read, kept or grown (the state directory's
    ``secret-hosts.json``, or its bounds), or a tool's session would bind a secret its
    agent's launch did not."""

    code = "credential.secret_hosts"
