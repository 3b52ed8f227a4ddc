"""``nonod.toml``: the daemon's configuration, parsed strictly.

The file is TOML (read with :mod:`tomllib`) and maps onto the frozen Structs below. Every
section and key is optional; a missing file at the default location means "all defaults".
Unknown sections, unknown keys and bad values are errors that name the key
(``daemon.max_connections: Expected int >= 1``): a typo in a security tool's configuration must
not be silently ignored.

Sections: ``[daemon]`` and ``[sessions]``. Later areas add their own sections here
(``[network]``, ``[credentials]``, ``[audit]``, ``[metrics]``) as fields of :class:`Config`,
each a Struct with defaults, so that existing files keep loading. Every key is documented in
``docs/configuration.md``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from ._xdg import own_config_dir
from .errors import NonoError

KiB: Final = 1024
MiB: Final = 1024 * KiB


class ConfigError(NonoError):
    """``nonod.toml`` could not be read, parsed or validated."""

    code = "config.invalid"


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Strict, immutable, with defaults for every key, so that sections can grow."""


def _check_abs(key: str, value: str | None) -> None:
    if value is not None and not value.startswith("/"):
        raise ValueError(f"{key} must be an absolute path, got {value!r}")


class DaemonSection(_Section, frozen=True, kw_only=True):
    #: Control socket path; ``--socket`` overrides it.
    socket: str | None = None
    #: System daemon only: a group whose members may connect (directory 0750, socket 0660).
    socket_group: str | None = None
    #: Where session records and output logs live.
    state_dir: str | None = None
    #: Directory of named user profiles (``NAME.json``).
    profile_dir: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    #: Concurrent control connections; more are refused at once.
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 256
    #: Concurrent control connections of one uid (so one user cannot take every slot).
    max_connections_per_uid: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 128
    #: Largest control message, in bytes.
    max_message_bytes: Annotated[int, msgspec.Meta(ge=4 * KiB, le=64 * MiB)] = 1 * MiB
    #: Seconds a new connection has to finish the WebSocket and hello handshakes.
    handshake_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    #: Seconds a connection may wait between requests before it is closed.
    idle_timeout: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 600.0
    #: Seconds a client has to take one message; one that stops reading is dropped.
    send_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0

    def __post_init__(self) -> None:
        _check_abs("socket", self.socket)
        _check_abs("state_dir", self.state_dir)
        _check_abs("profile_dir", self.profile_dir)


