"""nono's ``command_policies`` section (tool sandboxes) as msgspec Structs, and its checks.

The Structs mirror nono's schema for the part nonod runs: a command's pinned ``executable``,
its ``sandbox`` (``fs_*`` grants, ``network.allow_domain``, named ``credentials`` with an
``endpoint_policy``, ``environment``) for the agent's own calls (``from.session``, or the
command-wide ``sandbox``), and its ``invocation_policy``. Keys nono has and nonod does not run
(chained tools through ``can_use``/``from.<tool>``, ``intercept``, raw ports...) are decoded
as raw JSON only to be refused by name (:func:`check_section`), never ignored.
"""

from __future__ import annotations

import re
from typing import Final, Literal, final

import msgspec
from msgspec import Raw

from ..errors import ProfileError, UnsupportedFeature
from ._schema import RAW_NULL, Decision, RoutedDecision, Seconds, _Section

SESSION: Final = "session"
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9._+-]+")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

@final
class ArgvMatcher(_Section, frozen=True, kw_only=True):
    """Exactly one of: the whole argument list, its first items, items it must hold."""

    exact: tuple[str, ...] | None = None
    prefix: tuple[str, ...] | None = None
    contains: tuple[str, ...] | None = None


@final
class EnvMatcher(_Section, frozen=True, kw_only=True):
    one_of: tuple[str, ...] | None = None
    equals: str | None = None


@final
class InvocationRule(_Section, frozen=True, kw_only=True):
    argv: ArgvMatcher | None = None
    env: dict[str, EnvMatcher] = msgspec.field(default_factory=dict)
    backend: str | None = None
    reason: str | None = None
    timeout_secs: Seconds | None = None


@final
class InvocationPolicy(_Section, frozen=True, kw_only=True):
    default: Decision | RoutedDecision = "allow"
    deny: tuple[InvocationRule, ...] = ()
    approve: tuple[InvocationRule, ...] = ()
    allow: tuple[InvocationRule, ...] = ()

    @property
    def default_decision(self) -> Decision:
        return self.default if isinstance(self.default, str) else self.default.decision


@final
class CredentialGrant(_Section, frozen=True, kw_only=True):
    name: str
    #: The profile schema's ``endpoint_policy`` (checked and enforced by the profile code).
    endpoint_policy: Raw = RAW_NULL


@final
class ToolNetwork(_Section, frozen=True, kw_only=True):
    allow_domain: tuple[str, ...] = ()
    allow_all: bool = False
    tcp_connect_ports: tuple[int, ...] = ()
    tcp_bind_ports: tuple[int, ...] = ()


@final
class ToolEnvironment(_Section, frozen=True, kw_only=True):
    allow_vars: tuple[str, ...] = ()
    set_vars: dict[str, str] = msgspec.field(default_factory=dict)


@final
class ToolSandbox(_Section, frozen=True, kw_only=True):
    fs_read: tuple[str, ...] = ()
    fs_read_file: tuple[str, ...] = ()
    fs_write: tuple[str, ...] = ()
    fs_write_file: tuple[str, ...] = ()
    use_credentials: tuple[str, ...] = ()
    credentials: tuple[str | CredentialGrant, ...] = ()
    network: ToolNetwork | None = None
    environment: ToolEnvironment | None = None
    # nono's, refused when set (check_section)
    argv_prepend: tuple[str, ...] = ()
    allow_raw_file_credentials_in_chained_policy: bool = False
    resources: Raw = RAW_NULL
    stdio: Raw = RAW_NULL
    open_urls: Raw = RAW_NULL
    allow_launch_services: bool = False

    def grants(self) -> tuple[CredentialGrant, ...]:
        """``use_credentials`` and ``credentials`` as one list of named grants."""
        named = [CredentialGrant(name=n) for n in self.use_credentials]
        named += [CredentialGrant(name=g) if isinstance(g, str) else g
                  for g in self.credentials]
        return tuple(named)


@final
class ToolEdge(_Section, frozen=True, kw_only=True):
    sandbox: ToolSandbox
    invocation_policy: InvocationPolicy | None = None


@final
class ToolCredential(_Section, frozen=True, kw_only=True):
    type: Literal["local-socket", "raw-file", "proxy", "ambient"]
    upstream: str | None = None
    credential_key: str | None = None
    env_var: str | None = None
    base_url_env_var: str | None = None
    inject_header: str | None = None
    credential_format: str | None = None
    tls_ca: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    path: str | None = None
    mode: str | None = None
    source: Raw = RAW_NULL


