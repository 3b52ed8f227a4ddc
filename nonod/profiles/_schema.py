"""The nono profile format as msgspec Structs.

The Structs mirror the JSON exactly, legacy spellings included (``security.groups``,
``policy.*``, ``network.allow_hosts``...): a parsed :class:`Profile` is what the file says.
Legacy keys are folded into their canonical ones when the profile is resolved, which is also
where the deprecation notes come from.

Scalars default to ``None`` (or ``UNSET`` where ``null`` has its own meaning) so that merging
can tell "absent, inherit the base" from "set". Every Struct refuses unknown keys; msgspec
reports type errors with their JSON path, and :func:`~._check.check_profile` (in
:mod:`._check`) adds the semantic checks (known variables, absolute paths, known group names,
features nonod refuses) with theirs.

The Structs stay together in one module although it is long: they are one schema that mirrors
nono's, nested section by section, and reading it top to bottom is how the file format is
learnt; splitting it by section would scatter one definition.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, final

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType


class _Section(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Base of every profile Struct: immutable, keyword-only, strict about unknown keys.

    ``omit_defaults`` makes an encoded profile list only what was set, so it decodes back to
    the same Profile (``profile show`` relies on that).
    """


When = str | tuple[str, ...]
# Keys nonod parses only to refuse them hold raw JSON; absent reads as null.
RAW_NULL: Final = Raw(b"null")
Port = Annotated[int, Meta(ge=1, le=65535)]
LocalPort = Annotated[int, Meta(ge=0, le=65535)]


@final
class ConditionalPath(_Section, frozen=True, kw_only=True):
    """``{"path": ..., "when": "linux"}``: a path that applies on some platforms only."""

    path: str
    when: When | None = None


@final
class ConditionalName(_Section, frozen=True, kw_only=True):
    name: str
    when: When | None = None


@final
class ConditionalOrigin(_Section, frozen=True, kw_only=True):
    origin: str
    when: When | None = None


PathEntry = str | ConditionalPath
NameEntry = str | ConditionalName
SignalMode = Literal["isolated", "allow_same_sandbox", "allow_all"]
WorkdirAccess = Literal["none", "read", "write", "readwrite"]
InjectMode = Literal["header", "url_path", "query_param", "basic_auth"]


@final
class ProfileMeta(_Section, frozen=True, kw_only=True):
    name: str | None = None
    version: str | None = None
    description: str | None = None
    author: str | None = None


@final
class SecurityConfig(_Section, frozen=True, kw_only=True):
    signal_mode: SignalMode | None = None
    process_info_mode: SignalMode | None = None
    ipc_mode: Literal["shared_memory_only", "full"] | None = None
    capability_elevation: bool | None = None
    wsl2_proxy_policy: Literal["error", "insecure_proxy"] | None = None
    groups: tuple[str, ...] = ()  # legacy: groups.include
    allowed_commands: tuple[str, ...] = ()  # legacy: commands.allow


@final
class GroupsConfig(_Section, frozen=True, kw_only=True):
    include: tuple[NameEntry, ...] = ()
    exclude: tuple[NameEntry, ...] = ()


@final
class CommandsConfig(_Section, frozen=True, kw_only=True):
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@final
class FilesystemConfig(_Section, frozen=True, kw_only=True):
    allow: tuple[PathEntry, ...] = ()
    read: tuple[PathEntry, ...] = ()
    write: tuple[PathEntry, ...] = ()
    allow_file: tuple[PathEntry, ...] = ()
    read_file: tuple[PathEntry, ...] = ()
    write_file: tuple[PathEntry, ...] = ()
    deny: tuple[PathEntry, ...] = ()
    bypass_protection: tuple[PathEntry, ...] = ()
    suppress_save_prompt: tuple[PathEntry, ...] = ()
    ignore: tuple[PathEntry, ...] = ()
    unix_socket: tuple[PathEntry, ...] = ()
    unix_socket_bind: tuple[PathEntry, ...] = ()
    unix_socket_dir: tuple[PathEntry, ...] = ()
    unix_socket_dir_bind: tuple[PathEntry, ...] = ()
    unix_socket_subtree: tuple[PathEntry, ...] = ()
    unix_socket_subtree_bind: tuple[PathEntry, ...] = ()


