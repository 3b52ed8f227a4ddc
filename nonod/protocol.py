"""The control protocol: every message nonoctl and nonod exchange, defined once.

(Over 600 lines on purpose: the whole vocabulary in one leaf module that both sides import,
so that a message cannot be defined twice. Which message is valid when is
``nonod.conversation``.)

Transport: a WebSocket connection (resource ``/nonod``, subprotocol ``nono.v1``) over the
daemon's Unix socket. Each WebSocket *text* frame carries exactly one JSON-encoded message.
Binary frames are not used. The daemon closes the connection with code 1009 when a message is
larger than its limit (``MAX_MESSAGE_BYTES`` unless configured otherwise).

Conversation::

    client                                   daemon
    Hello(protocol=1)                  ->
                                       <-    Welcome(...)        or ErrorReply(protocol.version)
    <request>                          ->
                                       <-    <reply>             or ErrorReply(code, message, ...)
    ...

Requests are answered in order, one reply each, except the *streaming* requests, which turn
the connection into a stream until it ends:

- ``Launch`` with ``detach=False``: ``Launched``, then ``Exited`` when the program ends. While
  it runs the client may send ``SendSignal``. Closing the connection stops the session.
- ``Attach``: ``Attached``, then ``Output`` chunks; the client sends ``Input``, ``Resize``,
  ``SendSignal`` and finally ``Detach`` (answered by ``Detached``). Ends with ``Exited`` if
  the program ends first.
- ``Logs``: ``Output`` chunks, then ``EndOfOutput`` (with ``follow``: when the session ends).
- ``Wait``: a single ``Exited`` once the session has ended.
- ``Subscribe``: ``Ok`` once subscribed, then ``SessionEvent`` messages until the connection
  closes (or ``EndOfOutput(reason="lagged")`` if the client fell behind).
- ``AuditFollow``: ``Ok`` once subscribed, then one ``AuditRecord`` per audit record (with
  ``from_start``: the session's file so far first, then live records, without gap or
  duplicate). It ends with ``EndOfOutput(reason="complete")`` after the followed session's
  seal (or at once after the replay without ``follow``), or with ``AuditDropped`` and
  ``EndOfOutput(reason="lagged")`` when the client read too slowly and was dropped.

File descriptors (attached launches): a ``Launch`` with ``stdio="passed"`` must arrive with
exactly three file descriptors (stdin, stdout, stderr) attached, as ``SCM_RIGHTS`` ancillary
data, to the bytes of the very WebSocket frame that carries the ``Launch`` message. The daemon
reads its socket with ``recvmsg`` only, so descriptors always arrive with (or before) the end
of their frame. Descriptors attached to any other message are closed and refused.

Compatibility: ``PROTOCOL_VERSION`` changes only for incompatible changes. New fields always
get defaults. The daemon refuses unknown fields in requests (a typo is an error, not a silent
ignore); clients ignore unknown fields in replies (a newer daemon can add detail).

This module imports only msgspec and the standard library: ``nonoctl`` imports it on its hot
path.
"""

# No ``from __future__ import annotations``: with it, building a decoder makes msgspec turn
# every field's annotation string back into a type (a compile() each), ~2.5 ms of every
# nonoctl command and of the daemon's start-up; evaluated once as the classes are made, the
# annotations cost less than that.
import datetime as _dt
import functools
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from ._wire import MAX_ARG_STRLEN as MAX_ARG_STRLEN
from ._wire import OPTION_PATHS, check_launch, check_options
from ._wire import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._wire import WS_RESOURCE as WS_RESOURCE
from ._wire import WS_SUBPROTOCOL as WS_SUBPROTOCOL
from ._wire import check_abs as _check_abs
from ._wire import check_env as _check_env
from ._wire import check_text as _check_text
from ._wire import env_entry_fits as env_entry_fits

#: Default upper bound on one message, in bytes (the daemon config can lower or raise it).
MAX_MESSAGE_BYTES: Final = 1 << 20
#: A ``Launch`` with ``stdio="passed"`` carries exactly this many descriptors.
PASSED_FDS: Final = 3
#: Largest ``Input`` chunk a client may send.
MAX_INPUT_BYTES: Final = 64 * 1024