@final
class CommandPolicy(_Section, frozen=True, kw_only=True):
    executable: str | None = None
    allow_writable_executable: bool = False
    sandbox: ToolSandbox | None = None
    #: ``"deny"``, an edge (``sandbox`` + ``invocation_policy``) or a bare sandbox: decoded
    #: by :meth:`for_session`, which can tell the two objects apart.
    from_: dict[str, Raw] = msgspec.field(default_factory=dict, name="from")
    # nono's, refused when set (check_section)
    can_use: tuple[str, ...] = ()
    intercept: Raw = RAW_NULL
    allow_direct_exec_bypass: tuple[str, ...] = ()
    allow_direct_exec_bypass_with_credentials: bool = False

    def for_session(self, where: str = "$.command_policies", source: str = "profile"
                    ) -> Literal["deny"] | ToolEdge:
        """What applies when the agent's session runs the command: ``from.session`` (a bare
        sandbox there is an edge without an invocation policy), else the command's
        ``sandbox``, else an empty one."""
        raw = self.from_.get(SESSION)
        if raw is None:
            return ToolEdge(sandbox=self.sandbox or ToolSandbox())
        try:
            value = msgspec.json.decode(raw, type=Literal["deny"] | dict[str, Raw])
            if value == "deny":
                return "deny"
            if "sandbox" in value:
                return msgspec.json.decode(raw, type=ToolEdge)
            return ToolEdge(sandbox=msgspec.json.decode(raw, type=ToolSandbox))
        except msgspec.ValidationError as exc:
            raise _invalid(exc, f"{where}.from.session", source) from None


@final
class CommandPolicies(_Section, frozen=True, kw_only=True):
    commands: dict[str, CommandPolicy] = msgspec.field(default_factory=dict)
    credentials: dict[str, ToolCredential] = msgspec.field(default_factory=dict)
    # nono's, refused when set (check_section)
    executable_dirs: tuple[str, ...] = ()
    allow_writable_executables: bool = False
    entrypoint: str | None = None
    approval_backends: Raw = RAW_NULL
    approval_defaults: Raw = RAW_NULL
    deny_direct_exec_bypass: tuple[str, ...] = ()


def _raw_set(raw: Raw) -> bool:
    return bytes(raw).strip() not in (b"", b"null", b"{}", b"[]")


def _invalid(exc: msgspec.ValidationError, where: str, source: str) -> ProfileError:
    """msgspec's message, with its JSON path below ``where``."""
    text = str(exc)
    found = re.search(r" - at `\$(.*)`$", text)
    if found:
        where += found.group(1)
        text = text[: found.start()]
    return ProfileError(f"invalid tool sandbox section: {text}", source=source, path=where)


def key_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if _IDENTIFIER.fullmatch(key) else f'{prefix}["{key}"]'


def decode_section(raw: Raw, source: str) -> CommandPolicies | None:
    """The section, decoded and checked; None when it names no command (nono's tool sandbox
    is off then, and so is nonod's)."""
    if not _raw_set(raw):
        return None
    try:
        section = msgspec.json.decode(raw, type=CommandPolicies)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, "$.command_policies", source) from None
    if not section.commands:
        return None
    check_section(section, source)
    return section


def _unsupported(source: str, path: str, what: str, why: str, hint: str) -> UnsupportedFeature:
    return UnsupportedFeature(f"{what} is not supported by nonod: {why}", source=source,
                              path=path, hint=hint)


def check_section(section: CommandPolicies, source: str) -> None:
    """What nonod refuses by name, and references that must resolve."""
    top = "$.command_policies"
    for key, is_set in (("executable_dirs", bool(section.executable_dirs)),
                        ("allow_writable_executables", section.allow_writable_executables),
                        ("entrypoint", section.entrypoint is not None),
                        ("approval_backends", _raw_set(section.approval_backends)),
                        ("approval_defaults", _raw_set(section.approval_defaults)),
                        ("deny_direct_exec_bypass", bool(section.deny_direct_exec_bypass))):
        if is_set:
            raise _unsupported(source, f"{top}.{key}", f"`command_policies.{key}`",
                               "nonod's tool sandbox pins each command by its `executable` "
                               "and runs it in a child session of its own",
                               "remove the key; pin each command with `executable`")
    for name, cred in section.credentials.items():
        where = key_path(f"{top}.credentials", name)
        if cred.type != "proxy":
            raise _unsupported(source, f"{where}.type", f"a `{cred.type}` tool credential",
                               "nonod gives tools credentials through its proxy only",
                               'use "type": "proxy" with `upstream` and `credential_key`')
        if not cred.upstream or not cred.credential_key:
            raise ProfileError("a proxy tool credential needs `upstream` and "
                               "`credential_key`", source=source, path=where)
        if cred.base_url_env_var is not None:
            raise _unsupported(source, f"{where}.base_url_env_var", "`base_url_env_var`",
                               "the route's base URL is always in <NAME>_BASE_URL",
                               "remove it and read <NAME>_BASE_URL (the credential's name "
                               "upper-cased, `-` as `_`)")
    for name, command in section.commands.items():
        _check_command(section, name, command, source)