@final
class LegacyPolicy(_Section, frozen=True, kw_only=True):
    """The old top-level ``policy`` section; each key has a canonical home elsewhere."""

    exclude_groups: tuple[str, ...] = ()
    add_allow_read: tuple[str, ...] = ()
    add_allow_write: tuple[str, ...] = ()
    add_allow_readwrite: tuple[str, ...] = ()
    add_deny_access: tuple[str, ...] = ()
    add_deny_commands: tuple[str, ...] = ()
    override_deny: tuple[str, ...] = ()


@final
class EndpointRule(_Section, frozen=True, kw_only=True):
    method: str
    path: str


Decision = Literal["deny", "approve", "allow"]
Seconds = Annotated[int, Meta(ge=1)]


@final
class RoutedDecision(_Section, frozen=True, kw_only=True):
    """``{"decision": "approve", "backend": ..., "timeout_secs": ...}``."""

    decision: Decision
    backend: str | None = None
    timeout_secs: Seconds | None = None


@final
class PolicyRule(_Section, frozen=True, kw_only=True):
    """One rule of an ``endpoint_policy`` list; ``reason`` is for people."""

    method: str
    path: str
    backend: str | None = None
    reason: str | None = None
    timeout_secs: Seconds | None = None


@final
class EndpointPolicy(_Section, frozen=True, kw_only=True):
    """nono's ``endpoint_policy``: ``deny``, then ``approve``, then ``allow``, then ``default``.

    nonod enforces the allow-list form of it (see :func:`endpoint_allow_list`)."""

    default: Decision | RoutedDecision = "deny"
    deny: tuple[PolicyRule, ...] = ()
    approve: tuple[PolicyRule, ...] = ()
    allow: tuple[PolicyRule, ...] = ()

    @property
    def default_decision(self) -> Decision:
        return self.default if isinstance(self.default, str) else self.default.decision


def endpoint_allow_list(policy: EndpointPolicy) -> tuple[tuple[str, str], ...]:
    """The ``(method, path)`` allow-list a checked policy means: its ``allow`` rules under a
    ``deny`` default, nothing (every request passes) under an ``allow`` default."""
    if policy.default_decision == "allow":
        return ()
    return tuple((rule.method, rule.path) for rule in policy.allow)


@final
class DomainRule(_Section, frozen=True, kw_only=True):
    domain: str
    endpoints: tuple[EndpointRule, ...]


@final
class TlsInterceptConfig(_Section, frozen=True, kw_only=True):
    ca_lifecycle: Literal["session", "trusted"] | None = None
    ca_validity: str | None = None
    leaf_validity: str | None = None


@final
class CustomCredentialDef(_Section, frozen=True, kw_only=True):
    upstream: str
    credential_key: str | None = None
    auth: Raw = RAW_NULL
    aws_auth: Raw = RAW_NULL
    inject_mode: InjectMode = "header"
    inject_header: str = "Authorization"
    credential_format: str | None = None
    path_pattern: str | None = None
    path_replacement: str | None = None
    query_param_name: str | None = None
    proxy: Raw = RAW_NULL
    env_var: str | None = None
    endpoint_rules: tuple[EndpointRule, ...] = ()
    endpoint_policy: EndpointPolicy | None = None
    tls_ca: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None


ApprovalSeconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]


@final
class ApprovalBackendDef(_Section, frozen=True, kw_only=True):
    """One ``network.approval_backends`` entry (nono's shape). nonod runs ``queue`` (its own
    pending queue), ``webhook`` and ``chain``; ``key`` (nonod's addition) names the credential
    the webhook body is signed with. nono's ``terminal`` and ``dialog`` are refused: the daemon
    has no terminal or desktop of its own (``queue`` is the headless equivalent)."""

    type: Literal["queue", "webhook", "chain", "terminal", "dialog"]
    url: str | None = None
    timeout_secs: ApprovalSeconds | None = None
    mode: Literal["all", "any"] | None = None
    backends: tuple[str, ...] = ()
    key: str | None = None