SessionState = Literal["starting", "running", "exited"]
#: Why a session ended: ``exited`` (on its own), ``stopped`` (a ``Stop`` request),
#: ``client_gone`` (the attached client disconnected), ``daemon_shutdown``, ``daemon_lost``
#: (the daemon died while it ran; recorded at the next start), ``error`` (the daemon failed
#: while supervising it; see the daemon log).
EndReason = Literal[
    "", "exited", "stopped", "client_gone", "daemon_shutdown", "daemon_lost", "error",
    "oom", "pids_limit", "wall_clock", "parent_ended", "audit_limit",
]
Stdio = Literal["passed", "pty", "null"]

SessionRef = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
SessionName = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Rows = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
Signum = Annotated[int, msgspec.Meta(ge=1, le=64)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]
ShortText = Annotated[str, msgspec.Meta(max_length=4096)]
#: An argument or an environment value: as long as ``execve`` takes (counted in bytes below).
ArgText = Annotated[str, msgspec.Meta(max_length=MAX_ARG_STRLEN - 1)]
PathText = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class _Value(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Nested values of requests: strict, like the requests themselves."""


class _Info(msgspec.Struct, frozen=True, kw_only=True):
    """Nested values of replies: tolerant of fields a newer daemon adds."""


# --------------------------------------------------------------------------------- values


class TermSize(_Value, frozen=True, kw_only=True):
    rows: Rows
    cols: Rows


class LaunchOptions(_Value, frozen=True, kw_only=True):
    """nono's ``run`` flags, as the client parsed them. Paths are absolute: the client resolves
    them against its own working directory before sending."""

    allow_cwd: bool = False
    allow: tuple[PathText, ...] = ()
    read: tuple[PathText, ...] = ()
    write: tuple[PathText, ...] = ()
    allow_file: tuple[PathText, ...] = ()
    read_file: tuple[PathText, ...] = ()
    write_file: tuple[PathText, ...] = ()
    workdir: PathText | None = None
    block_net: bool = False
    allow_domain: tuple[ShortText, ...] = ()
    #: ``--network-profile``: a built-in network profile, replacing the profile's.
    network_profile: ShortText | None = None
    listen_ports: tuple[Port, ...] = ()
    #: ``--credential`` / ``--proxy-credential`` names (routes such as ``github``).
    credentials: tuple[ShortText, ...] = ()
    #: ``--env-credential-map`` entries, as given (``REFERENCE=ENV_VAR``).
    env_credential_map: tuple[ShortText, ...] = ()
    #: ``--trust-override``: skip instruction-file verification (loudly: warned, audited).
    trust_override: bool = False
    #: ``--audit-sign-key``: the trust key that signs this session's sealed audit record
    #: (overrides ``[audit] sign_key``); a key that cannot be loaded refuses the launch.
    audit_sign_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    #: Resource limits (``--memory`` in bytes, ``--max-processes``, ``--cpus``,
    #: ``--cpu-weight``, ``--io-weight``, ``--timeout`` in seconds): override the profile's.
    memory: Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 50)] | None = None
    max_processes: Annotated[int, msgspec.Meta(ge=1, le=4_194_304)] | None = None
    cpus: Annotated[float, msgspec.Meta(gt=0, le=4096)] | None = None
    cpu_weight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    io_weight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86400)] | None = None

    def __post_init__(self) -> None:
        check_options(self.audit_sign_key,
                      ((key, getattr(self, key)) for key in OPTION_PATHS),
                      self.workdir, self.env_credential_map)


class Layer(_Info, frozen=True, kw_only=True):
    """One enforcement layer: ``applied``, ``partial`` or ``unavailable`` (and why)."""

    name: str
    state: str
    reason: str = ""
    detail: str = ""


class Enforcement(_Info, frozen=True, kw_only=True):
    """What each enforcement layer did, as a ``SessionInfo`` carries it to the client.

    Its own shape, not the sandbox's ``EnforcementReport``: the wire vocabulary must not
    import the engine (nonoctl decodes it without the daemon), it tolerates fields a newer
    daemon adds, and it carries the ``summary`` line precomputed. The audit file's
    ``enforcement`` record (``nonod.audit.Enforcement``) is a third shape, for the same
    reason: its fields are fixed by the hash-chained audit format, not by this protocol.
    ``nonod.sessions`` converts the report to this (``enforcement_of``).
    """

    fully_enforced: bool
    summary: str
    landlock_abi: int = 0
    layers: tuple[Layer, ...] = ()


class Usage(_Info, frozen=True, kw_only=True, omit_defaults=True):
    """What a session's processes used, from its cgroup (counters cumulative)."""

    cpu_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    pids: int = 0
    pids_peak: int = 0
    io_read_bytes: int = 0
    io_write_bytes: int = 0
    #: Processes the kernel's OOM killer killed in the session (its memory limit was reached).
    oom_kills: int = 0
    #: Forks refused because the session was at its pid limit.
    pids_limit_hits: int = 0


class Limits(_Info, frozen=True, kw_only=True, omit_defaults=True):
    """A session's effective resource limits (None: not limited)."""

    memory: int | None = None
    max_processes: int | None = None
    cpus: float | None = None
    cpu_weight: int | None = None
    io_weight: int | None = None
    wall_clock: float | None = None


class ArgvShortened(_Info, frozen=True, kw_only=True):
    """A session's ``argv`` as the daemon keeps it is a prefix of the one it ran (at most
    ``ARGV_KEPT`` bytes of arguments; the last one kept may be cut): the whole one had
    ``arguments`` arguments of ``bytes`` bytes (UTF-8) in all. Its audit file has it whole."""

    arguments: int
    bytes: int


class SessionInfo(_Info, frozen=True, kw_only=True):
    """One session, as ``ps --json`` prints it. ``argv_shortened``: set when ``argv`` is a
    prefix of the one it ran (:class:`ArgvShortened`)."""

    id: str
    name: str
    state: SessionState
    pid: int | None = None
    profile: str | None = None
    argv: tuple[str, ...] = ()
    argv_shortened: ArgvShortened | None = None
    started_at: _dt.datetime
    ended_at: _dt.datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    enforcement: Enforcement | None = None
    #: From the session's cgroup: live while it runs, the totals once it ended.
    usage: Usage | None = None
    #: The session that ran this one as a tool (``command_policies``), if any.
    parent: str | None = None


class SessionRow(SessionInfo, frozen=True, kw_only=True, omit_defaults=True):
    """A ``SessionInfo`` as a brief ``ListSessions`` (``nonoctl ps``'s table) carries it: the
    fields at their defaults (most of them null) left out, about 40% of each entry's bytes.
    Every left-out field has that default in ``SessionInfo`` too, so any client decodes the
    entry into the very ``SessionInfo`` it would have had with the nulls written."""


class SessionDetail(SessionInfo, frozen=True, kw_only=True):
    """One session with everything ``inspect`` shows."""

    uid: int
    gid: int
    cwd: str
    detached: bool = False
    tty: bool = False
    attached: bool = False
    reason: EndReason = ""
    policy_digest: str = ""
    log_path: str | None = None
    output_bytes: int = 0
    limits: Limits | None = None
    #: The hosts whose TLS the daemon intercepts for it (``network.tls_intercept``).
    intercepts: tuple[str, ...] = ()
    #: The variables of its environment that hold real secrets (``env_credentials``: the
    #: program reads their values; phantom tokens are not among them).
    secret_env: tuple[str, ...] = ()
    #: The protections its profile or command line turned off, one line each (the dry
    #: run's ``weakened``).
    weakened: tuple[str, ...] = ()
    #: The secrets its launch routed for the first time, each now bound to its upstreams
    #: (``github_token -> https://api.github.com``): a route elsewhere is refused later.
    secrets_bound: tuple[str, ...] = ()


class SecretEntry(_Info, frozen=True, kw_only=True):
    """One stored credential: its name and where it lives (never its value)."""

    name: str
    source: str
    label: str = ""


class ProfileEntry(_Info, frozen=True, kw_only=True):
    name: str
    source: str
    description: str = ""


# ------------------------------------------------------------------------------- requests


class Request(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True
):
    """Base of every client -> daemon message."""


class Hello(Request, frozen=True, kw_only=True, tag="hello"):
    protocol: int
    client: ShortText = ""


class Launch(Request, frozen=True, kw_only=True, tag="launch"):
    """Start a session. ``argv`` may be empty when the profile names a command."""

    argv: tuple[ArgText, ...] = ()
    profile: ShortText | None = None
    cwd: PathText
    #: The caller's environment; the daemon keeps only what the policy lets through. Each
    #: ``NAME=value`` must fit ``MAX_ARG_STRLEN`` (clients drop, and name, those that do not).
    env: dict[ShortText, ArgText] = msgspec.field(default_factory=dict)
    options: LaunchOptions = LaunchOptions()
    name: SessionName | None = None
    #: True: the session outlives this connection. False: closing the connection stops it.
    detach: bool = False
    #: ``passed``: three descriptors ride with this frame; ``pty``: the daemon owns a terminal
    #: (attach, logs); ``null``: /dev/null.
    stdio: Stdio = "pty"
    term: TermSize | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        check_launch(self.argv, self.cwd, self.env, self.profile)


class ListSessions(Request, frozen=True, kw_only=True, tag="list", omit_defaults=True):
    all: bool = False
    #: Only what ``nonoctl ps``'s table shows: no ``usage`` (read from each session's cgroup,
    #: a dozen files per session) and no ``enforcement`` (most of each entry's bytes). Sent
    #: only when true (defaults are omitted), so that a full request still reads as one to a
    #: daemon from before this field.
    brief: bool = False


class Inspect(Request, frozen=True, kw_only=True, tag="inspect"):
    session: SessionRef


class Stop(Request, frozen=True, kw_only=True, tag="stop"):
    session: SessionRef
    #: Seconds between SIGTERM and SIGKILL; None = the daemon's ``sessions.stop_grace``.
    timeout: Seconds | None = None
    force: bool = False


class Wait(Request, frozen=True, kw_only=True, tag="wait"):
    session: SessionRef


class SendSignal(Request, frozen=True, kw_only=True, tag="signal"):
    session: SessionRef
    signal: Signum


class Logs(Request, frozen=True, kw_only=True, tag="logs"):
    session: SessionRef
    follow: bool = False
    tail: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Attach(Request, frozen=True, kw_only=True, tag="attach"):
    session: SessionRef
    term: TermSize | None = None


class Input(Request, frozen=True, kw_only=True, tag="input"):
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_INPUT_BYTES)]