def _check_command(section: CommandPolicies, name: str, command: CommandPolicy,
                   source: str) -> None:
    where = key_path("$.command_policies.commands", name)
    if not _IDENTIFIER.fullmatch(name) or name.lower() in (".", "..", SESSION):
        raise ProfileError(f"`{name}` is not a command name", source=source, path=where)
    chained = "nonod runs the tools the agent's session calls, not tools that call tools"
    if command.can_use:
        raise _unsupported(source, f"{where}.can_use", "`can_use` (chained tools)", chained,
                           "remove `can_use`; a tool's own children run in its sandbox")
    for caller in command.from_:
        if caller != SESSION:
            raise _unsupported(source, key_path(f"{where}.from", caller),
                               f"a policy for calls from `{caller}`", chained,
                               "keep only `from.session`")
    for key, is_set in (("intercept", _raw_set(command.intercept)),
                        ("allow_direct_exec_bypass", bool(command.allow_direct_exec_bypass)),
                        ("allow_direct_exec_bypass_with_credentials",
                         command.allow_direct_exec_bypass_with_credentials)):
        if is_set:
            raise _unsupported(source, f"{where}.{key}", f"`{key}`",
                               "the daemon never lets a tool run around its child session",
                               f"remove `{key}`")
    if command.executable is not None and not command.executable.startswith("/"):
        raise ProfileError("`executable` must be an absolute path", source=source,
                           path=f"{where}.executable")
    edge = command.for_session(where, source)
    if edge == "deny":
        return
    raw_edge = command.from_.get(SESSION)
    edge_where = (f"{where}.sandbox" if raw_edge is None
                  else f"{where}.from.session.sandbox" if b'"sandbox"' in bytes(raw_edge)
                  else f"{where}.from.session")
    _check_sandbox(section, edge.sandbox, edge_where, source)
    if edge.invocation_policy is not None:
        _check_invocation(edge.invocation_policy, f"{where}.from.session.invocation_policy",
                          source)


def _check_sandbox(section: CommandPolicies, sandbox: ToolSandbox, where: str,
                   source: str) -> None:
    for key, is_set in (("argv_prepend", bool(sandbox.argv_prepend)),
                        ("resources", _raw_set(sandbox.resources)),
                        ("stdio", _raw_set(sandbox.stdio)),
                        ("open_urls", _raw_set(sandbox.open_urls)),
                        ("allow_launch_services", sandbox.allow_launch_services),
                        ("allow_raw_file_credentials_in_chained_policy",
                         sandbox.allow_raw_file_credentials_in_chained_policy)):
        if is_set:
            raise _unsupported(source, f"{where}.{key}", f"`sandbox.{key}`",
                               "nonod's tool sessions take filesystem, network, credential "
                               "and environment rules", f"remove `{key}`")
    net = sandbox.network
    if net is not None:
        for key, is_set in (("tcp_connect_ports", bool(net.tcp_connect_ports)),
                            ("tcp_bind_ports", bool(net.tcp_bind_ports)),
                            ("allow_all", net.allow_all)):
            if is_set:
                raise _unsupported(source, f"{where}.network.{key}", f"`network.{key}`",
                                   "a tool session reaches the network only through its "
                                   "proxy, host by host",
                                   "list the hosts the tool needs in `allow_domain`")
    for index, grant in enumerate(sandbox.grants()):
        if grant.name not in section.credentials:
            raise ProfileError(
                f"the tool credential `{grant.name}` is not defined in "
                "`command_policies.credentials`", source=source,
                path=f"{where}.credentials[{index}]")
    env = sandbox.environment
    for var in (env.set_vars if env is not None else {}):
        if not _ENV_NAME.fullmatch(var):
            raise ProfileError(f"`{var}` is not an environment variable name", source=source,
                               path=key_path(f"{where}.environment.set_vars", var))


def _check_invocation(policy: InvocationPolicy, where: str, source: str) -> None:
    queue_only = "a tool call is asked about on the daemon's own queue (`nonoctl approvals`)"
    if isinstance(policy.default, RoutedDecision) and policy.default.backend is not None:
        raise _unsupported(source, f"{where}.default.backend", "an approval `backend` for a "
                           "tool call", queue_only, "remove `backend`")
    for kind, rules in (("deny", policy.deny), ("approve", policy.approve),
                        ("allow", policy.allow)):
        for index, rule in enumerate(rules):
            here = f"{where}.{kind}[{index}]"
            if rule.backend is not None:
                raise _unsupported(source, f"{here}.backend", "an approval `backend` for a "
                                   "tool call", queue_only, "remove `backend`")
            if rule.timeout_secs is not None and kind != "approve":
                raise ProfileError("`timeout_secs` bounds an approval: only `approve` rules "
                                   "take it", source=source, path=f"{here}.timeout_secs")
            matcher = rule.argv
            count = 0 if matcher is None else sum(
                m is not None for m in (matcher.exact, matcher.prefix, matcher.contains))
            if matcher is not None and count != 1:
                raise ProfileError("an `argv` matcher needs exactly one of `exact`, `prefix`, "
                                   "`contains`", source=source, path=f"{here}.argv")
            if matcher is None and not rule.env:
                raise ProfileError("a rule needs an `argv` or an `env` matcher",
                                   source=source, path=here)
            for var, env in rule.env.items():
                if (env.one_of is None) == (env.equals is None):
                    raise ProfileError("an `env` matcher needs exactly one of `one_of`, "
                                       "`equals`", source=source,
                                       path=key_path(f"{here}.env", var))
