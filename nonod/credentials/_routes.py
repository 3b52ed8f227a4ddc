"""Credential routes: where each one forwards, how it injects, what the program is told.

A :class:`Route` is configuration only (no value). It comes from nonod's built-in table
(``nonod/data/credential_routes.json``, nono's route names and conventions) or from a
profile's ``custom_credentials``, and a session uses the routes its policy enables
(``network.credentials``, spelled ``proxy_credentials`` in older profiles, and
``--credential``); a custom definition of a built-in name replaces the built-in, as in nono.

nono's conventions, kept here:

- the keychain account (``credential_key``) of a built-in route defaults to its name
  (``gemini``), and may be any credential reference (``env://GITHUB_TOKEN``);
- the program gets ``<NAME>_BASE_URL=http://127.0.0.1:<port>/<name>`` (upper-cased name)
  and the phantom token in ``env_var``, or else in the upper-cased ``credential_key``
  (``gemini`` -> ``GEMINI``), or nowhere when the key is a URI without ``env_var``;
- a name with ``-`` (``google-ai``) also gets the ``_`` spelling of both variables
  (``GOOGLE_AI_BASE_URL``), since shells cannot use the other.

One departure from nono: a custom route that takes a built-in route's *name* or *credential*
(``github``, ``env://GITHUB_TOKEN``, the keychain account ``gemini``) must send it to the
built-in's upstream host (scheme, host and port; the path may differ), trusting no CA of its
own (``tls_ca``). Otherwise a profile
from a repository could keep the name a person reads (``credentials: github``, or
``--credential github`` typed on purpose) and send the real token to a host of its choosing
(:class:`~._errors.RouteElsewhere`).

:func:`load_route_secrets` reads each route's secret for a session (in worker threads). A
route whose secret cannot be read stays in the table without one (the proxy would answer its
requests with 503); :func:`require_route_secrets` turns such a route into a refused launch,
which is what the daemon does.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal, final
from urllib.parse import urlsplit

import msgspec
import trio

from .._data import read_data
from ..policy import CustomCredential, NetworkPolicy
from ._errors import BadValue, CredentialError, RouteElsewhere, UnknownRoute
from ._phantom import PhantomToken
from ._rules import EndpointRules
from ._secret import Secret
from ._sources import SourceKind, SourceOptions, parse_credential_ref, resolve_credential

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

InjectMode = Literal["header", "url_path", "query_param", "basic_auth"]

ROUTE_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HTTP_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_QUERY_NAME: Final = re.compile(r"[A-Za-z0-9_.-]+")
_LOOPBACK: Final = ("localhost", "127.0.0.1", "::1")


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One credential route. Checked when built: a Route that exists is usable.

    ``upstream`` is an ``https://`` URL (``http://`` only to a loopback host), whose path is
    the base every request path is appended to. ``credential_format`` holds ``{}`` exactly
    once. ``path_pattern``/``path_replacement`` (``url_path``) and ``query_param_name``
    (``query_param``) say where the phantom token and the real value travel in those modes.
    ``origin`` is ``builtin`` or ``profile``, or ``domain`` for a filter-only route: an
    ``allow_domain`` entry with ``endpoints`` (no ``credential_key``, nothing injected; its
    host is reached only through TLS interception, never as ``/<name>/...``).
    """

    name: str
    upstream: str
    credential_key: str
    inject_mode: InjectMode = "header"
    inject_header: str = "Authorization"
    credential_format: str = "Bearer {}"
    env_var: str | None = None
    path_pattern: str | None = None
    path_replacement: str | None = None
    query_param_name: str | None = None
    endpoint_rules: tuple[tuple[str, str], ...] = ()
    tls_ca: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    origin: Literal["builtin", "profile", "domain"] = "profile"

    def __post_init__(self) -> None:
        if not ROUTE_NAME.fullmatch(self.name):
            raise ValueError(f"`{self.name}` is not a route name (letters, digits, - _)")
        parts = urlsplit(self.upstream)
        host = parts.hostname or ""
        if parts.scheme not in ("https", "http") or not host or parts.username is not None \
                or parts.password is not None or parts.query or parts.fragment:
            raise ValueError(f"route {self.name}: `{self.upstream}` is not an https URL "
                             "without credentials, query or fragment")
        if parts.scheme == "http" and host not in _LOOPBACK and not host.startswith("127."):
            raise ValueError(f"route {self.name}: plain http upstreams are only allowed on "
                             "loopback")
        _ = parts.port  # raises ValueError for a bad port
        if self.filter_only:
            if parts.scheme != "https" or self.credential_key or self.env_var is not None:
                raise ValueError(f"route {self.name}: a domain route is https, without a "
                                 "credential")
        else:
            try:
                parse_credential_ref(self.credential_key)
            except CredentialError as exc:
                raise ValueError(f"route {self.name}: {exc.message}") from None
        if self.credential_format.count("{}") != 1:
            raise ValueError(f"route {self.name}: credential_format must hold `{{}}` once")
        if not _HTTP_TOKEN.fullmatch(self.inject_header):
            raise ValueError(f"route {self.name}: `{self.inject_header}` is not a header name")
        if self.env_var is not None and not _ENV_NAME.fullmatch(self.env_var):
            raise ValueError(f"route {self.name}: `{self.env_var}` is not a variable name")
        if self.inject_mode == "url_path":
            for text in (self.path_pattern, self.path_replacement or self.path_pattern):
                if text is None or text.count("{}") != 1 or not text.startswith("/"):
                    raise ValueError(f"route {self.name}: url_path needs path_pattern (and "
                                     "path_replacement) starting with `/` with `{}` once")
        if self.inject_mode == "query_param" and not (
                self.query_param_name and _QUERY_NAME.fullmatch(self.query_param_name)):
            raise ValueError(f"route {self.name}: query_param needs query_param_name")
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError(f"route {self.name}: tls_client_cert and tls_client_key go "
                             "together")
        self.rules()  # raises ValueError for a malformed rule

    # where it goes

    @property
    def scheme(self) -> str:
        return urlsplit(self.upstream).scheme

    @property
    def host(self) -> str:
        """The upstream host name, lower case (an IPv6 address without brackets)."""
        return (urlsplit(self.upstream).hostname or "").lower()

    @property
    def port(self) -> int:
        parts = urlsplit(self.upstream)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def authority(self) -> str:
        """``Host`` for upstream requests: the host, with the port when it is not the
        scheme's default."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def base_path(self) -> str:
        """The upstream URL's path without a trailing ``/`` (``/v1``, or empty)."""
        return urlsplit(self.upstream).path.rstrip("/")

    @property
    def source(self) -> SourceKind:
        return parse_credential_ref(self.credential_key).kind

    def rules(self) -> EndpointRules:
        where = ("built-in route " + self.name if self.origin == "builtin"
                 else f"network.allow_domain {self.host} endpoints" if self.filter_only
                 else f"network.custom_credentials.{self.name}.endpoint_rules")
        return EndpointRules(self.endpoint_rules, name=where)

    @property
    def filter_only(self) -> bool:
        """An ``allow_domain`` entry with ``endpoints``: rules, and no credential."""
        return self.origin == "domain"

    # what the program is told

    def base_url_variables(self) -> tuple[str, ...]:
        if self.filter_only:
            return ()
        return _spellings(f"{self.name.upper()}_BASE_URL")

    def phantom_variables(self) -> tuple[str, ...]:
        if self.filter_only:
            return ()
        if self.env_var is not None:
            return _spellings(self.env_var)
        if "://" in self.credential_key:
            return ()
        return _spellings(self.credential_key.upper())

    def injected_value(self, secret: Secret) -> str:
        """The header value put into requests (``header`` and ``basic_auth`` modes)."""
        if self.inject_mode == "basic_auth":
            import base64

            return "Basic " + base64.b64encode(secret.reveal().encode("utf-8")).decode("ascii")
        return self.credential_format.replace("{}", secret.reveal())