class Resize(Request, frozen=True, kw_only=True, tag="resize"):
    term: TermSize


class Detach(Request, frozen=True, kw_only=True, tag="detach"):
    pass


class Prune(Request, frozen=True, kw_only=True, tag="prune"):
    pass


class Status(Request, frozen=True, kw_only=True, tag="status"):
    pass


class Shutdown(Request, frozen=True, kw_only=True, tag="shutdown"):
    pass


class Subscribe(Request, frozen=True, kw_only=True, tag="subscribe"):
    """Session lifecycle events (all visible sessions, or one)."""

    session: SessionRef | None = None


#: An audit event kind (``network``, ``fs_denied``, ``seal``...); the daemon checks the name.
AuditKind = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class AuditFollow(Request, frozen=True, kw_only=True, tag="audit_follow"):
    """Audit records, live: of one session (``session``) or of every session the caller may
    see. ``kinds`` keeps only those kinds. ``from_start`` (one session only) first replays the
    session's file; ``follow=False`` (with ``from_start``) ends after the replay."""

    session: SessionRef | None = None
    kinds: Annotated[tuple[AuditKind, ...], msgspec.Meta(max_length=64)] | None = None
    from_start: bool = False
    follow: bool = True

    def __post_init__(self) -> None:
        if self.from_start and self.session is None:
            raise ValueError("from_start needs a session")
        if not self.follow and not self.from_start:
            raise ValueError("follow=false only makes sense with from_start")


