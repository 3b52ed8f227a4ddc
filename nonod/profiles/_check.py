"""The checks msgspec cannot express on a parsed :class:`~._schema.Profile`.

msgspec refuses unknown keys and wrong types with their JSON path; :func:`check_profile` adds
the semantic checks (known variables, absolute paths, known group names, features nonod
refuses), the first problem raising :class:`~nonod.errors.ProfileError` with its path. The
loader's helpers for error messages live here too: :func:`known_keys` and
:func:`allowed_values` read the schema's declared types at a JSON path.

The module is a little over 600 lines, and stays one: the checker is one walk over one
profile that follows the schema section by section, each check next to the section it checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Final, final

import msgspec
from msgspec import UNSET, Raw

from ..errors import ExtendsError, ProfileError, UnsupportedFeature
from . import _expand
from ._groups import GroupCatalog, NetworkCatalog, valid_host
from ._schema import (
    ConditionalName,
    ConditionalPath,
    CustomCredentialDef,
    DomainRule,
    EndpointPolicy,
    EndpointRule,
    EnvCredentialEntry,
    EnvironmentConfig,
    FilesystemConfig,
    NameEntry,
    NetworkConfig,
    NonodConfig,
    PathEntry,
    PolicyRule,
    Profile,
    TlsInterceptConfig,
    When,
)
from ._tools import decode_section

#: A backend of the daemon's ``[approvals.backends]`` (checked when the session is launched).
_DAEMON_BACKEND: Final = re.compile(r"daemon:[A-Za-z0-9_-]{1,64}")

PROFILE_NAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?")
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_-]+")
#: nono's duration form of ``tls_intercept`` (a bare number is seconds).
_TLS_DURATION: Final = re.compile(r"[1-9][0-9]*[smhd]?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_PATTERN = re.compile(r"[^*]+\*?|\*")
_LAYER_NAME = re.compile(r"[a-z][a-z0-9_]*")
_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_KEY_NAME = re.compile(r"[A-Za-z0-9_]+")
_KEY_SCHEMES: Final = ("op://", "bw://", "apple-password://", "apple-passwords://", "file://",
                         "env://", "keyring://", "systemd-creds://")
_WHEN = re.compile(r"!?(linux|macos)")
_LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]")
_PROXY_VARS: Final = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"})
_RESERVED_ENV_PREFIXES: Final = ("NONO_", "LD_")


def reserved_env_name(name: str) -> bool:
    """Names a profile may not set: the daemon owns PATH, the proxy variables and NONO_*."""
    upper = name.upper()
    return (
        upper == "PATH" or upper in _PROXY_VARS or upper.startswith(_RESERVED_ENV_PREFIXES)
    )


def raw_is_null(raw: Raw) -> bool:
    """True for an absent value or ``null`` only."""
    return bytes(raw).strip(b" \t\r\n") in (b"", b"null")


def raw_is_empty(raw: Raw) -> bool:
    """True for an absent value, ``null``, ``{}`` or ``[]``."""
    compact = bytes(raw).translate(None, b" \t\r\n")
    return compact in (b"", b"null", b"{}", b"[]")


def _key_path(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$-]*", key):
        return f"{path}.{key}"
    return f"{path}[{msgspec.json.encode(key).decode()}]"


@final
class _Checker:
    """Walks a decoded profile; the first problem raises ProfileError with its JSON path."""

    def __init__(self, source: str, groups: GroupCatalog, network: NetworkCatalog) -> None:
        self.source = source
        self.groups = groups
        self.network = network

    def fail(self, path: str, message: str, *, hint: str | None = None) -> ProfileError:
        return ProfileError(message, source=self.source, path=path, hint=hint)

    def unsupported(self, path: str, what: str, why: str, *, hint: str | None = None
                    ) -> UnsupportedFeature:
        return UnsupportedFeature(f"{what} is not supported by nonod: {why}",
                                  source=self.source, path=path, hint=hint)

    def run(self, profile: Profile) -> None:
        for index, base in enumerate(profile.bases()):
            where = "$.extends" if isinstance(profile.extends, str) else f"$.extends[{index}]"
            if is_registry_ref(base):
                raise ExtendsError(
                    f"`{base}` names a profile from a nono registry pack; nonod has no pack "
                    "store to fetch or verify it from",
                    source=self.source, path=where, hint=pack_hint(base),
                )
            if not PROFILE_NAME.fullmatch(base):
                raise self.fail(where, f"`{base}` is not a profile name (letters, digits, - _)")
        self.filesystem(profile)
        self.group_names(profile)
        self.commands(profile)
        self.network_section(profile.network)
        for key in ("env_credentials", "secrets"):
            self.env_credentials(f"$.{key}", getattr(profile, key))
        if profile.environment is not None:
            self.environment(profile.environment)
        for index, arg in enumerate(profile.command_args):
            self.variables(f"$.command_args[{index}]", arg)
        for index, arg in enumerate(profile.brokered_commands):
            self.variables(f"$.brokered_commands[{index}]", arg)
        self.nonod(profile.nonod)
        if profile.linux.af_unix_mediation == "pathname" and profile.nonod.unix_sockets:
            raise self.unsupported(
                "$.nonod.unix_sockets",
                "`nonod.unix_sockets` with `linux.af_unix_mediation: pathname`",
                "nonod cannot limit which socket paths a program connects to or binds",
                hint="drop nonod.unix_sockets: without it no AF_UNIX socket can be created "
                "at all, which is stricter than pathname mediation",
            )
        if profile.binary is not None:
            self.path_value("$.binary", profile.binary)
            if profile.nonod.binary is not None:
                raise self.fail("$.binary", "`binary` and `nonod.binary` are the same setting; "
                                "set one")
        self.refused(profile)

    # variables and paths

    def variables(self, path: str, text: str) -> None:
        try:
            _expand.references(text)
        except _expand.ExpansionError as exc:
            raise self.fail(path, str(exc)) from None

    def path_value(self, path: str, text: str) -> None:
        try:
            _expand.check_path(text)
        except _expand.ExpansionError as exc:
            raise self.fail(path, str(exc)) from None

    def when(self, path: str, when: When | None) -> None:
        if when is None:
            return
        items = (when,) if isinstance(when, str) else when
        if not items:
            raise self.fail(path, "`when` must name at least one platform")
        for item in items:
            if not _WHEN.fullmatch(item):
                raise self.fail(
                    path,
                    f"`when` predicate `{item}` is not supported by nonod: only `linux`, "
                    "`macos` and their negations (`!linux`) are",
                )

    def path_entries(self, path: str, entries: Sequence[PathEntry]) -> None:
        for index, entry in enumerate(entries):
            where = f"{path}[{index}]"
            if isinstance(entry, ConditionalPath):
                self.when(f"{where}.when", entry.when)
                self.path_value(f"{where}.path", entry.path)
            else:
                self.path_value(where, entry)

    def filesystem(self, profile: Profile) -> None:
        for field in FilesystemConfig.__struct_fields__:
            self.path_entries(f"$.filesystem.{field}", getattr(profile.filesystem, field))
        for field in ("add_allow_read", "add_allow_write", "add_allow_readwrite",
                      "add_deny_access", "override_deny"):
            self.path_entries(f"$.policy.{field}", getattr(profile.policy, field))

    # groups

    def group_names(self, profile: Profile) -> None:
        includes = [
            *self.names("$.groups.include", profile.groups.include),
            *((f"$.security.groups[{i}]", n) for i, n in enumerate(profile.security.groups)),
        ]
        excludes = [
            *self.names("$.groups.exclude", profile.groups.exclude),
            *((f"$.policy.exclude_groups[{i}]", n)
              for i, n in enumerate(profile.policy.exclude_groups)),
        ]
        for where, name in includes + excludes:
            if name not in self.groups.groups:
                raise self.fail(where, f"unknown group `{name}`", hint=self.group_hint(name))
        for where, name in includes:
            reason = self.groups.groups[name].unsupported
            if reason is not None:
                raise self.unsupported(where, f"group `{name}`", reason)
        for where, name in excludes:
            if self.groups.groups[name].required:
                raise self.fail(
                    where,
                    f"group `{name}` is required and cannot be excluded",
                    hint="to reach one path it denies, grant the path and list it in "
                    "filesystem.bypass_protection",
                )

    def names(self, path: str, entries: Sequence[NameEntry]) -> Iterator[tuple[str, str]]:
        for index, entry in enumerate(entries):
            if isinstance(entry, ConditionalName):
                self.when(f"{path}[{index}].when", entry.when)
                yield f"{path}[{index}].name", entry.name
            else:
                yield f"{path}[{index}]", entry

    def group_hint(self, name: str) -> str:
        import difflib  # here: only a profile with a mistake needs it

        close = difflib.get_close_matches(name, list(self.groups.groups), n=3)
        if close:
            return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
        return ("the built-in groups are the names in nonod/data/groups.json "
                "(docs/profiles.md, *Groups*)")

    # commands

    def commands(self, profile: Profile) -> None:
        why = (
            "a command denylist is checked against the first program only (nono deprecated it "
            "in 0.33 for that reason) and never stops a program that another one starts"
        )
        for where, key, names in (
            ("$.commands.deny", "`commands.deny`", profile.commands.deny),
            ("$.policy.add_deny_commands", "`policy.add_deny_commands`",
             profile.policy.add_deny_commands),
        ):
            if names:
                example = names[0] if "/" in names[0] else f"/usr/bin/{names[0]}"
                raise self.unsupported(
                    where, key, why,
                    hint=f"remove {key}; to keep a program out of reach, deny its file, e.g. "
                    f'"filesystem": {{"deny": ["{example}"]}}, or grant no directory that '
                    "holds it",
                )

    # network

    def host(self, path: str, host: str) -> None:
        if not valid_host(host.lower()):
            raise self.fail(path, f"`{host}` is not a host name (`api.example.com` or "
                                  "`*.example.com`, without scheme or port)")

    def tls_intercept(self, config: TlsInterceptConfig) -> None:
        where = "$.network.tls_intercept"
        if config.ca_lifecycle == "trusted":
            raise self.unsupported(
                f"{where}.ca_lifecycle", "`ca_lifecycle: trusted`",
                "it reuses a CA in the macOS user trust store; nonod makes a CA per session "
                "and trusts it in that session's view only", hint="remove ca_lifecycle or set "
                "it to `session`")
        for key in ("ca_validity", "leaf_validity"):
            value = getattr(config, key)
            if value is not None and not _TLS_DURATION.fullmatch(value):
                raise self.fail(f"{where}.{key}", f"`{value}` is not a duration (a positive "
                                "number of seconds, or with s, m, h or d: `15m`, `24h`)")

    def endpoint_domain(self, where: str, entry: DomainRule, net: NetworkConfig) -> None:
        """``{"domain": ..., "endpoints": [...]}``: method and path rules, which need the
        requests decrypted, so TLS interception; refused (never widened to the whole host)
        without it."""
        if net.tls_intercept is None:
            raise self.unsupported(
                f"{where}.endpoints", "per-endpoint rules on `allow_domain`",
                "without `network.tls_intercept` the requests are not decrypted, so the rules "
                "could not be enforced",
                hint='add "tls_intercept": {} to the network section (docs/network.md, TLS '
                "interception), or list the domain as a plain string to allow all of it")
        if entry.domain.startswith("*."):
            raise self.unsupported(
                f"{where}.domain", "per-endpoint rules on a wildcard domain",
                "interception covers exact host names", hint="list each host")
        for index, rule in enumerate(entry.endpoints):
            self.endpoint_rule(f"{where}.endpoints[{index}]", rule)

    def network_section(self, net: NetworkConfig) -> None:
        for index, entry in enumerate(net.allow_domain):
            where = f"$.network.allow_domain[{index}]"
            if isinstance(entry, DomainRule):
                self.host(f"{where}.domain", entry.domain)
                if entry.endpoints:
                    self.endpoint_domain(where, entry, net)
            else:
                self.host(where, entry)
        if net.tls_intercept is not None:
            self.tls_intercept(net.tls_intercept)
        for key in ("proxy_allow", "allow_proxy", "allow_hosts", "upstream_bypass",
                    "external_proxy_bypass"):
            for index, host in enumerate(getattr(net, key)):
                self.host(f"$.network.{key}[{index}]", host)
        if isinstance(net.network_profile, str) and (
            net.network_profile not in self.network.profiles
        ):
            raise self.fail(
                "$.network.network_profile",
                f"unknown network profile `{net.network_profile}`",
                hint="known: " + ", ".join(sorted(self.network.profiles)),
            )
        for key in ("credentials", "proxy_credentials"):
            for index, name in enumerate(getattr(net, key) or ()):
                if not _ROUTE_NAME.fullmatch(name):
                    raise self.fail(f"$.network.{key}[{index}]",
                                    f"`{name}` is not a credential name")
        for name, cred in net.custom_credentials.items():
            self.custom_credential(_key_path("$.network.custom_credentials", name), name, cred)
        self.approval_backends(net)
        if net.block is True and (
            net.allow_domain or net.proxy_allow or net.allow_proxy or net.allow_hosts
            or net.credentials or net.proxy_credentials or isinstance(net.network_profile, str)
        ):
            raise self.fail(
                "$.network.block",
                "`block: true` cannot be combined with allowed domains, a network profile or "
                "credential routes",
            )

    def approval_backends(self, net: NetworkConfig) -> None:
        base = "$.network.approval_backends"
        for name, backend in net.approval_backends.items():
            path = _key_path(base, name)
            if not _ROUTE_NAME.fullmatch(name) or name == "queue":
                raise self.fail(path, f"`{name}` is not a backend name (letters, digits, - _; "
                                "`queue` is the built-in daemon queue)")
            if backend.type in ("terminal", "dialog"):
                raise self.unsupported(path + ".type", f"the `{backend.type}` approval backend",
                                       "the daemon has no terminal or desktop of its own; use "
                                       "`queue` (nonoctl approvals) or a webhook")
            if backend.type == "webhook" and not (
                    backend.url and backend.url.startswith("https://") and backend.key):
                raise self.fail(path, "a webhook backend needs an `https://` url and a `key` "
                                "(the credential its body is signed with)")
            if backend.type == "chain":
                members = backend.backends
                if backend.mode is None or not members:
                    raise self.fail(path, "a chain needs `mode` (all or any) and `backends`")
                for member in members:
                    target = net.approval_backends.get(member)
                    if member != "queue" and not _DAEMON_BACKEND.fullmatch(member) and (
                            target is None or target.type == "chain"):
                        raise self.fail(path + ".backends", f"`{member}` is not a queue or "
                                        "webhook backend of this profile")
        defaults = net.approval_defaults
        if defaults is not None and defaults.backend is not None and (
                defaults.backend != "queue" and defaults.backend not in net.approval_backends
                and not _DAEMON_BACKEND.fullmatch(defaults.backend)):
            raise self.fail("$.network.approval_defaults.backend",
                            f"unknown approval backend `{defaults.backend}`")

    def custom_credential(self, path: str, name: str, cred: CustomCredentialDef) -> None:
        if not _ROUTE_NAME.fullmatch(name):
            raise self.fail(path, f"`{name}` is not a credential name (letters, digits, - _)")
        # `aws_auth: {}` is nono's signing route with every default (its documented Bedrock
        # example), not an absent one; an empty `proxy` overrides nothing.
        for field, what, empty in (("auth", "OAuth2 token exchange (`auth`)", raw_is_null),
                                   ("aws_auth", "AWS SigV4 signing (`aws_auth`)", raw_is_null),
                                   ("proxy", "proxy-side overrides (`proxy`)", raw_is_empty)):
            if not empty(getattr(cred, field)):
                raise self.unsupported(f"{path}.{field}", what,
                                       "nonod's proxy injects a stored credential only",
                                       hint="use `credential_key` with a header, url_path, "
                                       "query_param or basic_auth injection")
        self.upstream(f"{path}.upstream", cred.upstream)
        key = cred.credential_key
        if key is None:
            raise self.fail(path, "a custom credential needs `credential_key`")
        if not key:
            raise self.fail(f"{path}.credential_key", "`credential_key` is empty")
        self.not_captured(f"{path}.credential_key", key)
        uri = key.startswith(_KEY_SCHEMES)
        if not uri and not _KEY_NAME.fullmatch(key):
            raise self.fail(
                f"{path}.credential_key",
                f"`{key}` is neither a keychain account name (letters, digits, _) nor a "
                "credential URI (" + ", ".join(_KEY_SCHEMES) + ")",
            )
        if uri and not key.startswith("env://") and cred.env_var is None:
            raise self.fail(path, "`env_var` is required when `credential_key` is a URI")
        if cred.env_var is not None:
            self.env_var(f"{path}.env_var", cred.env_var)
        for field in ("inject_header", "credential_format", "path_pattern", "path_replacement",
                      "query_param_name"):
            value = getattr(cred, field)
            if value is not None and ("\r" in value or "\n" in value):
                raise self.fail(f"{path}.{field}", "must not contain CR or LF")
        if cred.inject_mode in ("header", "basic_auth") and not _HTTP_TOKEN.fullmatch(
            cred.inject_header
        ):
            raise self.fail(f"{path}.inject_header",
                            f"`{cred.inject_header}` is not an HTTP header name")
        if cred.inject_mode == "url_path":
            if cred.path_pattern is None or "{}" not in cred.path_pattern:
                raise self.fail(path, "inject_mode `url_path` needs `path_pattern` with `{}`")
            if cred.path_replacement is not None and "{}" not in cred.path_replacement:
                raise self.fail(f"{path}.path_replacement", "must contain `{}`")
        if cred.inject_mode == "query_param" and not (
            cred.query_param_name and re.fullmatch(r"[A-Za-z0-9_-]+", cred.query_param_name)
        ):
            raise self.fail(path, "inject_mode `query_param` needs `query_param_name` "
                                  "(letters, digits, - _)")
        for index, rule in enumerate(cred.endpoint_rules):
            self.endpoint_rule(f"{path}.endpoint_rules[{index}]", rule)
        if cred.endpoint_policy is not None:
            if cred.endpoint_rules:
                raise self.fail(path, "set `endpoint_policy` or `endpoint_rules`, not both",
                                hint="nono reads only endpoint_policy when both are present; "
                                "move the endpoint_rules into endpoint_policy.allow")
            self.endpoint_policy(f"{path}.endpoint_policy", cred.endpoint_policy)
        for field in ("tls_ca", "tls_client_cert", "tls_client_key"):
            value = getattr(cred, field)
            if value is not None:
                self.variables(f"{path}.{field}", value)
        if (cred.tls_client_cert is None) != (cred.tls_client_key is None):
            raise self.fail(path, "`tls_client_cert` and `tls_client_key` go together")

    def endpoint_rule(self, where: str, rule: EndpointRule | PolicyRule) -> None:
        if rule.method != "*" and not _HTTP_TOKEN.fullmatch(rule.method):
            raise self.fail(f"{where}.method", f"`{rule.method}` is not an HTTP method")
        if not rule.path.startswith("/"):
            raise self.fail(f"{where}.path", "must start with `/`")

    def endpoint_policy(self, path: str, policy: EndpointPolicy) -> None:
        """Accept what an allow-list enforces exactly; refuse the rest, saying how to write it.

        A ``deny`` rule is exact under a ``deny`` default when no ``allow`` rule can match its
        method (it then only repeats the default): nono's examples deny ``DELETE /**`` next
        to ``GET`` and ``POST`` allows."""
        for key in ("deny", "approve", "allow"):
            for index, rule in enumerate(getattr(policy, key)):
                self.endpoint_rule(f"{path}.{key}[{index}]", rule)
        no_prompts = "move each rule to `allow` (or drop it: the default denies)"
        if policy.approve:
            raise self.unsupported(f"{path}.approve", "`approve` (asking a person per request)",
                                   "nonod has no approval prompt", hint=no_prompts)
        default = policy.default_decision
        if default == "approve":
            raise self.unsupported(f"{path}.default", "an `approve` default",
                                   "nonod has no approval prompt",
                                   hint='use "default": "deny" and list what may pass in '
                                   "`allow`")
        allow_list = 'list what may pass in `allow` under "default": "deny"'
        if default == "allow" and policy.deny:
            raise self.unsupported(f"{path}.deny", "`deny` rules under an `allow` default",
                                   "nonod's endpoint rules are allow-lists", hint=allow_list)
        if default == "deny" and not policy.allow:
            raise self.fail(path, "this endpoint_policy lets no request through the route",
                            hint=f"{allow_list}, or remove the route")
        allowed = {rule.method.upper() for rule in policy.allow}
        for index, rule in enumerate(policy.deny):
            method = rule.method.upper()
            if method == "*" or "*" in allowed or method in allowed:
                raise self.unsupported(
                    f"{path}.deny[{index}]",
                    f"a `deny` rule for {method} next to `allow` rules for {method}",
                    "nonod's endpoint rules are allow-lists, so a deny cannot carve an "
                    "exception out of an allow",
                    hint="narrow the `allow` rules so they no longer match what this rule "
                    "denies, and drop the rule",
                )

    def upstream(self, path: str, url: str) -> None:
        match = re.fullmatch(r"(https?)://([^/?#@\s]+)([/?#]\S*)?", url)
        if match is None:
            raise self.fail(path, f"`{url}` is not an http(s) URL")
        scheme, authority = match.group(1), match.group(2)
        host = re.sub(r":\d+$", "", authority).lower()
        if scheme == "http" and host not in _LOOPBACK_HOSTS and not host.startswith("127."):
            raise self.fail(path, "upstreams must use https (plain http only on loopback)")

    # environment

    def env_var(self, path: str, name: str) -> None:
        if not _ENV_NAME.fullmatch(name):
            raise self.fail(path, f"`{name}` is not an environment variable name")
        if reserved_env_name(name):
            raise self.fail(path, f"`{name}` is reserved: nonod sets it itself")

    def not_captured(self, path: str, key: str) -> None:
        """nono's ``cmd://NAME``: the output of a ``credential_capture`` command."""
        if key.startswith("cmd://"):
            raise self.unsupported(path, "a `cmd://` credential (a `credential_capture` "
                                   "command's output)", "nonod never runs profile commands "
                                   "to fetch credentials",
                                   hint="store the value with `nonoctl secret set NAME` and "
                                   "name the keychain account NAME instead")

    def env_credentials(self, path: str, mapping: dict[str, str | EnvCredentialEntry]) -> None:
        for key, value in mapping.items():
            where = _key_path(path, key)
            if not key:
                raise self.fail(where, "empty credential reference")
            self.not_captured(where, key)
            if isinstance(value, EnvCredentialEntry):
                self.when(f"{where}.when", value.when)
                self.env_var(f"{where}.env_var", value.env_var)
            else:
                self.env_var(where, value)

    def environment(self, env: EnvironmentConfig) -> None:
        for key in ("allow_vars", "deny_vars"):
            for index, pattern in enumerate(getattr(env, key)):
                if not _ENV_PATTERN.fullmatch(pattern):
                    raise self.fail(f"$.environment.{key}[{index}]",
                                    f"`{pattern}`: `*` is only allowed at the end")
        for key, value in env.set_vars.items():
            where = _key_path("$.environment.set_vars", key)
            self.env_var(where, key)
            self.variables(where, value)

    # ours, and what we refuse

    def nonod(self, cfg: NonodConfig) -> None:
        for index, layer in enumerate(cfg.allow_degraded):
            if not _LAYER_NAME.fullmatch(layer):
                raise self.fail(f"$.nonod.allow_degraded[{index}]",
                                f"`{layer}` is not a layer name")
        self.path_entries("$.nonod.writable_persistence", cfg.writable_persistence)
        self.path_entries("$.nonod.shared_caches", cfg.shared_caches)
        if cfg.binary is not None:
            self.path_value("$.nonod.binary", cfg.binary)
        from .._units import parse_duration, parse_memory

        for key, parse in (("memory", parse_memory), ("wall_clock", parse_duration)):
            value = getattr(cfg.limits, key)
            if value is None:
                continue
            try:
                parse(value)
            except ValueError as exc:
                raise self.fail(f"$.nonod.limits.{key}", str(exc)) from None

    def refused(self, profile: Profile) -> None:
        if profile.packs:
            raise self.unsupported("$.packs", "`packs`",
                                   "nonod has no pack store to verify them against",
                                   hint=pack_hint(profile.packs[0]))
        if not raw_is_empty(profile.session_hooks):
            raise self.unsupported("$.session_hooks", "`session_hooks`",
                                   "nonod never runs profile scripts outside the sandbox")
        if not raw_is_empty(profile.credential_capture):
            raise self.unsupported("$.credential_capture", "`credential_capture`",
                                   "nonod never runs profile commands to fetch credentials; "
                                   "store them with `nonoctl secret set`")
        self.command_policies(profile.command_policies)

    def command_policies(self, raw: Raw) -> None:
        # Checked, and refused by name where nonod does not run a key (``_tools``).
        decode_section(raw, self.source)