class SessionsSection(_Section, frozen=True, kw_only=True):
    #: Sessions starting or running at once (all users together).
    max_live: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1024
    #: System daemon: sessions one uid may have starting or running at once, so that one
    #: user cannot take every place of ``max_live`` (a user daemon has one caller). None:
    #: a quarter of ``max_live`` (:meth:`live_per_uid`).
    max_live_per_uid: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    #: Seconds between SIGTERM and SIGKILL for ``stop`` (``--timeout`` overrides it).
    stop_grace: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    #: Seconds between SIGTERM and SIGKILL when the daemon itself stops.
    shutdown_grace: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    #: System daemon: may a root caller launch a session as root? The profile must allow it too.
    allow_root: bool = False
    #: Output kept in memory per session (for ``attach`` and ``logs``).
    output_buffer_bytes: Annotated[int, msgspec.Meta(ge=4 * KiB, le=64 * MiB)] = 256 * KiB
    #: Largest ``output.log`` per session; later output is kept only in memory.
    log_max_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 40)] = 64 * MiB
    #: Every session's ``oom_score_adj``: under memory pressure the kernel kills a session's
    #: programs before the daemon (which keeps its own, lowered by the service unit).
    oom_score_adj: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 800

    def live_per_uid(self) -> int:
        """``max_live_per_uid``, or a quarter of ``max_live`` when it is not set."""
        if self.max_live_per_uid is not None:
            return self.max_live_per_uid
        return max(1, self.max_live // 4)


class NetworkSection(_Section, frozen=True, kw_only=True):
    #: Operator pinning, like curl's --resolve: host name -> "address:port". Pinned addresses
    #: skip the private-range refusal because the operator chose them.
    resolve: dict[str, str] = msgspec.field(default_factory=dict)
    #: Let allowed names resolve to private (RFC 1918, ULA) addresses.
    allow_private: bool = False
    #: A PEM bundle trusted for upstream TLS besides the system roots.
    extra_ca_file: str | None = None
    #: Where --listen-port listens on the host.
    listen_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        _check_abs("network.extra_ca_file", self.extra_ca_file)


class AuditSection(_Section, frozen=True, kw_only=True):
    #: Write each session's audit.ndjson (hash chain, sealed at the end).
    enabled: bool = True
    #: Seconds between fsyncs of a live session's audit file (and at its end).
    fsync_interval: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0
    #: Trust key (keychain name or ``file:///abs/path`` ref) that signs every sealed session;
    #: ``launch --audit-sign-key`` overrides it per session. A key that cannot be loaded
    #: refuses the launch.
    sign_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    #: Remove sealed sessions (their directory: audit file, record, output) older than this
    #: many days, at daemon start and after each seal. None: keep them.
    keep_days: Annotated[float, msgspec.Meta(gt=0, le=100_000)] | None = None
    #: Keep only this many most recently sealed sessions. None: no limit.
    keep_sessions: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] | None = None
    #: Records a live subscriber (``logs -f``, ``events -f``) may have unread before it is
    #: dropped.
    subscriber_buffer: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 256
    #: Filesystem denials (``fs_denied`` events) through the kernel's audit subsystem, when
    #: the daemon is root: ``auto`` enables auditing only if no audit daemon manages it,
    #: ``kernel`` enables it regardless, ``off`` never touches it. Read at daemon start.
    fs_denied: Literal["auto", "kernel", "off"] = "auto"
    #: The most bytes one session's audit file may take. A session that reaches it (a
    #: program looping on refused requests writes a record for each) is stopped with reason
    #: ``audit_limit``: the daemon's disk is not the session's to fill, and nothing it does
    #: goes unrecorded.
    session_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 50)] = 1 << 30
    #: The most bytes one user's session directories may keep on the system daemon: audit
    #: files, live and sealed (until retention removes them), and ended sessions' output logs
    #: (until pruned). The session whose audit record reaches it is stopped (``audit_limit``)
    #: and that user's launches are refused (``session.limit``) until ``prune`` or retention
    #: (``keep_days``, ``keep_sessions``) frees room. A user daemon has one user.
    user_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 50)] = 8 << 30

    def __post_init__(self) -> None:
        if self.sign_key is not None and "\x00" in self.sign_key:
            raise ValueError("audit.sign_key contains a NUL character")


class ApprovalBackendSection(_Section, frozen=True, kw_only=True):
    """``[approvals.backends.NAME]``: a webhook the operator offers every profile, which
    names it ``daemon:NAME`` (docs/approvals.md)."""

    type: Literal["webhook"]
    url: Annotated[str, msgspec.Meta(pattern=r"^https://[^\s]+$", max_length=2048)]
    #: The HMAC key: a credential reference read with the daemon's own rights.
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    timeout_secs: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None


class ApprovalsSection(_Section, frozen=True, kw_only=True):
    #: Seconds a held request waits for an approval before it is denied (docs/approvals.md).
    timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    backends: dict[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")],
                   ApprovalBackendSection] = msgspec.field(default_factory=dict)


class SandboxSection(_Section, frozen=True, kw_only=True):
    #: ``auto``: namespaces where the kernel lets the daemon create them, else
    #: ``landlock-only`` (no namespaces: Landlock, seccomp, the Landlock network; profiles
    #: that need a mount namespace are refused unless they accept the weaker mode). Read when
    #: the launcher starts (a reload does not change a running launcher's mode).
    mode: Literal["auto", "namespaces", "landlock-only"] = "auto"
    #: The fork server keeps two launchers ready per kind of launch (user, namespaces, audit
    #: tag), so that launches back to back all find one; once no launch of a kind came for
    #: this long, it keeps one (each is two processes, ~1 MiB of their own apiece). Read
    #: when the launcher starts.
    warm_idle: Duration = 30.0

    def __post_init__(self) -> None:
        from ._units import parse_duration

        parse_duration(self.warm_idle)