#: The client's environment, as a launch carries it: the profile requests look a profile up,
#: and resolve it, where the launch would (``XDG_CONFIG_HOME``, a user daemon's ``HOME``...).
#: Empty (an older client): the defaults, which may not be the launch's.
ProfileEnv = dict[ShortText, ArgText]


class ProfileList(Request, frozen=True, kw_only=True, tag="profile_list", omit_defaults=True):
    env: ProfileEnv = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_env(self.env)


class ProfileShow(Request, frozen=True, kw_only=True, tag="profile_show"):
    profile: ShortText
    resolved: bool = False
    cwd: PathText = "/"
    options: LaunchOptions = LaunchOptions()
    env: ProfileEnv = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_abs("cwd", self.cwd)
        _check_text("profile", self.profile)
        _check_env(self.env)


class ProfileValidate(Request, frozen=True, kw_only=True, tag="profile_validate"):
    profile: ShortText
    env: ProfileEnv = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_text("profile", self.profile)
        _check_env(self.env)


#: A credential name, as the keychain accepts it (the daemon checks it precisely).
SecretName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class SecretSet(Request, frozen=True, kw_only=True, tag="secret_set"):
    """Store ``value`` under ``name`` in the daemon's keychain (``nonoctl secret set``).
    The value is never logged; ``repr`` hides it."""

    name: SecretName
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=64 * 1024)]

    def __repr__(self) -> str:
        return f"SecretSet(name={self.name!r}, value=<redacted>)"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("name", self.name), ("value", "<redacted>")]