@final
class ApprovalDefaults(_Section, frozen=True, kw_only=True):
    backend: str | None = None
    timeout_secs: ApprovalSeconds | None = None


@final
class NetworkConfig(_Section, frozen=True, kw_only=True):
    block: bool | UnsetType = UNSET
    allow_http2: bool | None = None
    # UNSET inherits the base profile's value; an explicit null clears it.
    network_profile: str | UnsetType | None = UNSET
    allow_domain: tuple[str | DomainRule, ...] = ()
    proxy_allow: tuple[str, ...] = ()  # legacy: allow_domain
    allow_proxy: tuple[str, ...] = ()  # legacy: allow_domain
    allow_hosts: tuple[str, ...] = ()  # legacy: allow_domain
    # None inherits; an explicit [] drops every inherited credential route.
    credentials: tuple[str, ...] | None = None
    proxy_credentials: tuple[str, ...] | None = None  # legacy: credentials
    open_port: tuple[LocalPort, ...] = ()
    port_allow: tuple[LocalPort, ...] = ()  # legacy: open_port
    allow_port: tuple[LocalPort, ...] = ()  # legacy: open_port
    listen_port: tuple[Port, ...] = ()
    connect_port: tuple[Port, ...] = ()
    custom_credentials: dict[str, CustomCredentialDef] = msgspec.field(default_factory=dict)
    tls_intercept: TlsInterceptConfig | None = None
    upstream_proxy: str | None = None
    external_proxy: str | None = None  # legacy: upstream_proxy
    upstream_bypass: tuple[str, ...] = ()
    external_proxy_bypass: tuple[str, ...] = ()  # legacy: upstream_bypass
    approval_backends: dict[str, ApprovalBackendDef] = msgspec.field(default_factory=dict)
    approval_defaults: ApprovalDefaults | None = None


@final
class EnvCredentialEntry(_Section, frozen=True, kw_only=True):
    env_var: str
    when: When | None = None


@final
class EnvironmentConfig(_Section, frozen=True, kw_only=True):
    allow_vars: tuple[str, ...] = ()
    deny_vars: tuple[str, ...] = ()
    set_vars: dict[str, str] = msgspec.field(default_factory=dict)


@final
class WorkdirConfig(_Section, frozen=True, kw_only=True):
    access: WorkdirAccess | None = None


@final
class LinuxConfig(_Section, frozen=True, kw_only=True):
    af_unix_mediation: Literal["off", "pathname"] | None = None
    #: "namespaces" (default): a private network namespace; "landlock": nono's model, the
    #: host's network with Landlock TCP rules to the proxy port only (weaker, reported).
    #: nono's own values: "auto" is the default here; "external" (nono leaves TCP to an
    #: outside firewall) gets the default too, since nonod always enforces the network.
    sandbox_policy: Literal["namespaces", "landlock", "auto", "external"] | None = None


@final
class HookConfig(_Section, frozen=True, kw_only=True):
    event: str
    matcher: str
    script: str


@final
class RollbackConfig(_Section, frozen=True, kw_only=True):
    exclude_patterns: tuple[str, ...] = ()
    exclude_globs: tuple[str, ...] = ()


@final
class OpenUrlConfig(_Section, frozen=True, kw_only=True):
    allow_origins: tuple[str | ConditionalOrigin, ...] = ()
    allow_localhost: bool | None = None


@final
class DiagnosticsConfig(_Section, frozen=True, kw_only=True):
    suppress_system_services: tuple[str, ...] = ()


@final
class LimitsConfig(_Section, frozen=True, kw_only=True):
    """``"nonod": {"limits": {...}}``: the session's resource limits (its own cgroup).

    ``memory`` (bytes or ``512M``; no swap on top), ``cpus`` (CPU time per second: 0.5 is half
    of one CPU), ``cpu_weight`` and ``io_weight`` (1..10000, 100 is the default share) and
    ``wall_clock`` (``1h``: the session is stopped after that long). The pid cap is
    ``nonod.max_processes``.
    """

    memory: str | Annotated[int, msgspec.Meta(ge=0)] | None = None
    cpus: Annotated[float, msgspec.Meta(gt=0, le=4096)] | None = None
    cpu_weight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    io_weight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    wall_clock: str | Annotated[float, msgspec.Meta(gt=0)] | None = None