def injected_parts(route: Route, secret: Secret) -> tuple[bytes, ...]:
    """What an upstream reads out of the value the proxy injects, beyond the secret itself,
    that is secret too: for an ``Authorization: Basic`` value (``basic_auth``, or a header
    whose format is ``Basic {}`` with a secret that is already base64), the decoded
    ``user:password`` pair and the password (the user when the password is empty: an API
    key sent as the user, as Stripe's). A server that quotes what it read (an echo, an error
    page) quotes those, and the scrubber must know them (docs/credentials.md, "Scrubbing
    reflected secrets"). Empty for every other value."""
    if route.inject_mode not in ("header", "basic_auth"):
        return ()
    scheme, _, encoded = route.injected_value(secret).strip().partition(" ")
    if scheme.lower() != "basic":
        return ()
    try:
        pair = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return ()
    user, colon, password = pair.partition(b":")
    if not colon:
        return (pair,)
    return (pair, password or user)


def _spellings(name: str) -> tuple[str, ...]:
    if "-" in name:
        return name, name.replace("-", "_")
    return (name,)


class _BuiltinRoute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    upstream: str
    credential_key: str | None = None
    inject_header: str = "Authorization"
    credential_format: str = "Bearer {}"
    env_var: str | None = None


class _BuiltinTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: Literal[1]
    comment: str = ""
    routes: dict[str, _BuiltinRoute]