_REGISTRY_REF = re.compile(r"[^./~][^/@]*/[^/@]+(@[^/]+)?")


def is_registry_ref(name: str) -> bool:
    """``owner/pack`` or ``owner/pack@version``: how nono names a registry pack."""
    return _REGISTRY_REF.fullmatch(name) is not None and not name.endswith(".json")


def pack_hint(ref: str) -> str:
    """What to do with a nono pack reference, since nonod cannot fetch one."""
    pack = ref.partition("@")[0]
    return (f"nono installs pack `{pack}` under ~/.config/nono/packages/{pack}/; copy the "
            "profile you need from its profiles/ directory to ~/.config/nono/profiles/NAME.json "
            "(after reading it) and extend `NAME` instead")


def check_meta(data: bytes, source: str) -> None:
    """nono requires ``meta.name`` (a string) whenever ``meta`` is present, and a string
    ``meta.version`` when it is given; the Struct's defaults cannot tell an absent ``meta``
    from an empty one, so look at the document itself."""
    try:
        probe = msgspec.json.decode(data, type=_MetaProbe)
    except msgspec.DecodeError:
        return  # the full decode reports it with its path
    if probe.meta is UNSET or not isinstance(probe.meta, dict):
        return
    for key in ("name", "version"):
        if key in probe.meta and not isinstance(probe.meta[key], str):
            raise ProfileError(f"`meta.{key}` must be a string", source=source,
                               path=f"$.meta.{key}")
    if "name" not in probe.meta:
        raise ProfileError("`meta` needs `name`, as in nono", source=source, path="$.meta",
                           hint='add "name": "<profile name>" to meta, or drop meta')