class SecretList(Request, frozen=True, kw_only=True, tag="secret_list"):
    pass


class SecretDelete(Request, frozen=True, kw_only=True, tag="secret_delete"):
    name: SecretName


class SecretTest(Request, frozen=True, kw_only=True, tag="secret_test"):
    name: SecretName


#: An upstream URL given to ``SecretBindings.add`` (``https://api.example.com``).
UpstreamUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class SecretBindings(Request, frozen=True, kw_only=True, tag="secret_bindings"):
    """The upstreams a secret reference (a route's ``credential_key``: ``github_token``,
    ``env://VAR``, ``file:///path``) may be sent to, for the caller (``nonoctl secret hosts``):
    listed, grown by ``add``, or forgotten (``clear``: its next route binds it again)."""

    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    add: Annotated[tuple[UpstreamUrl, ...], msgspec.Meta(max_length=32)] = ()
    clear: bool = False


#: A trust key name, or a ``file:///abs/path`` key ref (the daemon checks it precisely).
TrustKeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
#: The most file content ``TrustSign`` carries (base64 on the wire must fit one message).
MAX_TRUST_SIGN_BYTES: Final = 512 * 1024


class TrustKeygen(Request, frozen=True, kw_only=True, tag="trust_keygen"):
    """Generate an ECDSA P-256 signing key in the daemon's key store (``trust keygen``)."""

    key: TrustKeyName = "default"
    force: bool = False


class TrustExportKey(Request, frozen=True, kw_only=True, tag="trust_export_key"):
    key: TrustKeyName = "default"
    pem: bool = False


#: nono's multi-subject bundle's name, the one ``TrustSign`` with ``subjects`` signs.
MULTI_SUBJECT_BUNDLE: Final = ".nono-trust.bundle"


class TrustSubject(msgspec.Struct, frozen=True, kw_only=True):
    """One file of a multi-subject bundle: its path relative to the directory the bundle is
    written in, and its SHA-256 (lower-case hex), as the client computed it."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class TrustSign(Request, frozen=True, kw_only=True, tag="trust_sign"):
    """Sign ``data`` as the file ``name`` (a base name); ``policy``: as a trust policy;
    ``subjects`` (then ``name`` is ``.nono-trust.bundle`` and ``data`` empty): those files
    together, as nono's multi-subject bundle (``trust sign --multi-subject``).
    The daemon returns the bundle; the client writes it."""

    key: TrustKeyName = "default"
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_TRUST_SIGN_BYTES)]
    policy: bool = False
    subjects: Annotated[tuple[TrustSubject, ...], msgspec.Meta(max_length=1000)] = ()

    def __post_init__(self) -> None:
        if self.subjects and (self.policy or self.data or self.name != MULTI_SUBJECT_BUNDLE):
            raise ValueError(f"a request with subjects signs {MULTI_SUBJECT_BUNDLE} and "
                             "carries no data and no policy")


class TrustInit(Request, frozen=True, kw_only=True, tag="trust_init"):
    """A new ``trust-policy.json`` whose one publisher is ``key`` (the client writes it)."""

    key: TrustKeyName = "default"
    includes: Annotated[
        tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=1024)], ...],
        msgspec.Meta(max_length=256),
    ] = ()


ApprovalId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ApprovalList(Request, frozen=True, kw_only=True, tag="approval_list"):
    """The caller's pending approvals (of one session, or of all it may see)."""

    session: SessionRef | None = None