Size = str | Annotated[int, msgspec.Meta(ge=1 << 20)]
Duration = str | Annotated[float, msgspec.Meta(gt=0)]
Cpus = Annotated[float, msgspec.Meta(gt=0, le=4096)]
Weight = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
Processes = Annotated[int, msgspec.Meta(ge=1, le=4_194_304)]


class LimitsSection(_Section, frozen=True, kw_only=True):
    """``[limits]``: defaults for sessions that ask for none, and ceilings no caller may go
    above (a session that asks for nothing gets the ceiling). Sizes as ``512M``, durations as
    ``1h``."""

    #: Give each session its own cgroup (limits and accounting). Off: no accounting, and a
    #: launch that asks for a limit is refused unless its profile accepts degraded limits.
    cgroups: bool = True
    memory: Size | None = None
    cpus: Cpus | None = None
    cpu_weight: Weight | None = None
    io_weight: Weight | None = None
    wall_clock: Duration | None = None
    max_memory: Size | None = None
    max_processes: Processes | None = None
    max_cpus: Cpus | None = None
    max_cpu_weight: Weight | None = None
    max_io_weight: Weight | None = None
    max_wall_clock: Duration | None = None

    def __post_init__(self) -> None:
        from ._units import parse_duration, parse_memory

        for key in ("memory", "max_memory"):
            if getattr(self, key) is not None:
                parse_memory(getattr(self, key))
        for key in ("wall_clock", "max_wall_clock"):
            if getattr(self, key) is not None:
                parse_duration(getattr(self, key))


class MetricsSection(_Section, frozen=True, kw_only=True):
    #: Serve Prometheus metrics (``GET /metrics``) on ``listen``.
    enabled: bool = False
    #: ``ADDRESS:PORT`` (an IP literal; ``[::1]:9464`` for IPv6) or ``unix:/abs/path``.
    listen: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = "127.0.0.1:9464"
    #: Allow a ``listen`` address that is not loopback (the endpoint has no authentication).
    allow_remote: bool = False

    def __post_init__(self) -> None:
        endpoint = metrics_endpoint(self.listen)
        if (isinstance(endpoint, tuple) and not self.allow_remote
                and not ipaddress.ip_address(endpoint[0]).is_loopback):
            raise ValueError(f"metrics.listen {self.listen!r} is not a loopback address "
                             "(set metrics.allow_remote = true to serve it anyway)")


def metrics_endpoint(listen: str) -> str | tuple[str, int]:
    """``[metrics] listen`` parsed: a Unix socket path, or ``(ip, port)``; ValueError if it
    is neither ``unix:/abs/path`` nor ``IP:PORT``."""
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:")
        _check_abs("metrics.listen", path)
        return path
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        address, number = None, -1
    if not sep or address is None or not 0 < number < 65_536:
        raise ValueError(f"metrics.listen must be IP:PORT or unix:/abs/path, got {listen!r}")
    return str(address), number