def builtin_routes() -> dict[str, Route]:
    """nonod's built-in routes by name (``nonod/data/credential_routes.json``): a new dict
    of the routes read once per process (a Route is frozen; the package's data file does not
    change under a running daemon, whose every launch asks for them, a few times)."""
    return dict(_builtin_table())


@functools.cache
def _builtin_table() -> Mapping[str, Route]:
    data = read_data("credential_routes.json")
    table = msgspec.json.decode(data, type=_BuiltinTable)
    return {
        name: Route(name=name, upstream=spec.upstream,
                    credential_key=spec.credential_key or name,
                    inject_header=spec.inject_header,
                    credential_format=spec.credential_format, env_var=spec.env_var,
                    origin="builtin")
        for name, spec in table.routes.items()
    }


def route_from_custom(name: str, custom: CustomCredential) -> Route:
    """A profile's ``custom_credentials`` entry as a Route (raises ValueError when it is
    unusable; the profile parser has already checked the same rules with JSON paths)."""
    if custom.inject_mode not in ("header", "url_path", "query_param", "basic_auth"):
        raise ValueError(f"route {name}: unknown inject_mode `{custom.inject_mode}`")
    mode: InjectMode = custom.inject_mode  # type: ignore[assignment]
    return Route(
        name=name, upstream=custom.upstream, credential_key=custom.credential_key or name,
        inject_mode=mode, inject_header=custom.inject_header,
        credential_format=custom.credential_format, env_var=custom.env_var,
        path_pattern=custom.path_pattern, path_replacement=custom.path_replacement,
        query_param_name=custom.query_param_name, endpoint_rules=custom.endpoint_rules,
        tls_ca=custom.tls_ca, tls_client_cert=custom.tls_client_cert,
        tls_client_key=custom.tls_client_key, origin="profile",
    )


def session_routes(network: NetworkPolicy,
                   builtins: Mapping[str, Route] | None = None) -> tuple[Route, ...]:
    """The routes a session's network policy enables, in the order it names them.

    Each name in ``network.credentials`` is looked up in the profile's ``custom_credentials``
    first, then among the built-ins. A ``custom_credentials`` entry that no name enables is
    not a route (nono behaves the same). Raises UnknownRoute naming what is available.
    """
    table = builtin_routes() if builtins is None else builtins
    custom = dict(network.custom_credentials)
    routes: list[Route] = []
    for name in network.credentials:
        if name in custom:
            try:
                route = route_from_custom(name, custom[name])
            except ValueError as exc:
                raise CredentialError(f"network.custom_credentials.{name}: {exc}",
                                      reference=name) from None
            _stays_home(route, table)
            routes.append(route)
        elif name in table:
            routes.append(table[name])
        else:
            known = ", ".join(sorted({*table, *custom}))
            raise UnknownRoute(f"unknown credential route `{name}`", reference=name,
                               hint=f"built-in and profile routes: {known}")
    if network.tls_intercept is not None:
        routes += _domain_routes(network, routes)
    return tuple(routes)