class ApprovalInspect(Request, frozen=True, kw_only=True, tag="approval_inspect"):
    id: ApprovalId


class ApprovalAnswer(Request, frozen=True, kw_only=True, tag="approval_answer"):
    """Release a held request: ``once`` (this request), ``session`` (every later request to
    that host in that session), ``deny``. ``save_to_profile`` (with ``session``) also writes
    the host into the profile file the session came from, if the caller owns it."""

    id: ApprovalId
    answer: Literal["once", "session", "deny"]
    save_to_profile: bool = False

    def __post_init__(self) -> None:
        if self.save_to_profile and self.answer != "session":
            raise ValueError("save_to_profile goes with answer `session`")


AnyRequest = (
    Hello
    | Launch
    | ListSessions
    | Inspect
    | Stop
    | Wait
    | SendSignal
    | Logs
    | Attach
    | Input
    | Resize
    | Detach
    | Prune
    | Status
    | Shutdown
    | Subscribe
    | AuditFollow
    | ProfileList
    | ProfileShow
    | ProfileValidate
    | SecretSet
    | SecretList
    | SecretDelete
    | SecretTest
    | SecretBindings
    | TrustKeygen
    | TrustExportKey
    | TrustSign
    | TrustInit
    | ApprovalList
    | ApprovalInspect
    | ApprovalAnswer
)


# -------------------------------------------------------------------------------- replies