@final
class NonodConfig(_Section, frozen=True, kw_only=True):
    """Settings only nonod reads, under a key nono does not use.

    ``allow_degraded`` names enforcement layers the session may run without (empty: every
    layer is required); ``writable_persistence`` names files under writable grants that stay
    writable although they can run code later (``.git/hooks``...); ``binary`` is the program to
    run when the launch request names none; ``shared_caches`` names cache directories a
    session writes to the host's copy of (by default a writable grant in the user's cache
    home is copy-on-write: the session's writes stay its own); ``unix_sockets`` lets the
    program create AF_UNIX sockets with ``socket()`` (refused by default: a pathname socket
    anywhere in its view, such as an agent's, would be reachable; ``socketpair`` always
    works). ``max_processes`` caps
    the session's processes and threads (absent: ``DEFAULT_MAX_PROCESSES``; 0: no cap).
    ``allow_root`` lets a root caller of the system daemon run this profile as root (the
    daemon's ``[sessions] allow_root`` must say so too). ``network_unlisted`` is what happens
    to a host the network policy does not allow: ``deny`` (403, the default) or ``ask`` (held
    while ``network.approval_defaults.backend`` decides, the daemon's queue when unset);
    ``approval_defaults.backend`` alone also means ``ask``.
    """

    allow_degraded: tuple[str, ...] = ()
    writable_persistence: tuple[str, ...] = ()
    shared_caches: tuple[str, ...] = ()
    binary: str | None = None
    unix_sockets: bool | None = None
    max_processes: Annotated[int, msgspec.Meta(ge=0, le=4_194_304)] | None = None
    limits: LimitsConfig = LimitsConfig()
    allow_root: bool | None = None
    network_unlisted: Literal["deny", "ask"] | None = None


@final
class Profile(_Section, frozen=True, kw_only=True):
    """One nono profile, as written. Build it with ``parse_profile`` or ``load_profile``."""

    schema_uri: str | None = msgspec.field(default=None, name="$schema")
    extends: str | tuple[str, ...] | None = None
    meta: ProfileMeta = ProfileMeta()
    security: SecurityConfig = SecurityConfig()
    groups: GroupsConfig = GroupsConfig()
    commands: CommandsConfig = CommandsConfig()
    filesystem: FilesystemConfig = FilesystemConfig()
    policy: LegacyPolicy = LegacyPolicy()
    network: NetworkConfig = NetworkConfig()
    env_credentials: dict[str, str | EnvCredentialEntry] = msgspec.field(default_factory=dict)
    secrets: dict[str, str | EnvCredentialEntry] = msgspec.field(default_factory=dict)
    environment: EnvironmentConfig | None = None
    workdir: WorkdirConfig = WorkdirConfig()
    linux: LinuxConfig = LinuxConfig()
    binary: str | None = None  # nono's spelling of nonod.binary
    command_args: tuple[str, ...] = ()
    brokered_commands: tuple[str, ...] = ()  # legacy: command_args
    nonod: NonodConfig = NonodConfig()
    # Accepted but not acted on (see docs/profiles.md): they change no enforcement.
    hooks: dict[str, HookConfig] = msgspec.field(default_factory=dict)
    rollback: RollbackConfig = RollbackConfig()
    undo: RollbackConfig = RollbackConfig()
    open_urls: OpenUrlConfig | None = None
    allow_launch_services: bool | None = None
    allow_gpu: bool | None = None
    allow_parent_of_protected: bool | None = None
    interactive: bool | None = None
    skipdirs: tuple[str, ...] = ()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    unsafe_macos_seatbelt_rules: tuple[str, ...] = ()
    # Refused when non-empty: nonod cannot provide what they promise.
    packs: tuple[str, ...] = ()
    session_hooks: Raw = RAW_NULL
    credential_capture: Raw = RAW_NULL
    command_policies: Raw = RAW_NULL

    def bases(self) -> tuple[str, ...]:
        """The ``extends`` names, as a tuple (empty when the profile extends nothing)."""
        if self.extends is None:
            return ()
        if isinstance(self.extends, str):
            return (self.extends,)
        return self.extends