class _MetaProbe(msgspec.Struct):
    meta: object = UNSET


def check_profile(
    profile: Profile, source: str, groups: GroupCatalog, network: NetworkCatalog
) -> None:
    """Raise ProfileError (naming ``source`` and the JSON path) for the first problem found."""
    _Checker(source, groups, network).run(profile)


def _type_at(path: str) -> msgspec.inspect.Type | None:
    """The declared type of the value at JSON ``path`` (as msgspec reports paths), if known."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(Profile)
    for segment in re.findall(r"\.([^.\[]+)|\[[^\]]*\]", path):
        info = _unwrap(info)
        if segment == "":  # an index, or a dict value (msgspec writes `[...]`)
            if isinstance(info, msgspec.inspect.DictType):
                info = info.value_type
            elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.VarTupleType)):
                info = info.item_type
            else:
                return None
        elif isinstance(info, msgspec.inspect.StructType):
            match = [f for f in info.fields if f.encode_name == segment]
            if not match:
                return None
            info = match[0].type
        else:
            return None
    return info


def known_keys(path: str) -> tuple[str, ...]:
    """The keys allowed in the object at JSON ``path``, if it is one of ours."""
    info = _type_at(path)
    info = _unwrap(info) if info is not None else None
    if isinstance(info, msgspec.inspect.StructType):
        return tuple(f.encode_name for f in info.fields)
    return ()


def allowed_values(path: str) -> tuple[str, ...]:
    """The values a string enum at JSON ``path`` accepts, if it is one."""
    info = _type_at(path)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    for member in members:
        if isinstance(member, msgspec.inspect.LiteralType):
            return tuple(str(v) for v in member.values)
    return ()


def _unwrap(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """The one object-like member of a union (``X | None``, ``str | Struct``), else ``info``."""
    if isinstance(info, msgspec.inspect.UnionType):
        objects = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        if len(objects) == 1:
            return objects[0]
        collections = [
            t for t in info.types
            if isinstance(t, (msgspec.inspect.VarTupleType, msgspec.inspect.ListType))
        ]
        if len(collections) == 1:
            return collections[0]
    return info