class Reply(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every daemon -> client message."""


class Welcome(Reply, frozen=True, kw_only=True, tag="welcome"):
    protocol: int
    daemon: str
    pid: int
    uid: int
    system: bool = False


class ErrorReply(Reply, frozen=True, kw_only=True, tag="error"):
    """A refused or failed request. ``code`` is stable and dotted (``session.not_found``);
    ``message`` says what and why; ``hint`` what to do; ``details`` carries extra fields
    (``step``, ``errno``, ``path``...) for scripts."""

    code: str
    message: str
    hint: str | None = None
    details: dict[str, str] = msgspec.field(default_factory=dict)


class Ok(Reply, frozen=True, kw_only=True, tag="ok"):
    pass


class Launched(Reply, frozen=True, kw_only=True, tag="launched"):
    session: SessionDetail


NetworkMode = Literal["blocked", "allowlist", "unrestricted"]


class DryRunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a dry run shows first: the few facts that decide how exposed the program is.

    ``grants``/``denials`` count every path rule; ``main_paths`` are the grants the profile,
    the working directory or the command line asked for (not the built-in groups'), as
    ``(path, access)``. ``network`` is ``blocked`` (no network), ``allowlist`` (only
    ``hosts``, through the proxy) or ``unrestricted`` (the host's network as it is), and
    ``network_reason`` says why. ``credentials`` names the credential routes, ``routes`` says
    which secret each sends to which upstream (and which real secrets the environment holds),
    ``weakened`` every protection the policy turns off, ``tools`` the tools that run in
    sessions of their own and what each gets. ``main_paths`` lists writable and broad grants
    first.
    """

    grants: int
    denials: int
    main_paths: tuple[tuple[str, str], ...] = ()
    group_grants: int = 0
    network: NetworkMode
    network_reason: str
    hosts: tuple[str, ...] = ()
    listen_ports: tuple[int, ...] = ()
    credentials: tuple[str, ...] = ()
    #: ``NAME: REFERENCE -> UPSTREAM`` per route, ``VAR: REFERENCE (...)`` per env credential.
    routes: tuple[str, ...] = ()
    #: One line per protection turned off (a lifted denial, a degraded layer...).
    weakened: tuple[str, ...] = ()
    #: One line per tool of ``command_policies``: what its own session gets.
    tools: tuple[str, ...] = ()
    #: The hosts whose TLS the daemon would intercept (``network.tls_intercept``).
    intercepts: tuple[str, ...] = ()


class DryRun(Reply, frozen=True, kw_only=True, tag="dry_run"):
    """What a launch would run, without running it. ``policy`` is the resolved policy's JSON;
    ``summary`` its headline facts (None from a daemon older than the field)."""

    argv: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    policy: msgspec.Raw
    summary: DryRunSummary | None = None


class SessionList(Reply, frozen=True, kw_only=True, tag="sessions"):
    sessions: tuple[SessionInfo, ...]


class SessionReply(Reply, frozen=True, kw_only=True, tag="session"):
    session: SessionDetail


class Exited(Reply, frozen=True, kw_only=True, tag="exited"):
    session: str
    exit_code: int | None = None
    signal: int | None = None
    reason: EndReason = "exited"


class Output(Reply, frozen=True, kw_only=True, tag="output"):
    data: bytes
    #: Offset of ``data`` in the session's output since it started.
    offset: int = 0


class EndOfOutput(Reply, frozen=True, kw_only=True, tag="end"):
    #: ``complete``: all output sent; ``exited``: the session ended while following;
    #: ``lagged``: the client read too slowly and output was dropped; ``refused`` (an audit
    #: follow of one session): its launch was refused before its program started.
    reason: str = "complete"


class Attached(Reply, frozen=True, kw_only=True, tag="attached"):
    session: str


class Detached(Reply, frozen=True, kw_only=True, tag="detached"):
    pass


class Pruned(Reply, frozen=True, kw_only=True, tag="pruned"):
    sessions: tuple[str, ...]


class DaemonStatus(Reply, frozen=True, kw_only=True, tag="daemon_status"):
    pid: int
    version: str
    protocol: int
    uid: int
    system: bool
    socket: str
    started_at: _dt.datetime
    state_dir: str
    config: str | None = None
    sessions_live: int = 0
    sessions_total: int = 0
    launcher: str = "not started"


class SessionEvent(Reply, frozen=True, kw_only=True, tag="event"):
    """``kind`` is ``started`` or ``exited``."""

    kind: str
    session: SessionInfo


class AuditRecord(Reply, frozen=True, kw_only=True, tag="audit_record"):
    """One audit record: ``record`` is the line exactly as the session's ``audit.ndjson``
    holds it (seq, ts, prev, hash, event), ``session`` the session it belongs to."""

    session: str
    record: msgspec.Raw


class AuditDropped(Reply, frozen=True, kw_only=True, tag="audit_dropped"):
    """The daemon dropped this follower: it fell ``buffer`` records behind after
    ``delivered``. Later records are in the audit file, not in this stream."""

    reason: str
    buffer: int
    delivered: int


class Profiles(Reply, frozen=True, kw_only=True, tag="profiles"):
    profiles: tuple[ProfileEntry, ...]


class ProfileDocument(Reply, frozen=True, kw_only=True, tag="profile"):
    name: str
    source: str
    resolved: bool
    document: msgspec.Raw


class ProfileValid(Reply, frozen=True, kw_only=True, tag="profile_valid"):
    name: str
    source: str
    notes: tuple[str, ...] = ()


class Secrets(Reply, frozen=True, kw_only=True, tag="secrets"):
    """The answer to ``SecretList``: names and sources, never values."""

    secrets: tuple[SecretEntry, ...]


class SecretStored(Reply, frozen=True, kw_only=True, tag="secret_stored"):
    """The answer to ``SecretSet`` and ``SecretDelete`` (``source``: where the keychain is)."""

    name: str
    source: str = ""


class SecretBound(Reply, frozen=True, kw_only=True, tag="secret_bound"):
    """The answer to ``SecretBindings``: the upstreams the reference may be sent to (none:
    never routed, or just cleared)."""

    reference: str
    hosts: tuple[str, ...] = ()


class SecretState(Reply, frozen=True, kw_only=True, tag="secret_state"):
    """The answer to ``SecretTest``: found or not, never the value."""

    name: str
    found: bool
    source: str = ""


class TrustKey(Reply, frozen=True, kw_only=True, tag="trust_key"):
    """The answer to ``TrustKeygen`` and ``TrustExportKey``: public parts only.
    ``public_key`` is base64 DER SPKI, or PEM when the request asked for it."""

    key_id: str
    fingerprint: str
    public_key: str


class TrustSigned(Reply, frozen=True, kw_only=True, tag="trust_signed"):
    name: str
    bundle: bytes
    key_id: str
    fingerprint: str


class TrustPolicyDocument(Reply, frozen=True, kw_only=True, tag="trust_policy"):
    policy: bytes


class ApprovalInfo(_Info, frozen=True, kw_only=True):
    """One pending approval: the held request (``method``/``path`` for plain HTTP, the path
    without its query), its session, the session's program (``pid``, ``command``), where it
    was sent (``backend``) and until when it waits (``expires``; then it is denied)."""

    id: str
    session: str
    session_name: str
    mode: str
    host: str
    port: int
    method: str = ""
    path: str = ""
    pid: int = 0
    command: tuple[str, ...] = ()
    backend: str = ""
    profile: str | None = None
    created: _dt.datetime
    expires: _dt.datetime


class Approvals(Reply, frozen=True, kw_only=True, tag="approvals"):
    approvals: tuple[ApprovalInfo, ...]


class ApprovalReply(Reply, frozen=True, kw_only=True, tag="approval"):
    """One approval (``inspect``), or the one just answered (``answer`` set). After
    ``save_to_profile``: ``saved_to`` is the file written, ``diff`` the change (unified)."""

    approval: ApprovalInfo
    answer: str = ""
    saved_to: str = ""
    diff: str = ""


class ApprovalEvent(Reply, frozen=True, kw_only=True, tag="approval_event"):
    """On a ``subscribe`` stream: ``kind`` ``approval_pending`` (a request is held; answer it
    with ``approval_answer``) or ``approval_closed`` (answered or timed out)."""

    kind: str
    approval: ApprovalInfo


AnyReply = (
    Welcome
    | ErrorReply
    | Ok
    | Launched
    | DryRun
    | SessionList
    | SessionReply
    | Exited
    | Output
    | EndOfOutput
    | Attached
    | Detached
    | Pruned
    | DaemonStatus
    | SessionEvent
    | AuditRecord
    | AuditDropped
    | Profiles
    | ProfileDocument
    | ProfileValid
    | Secrets
    | SecretStored
    | SecretState
    | SecretBound
    | TrustKey
    | TrustSigned
    | TrustPolicyDocument
    | Approvals
    | ApprovalReply
    | ApprovalEvent
)

# One decoder per direction, built once (on first use: nonoctl never decodes requests);
# one encoder for both.
_encoder: Final = msgspec.json.Encoder()


@functools.cache
def request_decoder() -> msgspec.json.Decoder[AnyRequest]:
    return msgspec.json.Decoder(AnyRequest)


@functools.cache
def reply_decoder() -> msgspec.json.Decoder[AnyReply]:
    return msgspec.json.Decoder(AnyReply)


def encode(message: Request | Reply) -> bytes:
    """The JSON bytes of one message (one WebSocket text frame)."""
    return _encoder.encode(message)


def decode_request(data: bytes | str) -> AnyRequest:
    """Decode one client message; raises ``msgspec.ValidationError``/``DecodeError``."""
    return _decode(request_decoder(), data)


def decode_reply(data: bytes | str) -> AnyReply:
    """Decode one daemon message; raises ``msgspec.ValidationError``/``DecodeError``."""
    return _decode(reply_decoder(), data)


_M = TypeVar("_M")


def _decode(decoder: msgspec.json.Decoder[_M], data: bytes | str) -> _M:
    try:
        return decoder.decode(data)
    except RecursionError:
        # A value met before the ``type`` tag is parsed untyped, and deep nesting exhausts
        # the interpreter's recursion limit: a bad message like any other.
        raise msgspec.DecodeError("JSON nested too deeply") from None