def _secret_of(reference: str) -> tuple[str, ...]:
    """What a reference reads, whatever its spelling (``gemini`` and ``keyring://nono/gemini``
    are one keychain entry)."""
    ref = parse_credential_ref(reference)
    return (ref.kind, ref.service, ref.account, ref.variable, ref.path, ref.name)


def _stays_home(route: Route, table: Mapping[str, Route]) -> None:
    """Refuse a profile's route that takes a built-in route's name or credential elsewhere."""
    place = (route.scheme, route.host, route.port)
    secret = _secret_of(route.credential_key)
    for builtin in table.values():
        takes = ("name" if builtin.name == route.name
                 else "credential" if _secret_of(builtin.credential_key) == secret else None)
        if takes is None:
            continue
        if place == (builtin.scheme, builtin.host, builtin.port):
            if route.tls_ca is None:
                continue
            # Trusting a CA the profile chose for the built-in's host would let whoever holds
            # that CA (and a place on the network path) read the credential.
            raise RouteElsewhere(
                f"network.custom_credentials.{route.name} uses the {takes} of the built-in "
                f"route `{builtin.name}` with a CA of its own (tls_ca {route.tls_ca})",
                reference=route.credential_key,
                hint="a built-in route's host is verified with the system's CAs and the "
                "daemon's [network] extra_ca_file only: drop tls_ca, or give the route "
                "another name and its secret another reference")
        raise RouteElsewhere(
            f"network.custom_credentials.{route.name} uses the {takes} of the built-in route "
            f"`{builtin.name}` ({builtin.credential_key}, for {builtin.upstream}) with another "
            f"upstream, {route.upstream}", reference=route.credential_key,
            hint="a built-in route's name and credential go to its own host only: give the "
            "route another name and its secret another reference")


def _domain_routes(network: NetworkPolicy, routes: Sequence[Route]) -> list[Route]:
    """The filter-only routes of ``allow_domain`` entries with ``endpoints`` (one per host,
    the rules of every entry for it together). A host that is also a credential route's is
    refused: which rules and which credential would apply is not for nonod to guess."""
    rules: dict[str, list[tuple[str, str]]] = {}
    for host, endpoints in network.endpoint_domains:
        rules.setdefault(host, []).extend(endpoints)
    taken = {route.host: route.name for route in routes if route.scheme == "https"}
    domain_routes = []
    for index, (host, host_rules) in enumerate(rules.items()):
        if host in taken:
            raise CredentialError(
                f"network.allow_domain: `{host}` has endpoints and is the upstream of route "
                f"`{taken[host]}` too", reference=taken[host],
                hint=f"put the endpoint rules on route `{taken[host]}` (endpoint_rules) and "
                "list the domain as a plain string")
        domain_routes.append(Route(name=f"allow_domain-{index}", upstream=f"https://{host}",
                                   credential_key="", endpoint_rules=tuple(host_rules),
                                   origin="domain"))
    return domain_routes


def credential_environment(routes: Iterable[Route], *, port: int,
                           token: PhantomToken) -> tuple[tuple[str, str], ...]:
    """The child's variables for its routes: each ``<NAME>_BASE_URL`` and each phantom
    variable (set to the session's phantom token). Nothing else about a credential."""
    if not 1 <= port <= 65535:
        raise ValueError("port out of range")
    out: dict[str, str] = {}
    for route in routes:
        for name in route.base_url_variables():
            out.setdefault(name, f"http://127.0.0.1:{port}/{route.name}")
        for name in route.phantom_variables():
            out.setdefault(name, token.reveal())
    return tuple(out.items())