class ExportSection(_Section, frozen=True, kw_only=True):
    """One ``[[export]]`` table: a sink audit records are shipped to (docs/operations.md)."""

    #: Names the sink in logs and its cursor file (``<state>/export/<name>.json``).
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    #: ``syslog`` (RFC 5424 over TCP/TLS), ``otlp`` (OTLP/HTTP logs), ``envelope`` (a signed
    #: envelope per sealed session, POSTed).
    type: Literal["syslog", "otlp", "envelope"]
    #: syslog: ``host:port`` of the receiver.
    address: Annotated[str, msgspec.Meta(min_length=3, max_length=300)] | None = None
    #: syslog: TLS (RFC 5425) instead of plain TCP.
    tls: bool = False
    #: otlp, envelope: the URL POSTed to (``http://host:4318/v1/logs``).
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2048)] | None = None
    #: A PEM bundle trusted for this sink's TLS (default: the system roots).
    ca_file: str | None = None
    #: syslog: the facility (``audit`` = 13).
    facility: Literal["kern", "user", "daemon", "auth", "syslog", "authpriv", "audit",
                      "local0", "local1", "local2", "local3", "local4", "local5", "local6",
                      "local7"] = "audit"
    #: Records per batch (record sinks).
    batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    #: Unacknowledged bytes beyond which the backlog is reported full (nothing is dropped).
    max_backlog_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)] = 256 * MiB
    #: Retry backoff: from ``retry_min`` seconds, doubling, capped at ``retry_max``, jittered.
    retry_min: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 0.5
    retry_max: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    #: Seconds a delivery may take.
    timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0

    def __post_init__(self) -> None:
        _check_abs(f"export {self.name}: ca_file", self.ca_file)
        if self.type == "syslog":
            if self.address is None or self.url is not None:
                raise ValueError(f"export {self.name}: a syslog sink needs `address` "
                                 "(host:port), not `url`")
            host, sep, port = self.address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"export {self.name}: address must be host:port")
        else:
            if self.url is None or self.address is not None or self.tls:
                raise ValueError(f"export {self.name}: type {self.type} needs `url` "
                                 "(https:// for TLS), not `address` or `tls`")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"export {self.name}: url must be http:// or https://")


class Config(_Section, frozen=True, kw_only=True):
    daemon: DaemonSection = DaemonSection()
    sandbox: SandboxSection = SandboxSection()
    sessions: SessionsSection = SessionsSection()
    network: NetworkSection = NetworkSection()
    audit: AuditSection = AuditSection()
    approvals: ApprovalsSection = ApprovalsSection()
    limits: LimitsSection = LimitsSection()
    metrics: MetricsSection = MetricsSection()
    #: ``[[export]]`` tables: where audit records are shipped (read at daemon start).
    export: tuple[ExportSection, ...] = ()

    def __post_init__(self) -> None:
        names = [e.name for e in self.export]
        if len(set(names)) != len(names):
            raise ValueError("two [[export]] tables have the same name")
        if any(e.type == "envelope" for e in self.export) and self.audit.sign_key is None:
            raise ValueError("an envelope export needs [audit] sign_key: envelopes are "
                             "signed with the daemon's audit key")


class LoadedConfig(msgspec.Struct, frozen=True, kw_only=True):
    config: Config
    #: The file it came from, or None when defaults were used (no file at the default path).
    path: str | None


def default_config_path(*, system: bool) -> Path:
    if system:
        return Path("/etc/nono/nonod.toml")
    return own_config_dir() / "nonod.toml"


def default_state_dir(*, system: bool) -> Path:
    if system:
        return Path("/var/lib/nono")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "nono"


def default_profile_dir(*, system: bool) -> Path:
    if system:
        return Path("/etc/nono/profiles")
    return own_config_dir() / "profiles"


_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<field>[^`]*)`(?: - at `\$(?P<at>.*)`)?$"
)
_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<at>.*)`$")


def _describe(error: msgspec.ValidationError) -> str:
    """msgspec's message with the JSON path turned into a TOML key (``daemon.socket``)."""
    text = str(error)
    if match := _UNKNOWN.match(text):
        at = (match.group("at") or "").lstrip(".")
        key = f"{at}.{match.group('field')}" if at else match.group("field")
        return f"unknown key `{key}`"
    if match := _AT.match(text):
        key = match.group("at").lstrip(".") or "(top level)"
        return f"`{key}`: {match.group('msg')}"
    return text


def parse_config(text: str, *, source: str) -> Config:
    """Parse the text of a ``nonod.toml``; raise ConfigError naming the key at fault."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(
            f"{source}: {_describe(exc)}", hint="every key is listed in docs/configuration.md"
        ) from exc


def load_config(path: str | os.PathLike[str] | None, *, system: bool) -> LoadedConfig:
    """Read the configuration. ``path=None`` means the default location, which may be absent."""
    explicit = path is not None
    where = Path(path) if path is not None else default_config_path(system=system)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if explicit:
            raise ConfigError(f"{where}: no such file") from exc
        return LoadedConfig(config=Config(), path=None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from exc
    return LoadedConfig(config=parse_config(text, source=str(where)), path=str(where))
