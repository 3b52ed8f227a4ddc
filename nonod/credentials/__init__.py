"""Credentials: where real secrets come from, and what a session sees instead.

Public face::

    routes = session_routes(policy.network)                   # Route per enabled name
    loaded = await load_route_secrets(routes, environ=os.environ)  # secrets read in threads
    require_route_secrets(loaded)                              # a missing one refuses
    token = PhantomToken.new()                                 # one per session
    env = credential_environment(routes, port=port, token=token)   # *_BASE_URL, phantom vars

    secret = resolve_credential("gemini", environ=env)        # blocking; a redacting Secret
    Keychain().set("github_token", Secret(value))              # `nonoctl secret set`

``EndpointRules`` is the one matcher for endpoint rules; ``Scrubber`` replaces reflected
secrets in streamed responses. Errors are ``CredentialError`` subclasses with ``credential.*``
codes, and no message ever holds a value. The user documentation is ``docs/credentials.md``.

The names load on first use (``nonod._lazy``): the session CA needs ``cryptography`` (OpenSSL,
~8 MiB of the daemon's memory), loaded when a session intercepts TLS, not with this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._errors import BadReference as BadReference
    from ._errors import BadValue as BadValue
    from ._errors import CredentialError as CredentialError
    from ._errors import CredentialNotFound as CredentialNotFound
    from ._errors import CredentialUnavailable as CredentialUnavailable
    from ._errors import InsecureSource as InsecureSource
    from ._errors import RouteElsewhere as RouteElsewhere
    from ._errors import SecretElsewhere as SecretElsewhere
    from ._errors import SecretHostsError as SecretHostsError
    from ._errors import SourceNotPermitted as SourceNotPermitted
    from ._errors import UnknownRoute as UnknownRoute
    from ._errors import UnsupportedSource as UnsupportedSource
    from ._hosts import ENVIRONMENT as ENVIRONMENT
    from ._hosts import LaunchBindings as LaunchBindings
    from ._hosts import SecretHosts as SecretHosts
    from ._hosts import origin_of as origin_of
    from ._hosts import real_references as real_references
    from ._hosts import trusting as trusting
    from ._keychain import Keychain as Keychain
    from ._keychain import SecretInfo as SecretInfo
    from ._keychain import SecretStatus as SecretStatus
    from ._phantom import PhantomToken as PhantomToken
    from ._routes import ROUTE_NAME as ROUTE_NAME
    from ._routes import InjectMode as InjectMode
    from ._routes import LoadedRoute as LoadedRoute
    from ._routes import Route as Route
    from ._routes import builtin_routes as builtin_routes
    from ._routes import check_injectable as check_injectable
    from ._routes import credential_environment as credential_environment
    from ._routes import injected_parts as injected_parts
    from ._routes import intercepted_hosts as intercepted_hosts
    from ._routes import load_route_secrets as load_route_secrets
    from ._routes import policy_intercepts as policy_intercepts
    from ._routes import require_route_secrets as require_route_secrets
    from ._routes import route_from_custom as route_from_custom
    from ._routes import session_routes as session_routes
    from ._rules import EndpointDenied as EndpointDenied
    from ._rules import EndpointRule as EndpointRule
    from ._rules import EndpointRules as EndpointRules
    from ._rules import EndpointVerdict as EndpointVerdict
    from ._rules import NormalisedPath as NormalisedPath
    from ._rules import PathRefused as PathRefused
    from ._rules import normalise_path as normalise_path
    from ._scrub import Scrubber as Scrubber
    from ._scrub import scrub_replacements as scrub_replacements
    from ._secret import Secret as Secret
    from ._session_ca import SessionCA as SessionCA
    from ._session_ca import session_trust as session_trust
    from ._sources import KEYRING_SERVICE as KEYRING_SERVICE
    from ._sources import CredentialRef as CredentialRef
    from ._sources import SourceKind as SourceKind
    from ._sources import SourceOptions as SourceOptions
    from ._sources import parse_credential_ref as parse_credential_ref
    from ._sources import resolve_credential as resolve_credential
    from ._sources import resolve_env_credentials as resolve_env_credentials
    from ._sources import source_kind as source_kind
else:
    __getattr__, __dir__ = exports(__name__, {
        "_errors": (
            "BadReference", "BadValue", "CredentialError", "CredentialNotFound",
            "CredentialUnavailable", "InsecureSource", "RouteElsewhere", "SecretElsewhere",
            "SecretHostsError", "SourceNotPermitted", "UnknownRoute", "UnsupportedSource",
        ),
        "_hosts": ("ENVIRONMENT", "LaunchBindings", "SecretHosts", "origin_of", "real_references",
                   "trusting"),
        "_keychain": ("Keychain", "SecretInfo", "SecretStatus"),
        "_phantom": ("PhantomToken",),
        "_routes": (
            "ROUTE_NAME", "InjectMode", "LoadedRoute", "Route", "builtin_routes",
            "check_injectable", "credential_environment", "injected_parts", "intercepted_hosts",
            "load_route_secrets", "policy_intercepts", "require_route_secrets",
            "route_from_custom", "session_routes",
        ),
        "_rules": (
            "EndpointDenied", "EndpointRule", "EndpointRules", "EndpointVerdict",
            "NormalisedPath", "PathRefused", "normalise_path",
        ),
        "_scrub": ("Scrubber", "scrub_replacements"),
        "_secret": ("Secret",),
        "_sources": (
            "KEYRING_SERVICE", "CredentialRef", "SourceKind", "SourceOptions",
            "parse_credential_ref", "resolve_credential", "resolve_env_credentials",
            "source_kind",
        ),
        "_session_ca": ("SessionCA", "session_trust"),
    })