@final
class LoadedRoute:
    """A route with its secret for one session, or without one and the reason why.
    Not a Struct: it holds a Secret and must never be encoded."""

    __slots__ = ("error", "route", "secret")

    def __init__(self, route: Route, secret: Secret | None,
                 error: CredentialError | None = None) -> None:
        if route.filter_only:
            if secret is not None or error is not None:
                raise ValueError("a domain route has no secret")
        elif (secret is None) == (error is None):
            raise ValueError("a LoadedRoute has a secret or an error, not both")
        self.route = route
        self.secret = secret
        self.error = error

    def __repr__(self) -> str:
        code = self.error.code if self.error is not None else ""
        state = "secret" if self.secret is not None else f"error={code}"
        return f"LoadedRoute({self.route.name}, {state})"


def check_injectable(route: Route, secret: Secret) -> None:
    """Raise BadValue when ``secret`` cannot go where ``route`` puts it (a header value with
    a line break or a control character, or with spaces around it)."""
    if route.inject_mode not in ("header",):
        return  # basic_auth is base64, url_path and query_param are percent-encoded
    value = route.injected_value(secret)
    if value != value.strip(" \t") or any(
            (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise BadValue(f"the value of `{route.credential_key}` cannot be sent in an HTTP header "
                       "(it has a line break, a control character, or surrounding spaces)",
                       reference=route.credential_key)


async def load_route_secrets(
    routes: Sequence[Route],
    *,
    environ: Mapping[str, str],
    keyring_backend: KeyringBackend | None = None,
    options: SourceOptions = SourceOptions(),  # noqa: B008 - frozen, immutable
) -> tuple[LoadedRoute, ...]:
    """Read every route's secret, one worker thread at a time (the keychain is one D-Bus
    connection anyway). A failure is kept with its route, not raised: the route answers 503."""
    loaded: list[LoadedRoute] = []
    for route in routes:
        if route.filter_only:
            loaded.append(LoadedRoute(route, None))
            continue
        read = functools.partial(resolve_credential, route.credential_key, environ=environ,
                                 keyring_backend=keyring_backend, options=options)
        try:
            secret = await trio.to_thread.run_sync(read)
            check_injectable(route, secret)
        except CredentialError as exc:
            loaded.append(LoadedRoute(route, None, exc))
            continue
        loaded.append(LoadedRoute(route, secret))
    return tuple(loaded)


def require_route_secrets(loaded: Sequence[LoadedRoute]) -> None:
    """Refuse a session one of whose routes has no secret: raise the first route's error
    (its class and code), with a message that names every such route and its reference (an
    ``env://`` reference names its variable), never a value. A program whose route could only
    ever answer 503 is better not started: the operator learns it at launch, not later from
    the program's failures."""
    failed = [(r.route, r.error) for r in loaded if r.error is not None]
    if not failed:
        return
    first = failed[0][1]
    parts = [f"route `{route.name}`: {error.message}" if route.credential_key in error.message
             else f"route `{route.name}` (`{route.credential_key}`): {error.message}"
             for route, error in failed]
    raise type(first)("the credential of a route is not available, so the session is not "
                      "started: " + "; ".join(parts), reference=first.reference,
                      hint=first.hint)


def intercepted_hosts(routes: Iterable[Route]) -> list[str]:
    """The hosts a session intercepts: those of its https credential routes."""
    return sorted({route.host for route in routes if route.scheme == "https"})


def policy_intercepts(net: NetworkPolicy) -> tuple[str, ...]:
    """The hosts a session of this network policy intercepts: none without
    ``tls_intercept`` or without the proxy (no network, or the host's network as it is)."""
    if net.tls_intercept is None or not net.restricted or net.block:
        return ()
    return tuple(intercepted_hosts(session_routes(net)))
