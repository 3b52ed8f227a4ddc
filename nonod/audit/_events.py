"""The audit event model: one frozen, tagged msgspec Struct per kind of thing that happened.

Every event encodes as a JSON object whose ``type`` field names its kind (``session_started``,
``network``, ...). The kinds form the :data:`Event` union, decoded by one typed decoder. The
record that closes a session's file (:class:`Seal`) and the ledger's entries
(:class:`SessionSealed`) are not events: producers never emit them, the writer does.

Rules every kind follows:

- **No secret values, ever.** Credentials appear by name and source kind only. ``argv`` goes
  through :func:`redact_argv` (and, as a safety net, the ``--token=...`` heuristic runs again
  when a :class:`SessionStarted` is built). A network event records the request path without
  its query string, which is where API keys and phantom tokens travel in URLs.
- **Evolution**: new fields get defaults, and a field never changes type. Defaults are left out
  of the encoding (``omit_defaults``), so a line only says what is known.
- **Checked when built**: cross-field rules (a denial says why, a session ends with an exit
  code *or* a signal) run in ``__post_init__``, on construction and on decoding alike.

This module imports only msgspec and the standard library, so that ``nonoctl`` can decode and
render events without the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Final, Literal, get_args

import msgspec

if TYPE_CHECKING:
    from ..proxy import NetworkEvent as ProxyNetworkEvent
    from ..sandbox import EnforcementReport

#: What a redacted value is replaced with.
REDACTED: Final = "[REDACTED]"

Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Millis = Annotated[float, msgspec.Meta(ge=0)]

NetworkMode = Literal["connect", "reverse", "websocket", "inbound", "http", "intercept"]
Decision = Literal["allow", "deny"]
#: How the phantom token check went on a credential route; ``none`` when the request needed none.
AuthOutcome = Literal["ok", "missing", "invalid", "none"]
EndReason = Literal["exited", "stopped", "killed", "timeout", "daemon_lost", "error", "oom",
                    "pids_limit", "wall_clock", "audit_limit"]
DaemonAction = Literal["started", "stopping", "reloaded", "recovered"]


# The values of each Literal, read once: ``__post_init__`` runs for every event built.
_NETWORK_MODES: Final[tuple[str, ...]] = get_args(NetworkMode)
_DECISIONS: Final[tuple[str, ...]] = get_args(Decision)
_END_REASONS: Final[tuple[str, ...]] = get_args(EndReason)
_DAEMON_ACTIONS: Final[tuple[str, ...]] = get_args(DaemonAction)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")


# ----------------------------------------------------------------------------- redaction

# Names that mark a value as a secret: any of these inside the name (``GITHUB_TOKEN``,
# ``--client-secret``, ``apiKey``) or one of the short words as a whole word (``--key``,
# ``--pass``). Over-redaction costs a little readability; under-redaction leaks a key.
_SECRET_PARTS: Final = ("token", "secret", "passw", "passphrase", "apikey", "privatekey",
                        "accesskey", "credential", "bearer", "cookie", "authorization")
_SECRET_WORDS: Final = frozenset({"key", "pass", "pwd", "auth", "pat", "pin", "otp"})
_WORD_SPLIT: Final = re.compile(r"[^a-z0-9]+")
# Both scans are linear in the argument's length: a match may start only where a run of the
# characters it begins with starts, and no part gives back what it took (possessive). Tried
# at every position, ``scheme://`` and ``?name=`` cost the rest of a run at each of its
# characters: one 120 KB argument of one letter took 40 s of the daemon's event loop.
# Where a scheme's run begins with digits, ``+``, ``.`` or ``-``, they are ``lead`` (kept as
# they are); the scheme starts at the run's first letter, where the old scan's leftmost
# match started.
_USERINFO: Final = re.compile(r"(?<![A-Za-z0-9+.-])(?P<lead>[0-9+.-]*+)"
                              r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*+://[^/?#@:\s]*+:)"
                              r"[^/?#@\s]++@")
#: A query parameter's name (``?`` and ``&`` start one; a name may hold ``?``), its value.
_NAME_RUN: Final = re.compile(r"[^=&#\s]+")
_VALUE: Final = re.compile(r"[^&#\s]*+")


def _looks_secret(name: str) -> bool:
    lowered = name.lower()
    squashed = _WORD_SPLIT.sub("", lowered)
    if any(part in squashed for part in _SECRET_PARTS):
        return True
    return any(word in _SECRET_WORDS for word in _WORD_SPLIT.split(lowered))


#: A URL's userinfo, from just after its ``://`` to its ``@``.
_URL_USER: Final = re.compile(r"[^/?#@\s]++@")


def value_holds_secret(value: str) -> bool:
    """Whether ``value`` holds a secret as a URL does: a userinfo (``scheme://user:password@``,
    and a token alone as the user, ``https://TOKEN@github.com/...``, a Sentry DSN), or a
    query parameter the audit's rule redacts (``?api_key=v``). A variable's name may say
    nothing of it (``DATABASE_URL``). Linear in ``value``: each scan for a userinfo stops at
    the next ``/``, so at the next ``://``."""
    at = value.find("://")
    while at >= 0:
        if _URL_USER.match(value, at + 3):
            return True
        at = value.find("://", at + 3)
    return _redact_url_parts(value) != value


def _redact_url_parts(arg: str) -> str:
    if "://" in arg:
        arg = _USERINFO.sub(lambda m: m["lead"] + m["head"] + REDACTED + "@", arg)
    return _redact_query(arg) if "=" in arg else arg


def _redact_query(arg: str) -> str:
    r"""Each ``[?&]name=value`` with a secret-looking name, its value redacted; the pairs
    found as the regular expression ``[?&]([^=&#\s]+)=([^&#\s]*)`` would find them, left
    to right, but each run of name characters is looked at once: the leftmost start in a run
    is the ``&`` before it or its first ``?``, and every start in a run ends where the run
    does, so all of them match (``=`` after it) or none does."""
    out: list[str] = []
    done = at = 0
    while (run := _NAME_RUN.search(arg, at)) is not None:
        start, end = run.span()
        at = end
        if start and arg[start - 1] == "&":
            begin = start - 1
        else:
            begin = arg.find("?", start, end - 1)  # a name follows it in the run
            if begin < 0:
                continue
        if arg[end:end + 1] != "=":
            continue
        value_end = _VALUE.match(arg, end + 1).end()  # type: ignore[union-attr]
        if value_end > end + 1 and _looks_secret(arg[begin + 1:end]):
            out += (arg[done:end + 1], REDACTED)
            done = value_end
        at = value_end
    return "".join(out) + arg[done:] if out else arg


def redact_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> tuple[str, ...]:
    """``argv`` fit for an audit record: known secret values and secret-looking values removed.

    Every occurrence of a value in ``secrets`` (the session's real credentials and phantom
    tokens) is replaced by ``[REDACTED]`` wherever it appears. Then a heuristic catches what
    nobody listed: ``--token=v``, ``--api-key=v``, ``GITHUB_TOKEN=v`` (a name that looks like
    a secret, ``=``, a value), ``--password v`` (a secret-looking flag and the argument after
    it), the password in ``scheme://user:password@host`` and secret-looking query parameters
    (``?key=v``). Redacting twice changes nothing.
    """
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    out: list[str] = []
    redact_next = False
    for original in argv:
        arg = original
        for value in values:
            if value in arg:
                arg = arg.replace(value, REDACTED)
        if redact_next:
            redact_next = False
            if not arg.startswith("-"):
                out.append(REDACTED)
                continue
        name, sep, value = arg.partition("=")
        if sep and value and value != REDACTED and "://" not in name and _looks_secret(name):
            arg = f"{name}={REDACTED}"
        elif not sep and arg.startswith("-") and _looks_secret(arg):
            redact_next = True
        out.append(_redact_url_parts(arg))
    return tuple(out)


def strip_query(path: str) -> str:
    """A request target without its query string and fragment."""
    return path.partition("?")[0].partition("#")[0]


# -------------------------------------------------------------------------------- events


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """Shared configuration: frozen, keyword-only, tagged in ``type``, defaults omitted."""


class SessionStarted(_Event, frozen=True, kw_only=True, tag="session_started"):
    """The program was launched. Always the first event of a session's file.

    ``argv`` must come from :func:`redact_argv` with the session's secrets; the name-based
    part of that redaction runs again here, whatever the caller passed.
    """

    session: str
    argv: tuple[str, ...]
    cwd: str
    uid: int
    policy_digest: str
    name: str = ""
    gid: int | None = None
    pid: int | None = None
    profile: str | None = None
    profile_digest: str | None = None
    #: The variables of the program's environment that hold real secrets
    #: (``env_credentials``), by name: never their values.
    secret_env: tuple[str, ...] = ()
    #: The protections its profile or command line turned off, one line each.
    weakened: tuple[str, ...] = ()
    #: The secret references this launch routed for the first time, with their upstreams.
    secrets_bound: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        redacted = redact_argv(self.argv)
        if redacted != self.argv:
            msgspec.structs.force_setattr(self, "argv", redacted)


class Layer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One enforcement layer: ``applied``, ``partial``, ``unavailable`` or ``off``."""

    name: str
    state: str
    reason: str = ""


class Enforcement(_Event, frozen=True, kw_only=True, tag="enforcement"):
    """What each enforcement layer did at launch (the sandbox's ``EnforcementReport``).

    Its own shape, built by :meth:`from_report`: this is a record of the chained audit format,
    whose fields change only with the format (``missing`` and ``pid`` are the audit's own),
    while the report is the engine's in-memory result and ``nonod.protocol.Enforcement`` is
    what a client is sent.
    """

    fully_enforced: bool
    layers: tuple[Layer, ...]
    landlock_abi: int = 0
    #: ``"layer: reason"`` for every layer that is partial or unavailable.
    missing: tuple[str, ...] = ()
    #: The session's process as the daemon sees it (``session_started`` is written, and
    #: fsynced, before the program exists, so it cannot carry the pid).
    pid: int | None = None

    @classmethod
    def from_report(cls, report: EnforcementReport, *, pid: int | None = None) -> Enforcement:
        layers = tuple(Layer(name=lay.name, state=lay.state, reason=lay.reason)
                       for lay in report.layers)
        missing = tuple(f"{lay.name}: {lay.reason or lay.state}" for lay in report.layers
                        if lay.state not in ("applied", "off"))
        return cls(fully_enforced=report.fully_enforced, layers=layers,
                   landlock_abi=report.landlock_abi, missing=missing, pid=pid)


class TrustVerified(_Event, frozen=True, kw_only=True, tag="trust_verified"):
    """A file matched by the trust policy verified; the session sees these exact bytes."""

    path: str
    sha256: Hex64
    signer: str
    policy: str = ""


class TrustFailed(_Event, frozen=True, kw_only=True, tag="trust_failed"):
    """A file matched by the trust policy did not verify; the launch was refused."""

    path: str
    reason: str
    code: str = ""
    sha256: Hex64 | None = None


class Network(_Event, frozen=True, kw_only=True, tag="network"):
    """One proxy decision, and for allowed traffic how it went.

    ``mode``: ``connect`` (a CONNECT tunnel), ``reverse`` (a credential route),
    ``websocket`` (an upgraded credential route), ``inbound`` (a forwarded listen port),
    ``http`` (an absolute-URI plain HTTP request), ``intercept`` (a request inside an
    intercepted TLS tunnel, served by its host's route). ``path`` never holds a query
    string: it is cut off when the event is built. A denial always carries a ``reason`` (the
    proxy's stable codes: ``not_allowed``, ``metadata``, ``connect_timeout``...; allowed
    requests may carry one too, ``allowed_host``). ``status`` is what the client got, 0 when
    the connection was dropped without a response. A tunnel gives a ``stage="open"`` event
    when it is up and a ``close`` event with the totals; everything else one ``close`` event.
    ``address`` is the address connected to.
    """

    mode: NetworkMode
    decision: Decision
    host: str
    port: Port
    method: str | None = None
    path: str | None = None
    status: Annotated[int, msgspec.Meta(ge=0, le=999)] | None = None
    bytes_in: Count = 0
    bytes_out: Count = 0
    duration_ms: Millis | None = None
    route: str | None = None
    auth: AuthOutcome | None = None
    reason: str | None = None
    stage: Literal["open", "close"] = "close"
    address: str | None = None
    #: The proxy's connection id, to tie several requests to one connection.
    conn: str | None = None

    @classmethod
    def from_proxy(cls, event: ProxyNetworkEvent) -> Network:
        """The audit record of a ``nonod.proxy.NetworkEvent`` (same meaning, field for field;
        empty strings become absent fields)."""
        return cls(mode=event.mode, decision=event.decision, host=event.host,
                   port=event.port, reason=event.reason or None, status=event.status,
                   bytes_in=event.bytes_in, bytes_out=event.bytes_out,
                   duration_ms=event.duration_ms, stage=event.stage,
                   method=event.method or None, path=event.path or None,
                   address=event.address or None, route=event.route or None,
                   auth=event.auth or None)

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, _NETWORK_MODES)
        _check_choice("decision", self.decision, _DECISIONS)
        if not 0 <= self.port <= 65_535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.decision == "deny" and not self.reason:
            raise ValueError("a denied request must say why (reason)")
        if self.stage not in ("open", "close"):
            raise ValueError(f"stage must be open or close, got {self.stage!r}")
        if self.path is not None:
            bare = strip_query(self.path)
            if bare != self.path:
                msgspec.structs.force_setattr(self, "path", bare)


class CredentialInjected(_Event, frozen=True, kw_only=True, tag="credential_injected"):
    """The proxy put a real credential into a request. Names only: there is no value field.

    ``source`` is the kind of store the credential came from (``keychain``, ``env``,
    ``file``, ``op``, ``systemd``), ``into`` where it went (a header or query parameter name).
    """

    route: str
    credential: str
    source: str
    into: str = ""
    conn: str | None = None


class FsDenied(_Event, frozen=True, kw_only=True, tag="fs_denied"):
    """The program was refused a filesystem operation.

    ``operation`` is ``read``, ``write``, ``exec``, ``create``, ``remove``, ``rename``,
    ``truncate``, ``open`` (flags unknown), ``ioctl`` or ``connect`` (a pathname socket);
    ``mechanism`` says who saw it (``kernel-audit``, ``kernel-audit+landlock`` when Landlock
    refused it). ``pid`` is the host pid. For a refused creation the kernel names only the
    directory, so ``path`` is that directory. A non-zero ``suppressed`` makes this a summary:
    that many denials were not recorded one by one (rate limit); the path and operation are
    those of the last of them. A non-zero ``lost`` (path and operation empty, at the
    session's end) says that some of this session's denials may be missing, uncounted: the
    daemon's reader of the kernel's records was overrun while the session was watched (a
    flood of refused calls, maybe another session's: the kernel dropped records then), or
    the flush at its end did not come back in time; ``lost`` counts such times.
    """

    path: str
    operation: str
    pid: int | None = None
    errno: str | None = None
    mechanism: str = ""
    suppressed: int = 0
    lost: int = 0


class ViewGuarded(_Event, frozen=True, kw_only=True, tag="view_guard"):
    """Something on the host replaced (renamed over, deleted and recreated) a path the
    session's view protects, and the launcher's view guard acted: ``restored`` the ``what``
    (``pin``: a verified file's bytes; ``mask``: a denied path; ``read_only``: a persistence
    file) over the new entry, or ``lost`` it and ended the session (``detail`` says why)."""

    action: Literal["restored", "lost"]
    path: str
    what: str = ""
    detail: str = ""


ApprovalStage = Literal["requested", "decided"]
ApprovalVerdict = Literal["", "once", "session", "deny", "timeout"]
_APPROVAL_STAGES: Final[tuple[str, ...]] = get_args(ApprovalStage)
_APPROVAL_VERDICTS: Final[tuple[str, ...]] = get_args(ApprovalVerdict)


class Approval(_Event, frozen=True, kw_only=True, tag="approval"):
    """A destination the allowlist did not name was asked about (``docs/approvals.md``).

    Two records per approval ``id``: ``requested`` when the request was held (``backend`` is
    where it went), ``decided`` when it was released: ``decision`` ``once``/``session``
    (allowed), ``deny`` or ``timeout`` (refused), ``decider`` who or what decided
    (``uid:1000``, ``webhook:<name>``, ``timeout``...), ``latency_ms`` how long the program
    waited. ``pid`` and ``command`` are the process that held the client socket when it could
    be found (``nonod.approvals._peer``), else the session's program; ``command`` is
    redacted. ``path`` never carries a query string."""

    id: str
    stage: ApprovalStage
    host: str
    port: Port
    mode: str = ""
    method: str = ""
    path: str = ""
    backend: str = ""
    decision: ApprovalVerdict = ""
    decider: str = ""
    latency_ms: Millis = 0.0
    pid: int = 0
    command: tuple[str, ...] = ()
    saved_to: str = ""

    def __post_init__(self) -> None:
        _check_choice("stage", self.stage, _APPROVAL_STAGES)
        _check_choice("decision", self.decision, _APPROVAL_VERDICTS)
        if (self.stage == "decided") != bool(self.decision):
            raise ValueError("a decided approval says its decision, a requested one does not")


class SignalSent(_Event, frozen=True, kw_only=True, tag="signal"):
    """A signal was sent to the session's program (``reason``: stop, timeout, user...)."""

    signal: int
    name: str = ""
    reason: str = ""
    sender: str = "daemon"


class ToolStarted(_Event, frozen=True, kw_only=True, tag="tool_started"):
    """The session ran a tool of its profile's ``command_policies``: it runs in ``child``, a
    session of its own (with its own audit file)."""

    tool: str
    child: str
    argv: tuple[str, ...] = ()


class ToolEnded(_Event, frozen=True, kw_only=True, tag="tool_ended"):
    """The tool's child session ended; its status went back to the caller."""

    tool: str
    child: str
    exit_code: int | None = None
    signal: int | None = None


class ToolRefused(_Event, frozen=True, kw_only=True, tag="tool_refused"):
    """A call of a tool did not run: its ``invocation_policy`` (``rule`` says which part)
    refused it, or its child session could not start (``rule`` is ``launch``)."""

    tool: str
    reason: str
    rule: str = ""
    argv: tuple[str, ...] = ()


class ResourceUsage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the session's processes used: from its cgroup (all its processes, the launcher's
    two included), or from ``getrusage``/``wait4`` where it has none."""

    user_cpu_ms: Millis = 0.0
    system_cpu_ms: Millis = 0.0
    max_rss_kib: Count = 0
    cpu_ms: Millis = 0.0
    memory_peak_bytes: Count = 0
    pids_peak: Count = 0
    io_read_bytes: Count = 0
    io_write_bytes: Count = 0
    #: Processes the OOM killer took (the memory limit was reached).
    oom_kills: Count = 0
    #: Forks refused at the pid cap.
    pids_limit_hits: Count = 0


class SessionEnded(_Event, frozen=True, kw_only=True, tag="session_ended"):
    """The session is over: the program exited with ``exit_code``, or died of ``signal``.

    ``reason``: ``exited`` (on its own), ``stopped`` (a stop request), ``killed`` (SIGKILL
    after the grace period), ``timeout``, ``error`` (the session root failed), ``oom`` (its
    memory limit: the OOM killer took it), ``pids_limit`` (it failed after forks were refused
    at its pid cap), ``wall_clock`` (its wall-clock limit was up) or
    ``daemon_lost`` (the daemon died with the session running; recorded at the next start,
    with neither code nor signal known).
    """

    reason: EndReason
    exit_code: int | None = None
    signal: int | None = None
    duration_ms: Millis | None = None
    usage: ResourceUsage | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        _check_choice("reason", self.reason, _END_REASONS)
        if self.exit_code is not None and self.signal is not None:
            raise ValueError("a session ends with an exit code or a signal, not both")


class DaemonEvent(_Event, frozen=True, kw_only=True, tag="daemon"):
    """Something the daemon did that matters to a session's record (its own lifecycle)."""

    action: DaemonAction
    pid: int
    version: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        _check_choice("action", self.action, _DAEMON_ACTIONS)


Event = (SessionStarted | Enforcement | TrustVerified | TrustFailed | Network
         | CredentialInjected | FsDenied | ViewGuarded | Approval | SignalSent
         | SessionEnded | DaemonEvent | ToolStarted | ToolEnded | ToolRefused)


def _tag_of(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__} is not a tagged audit event")
    return tag


#: Every event kind, by the tag written in its ``type`` field.
EVENT_KINDS: Final[frozenset[str]] = frozenset(_tag_of(t) for t in get_args(Event))


# ------------------------------------------------------------------- written by the writer


class Seal(_Event, frozen=True, kw_only=True, tag="seal"):
    """The last line of a finished session's file.

    ``count`` events came before it, ``head`` is the hash of the last of them (the chain
    head) and ``merkle_root`` the Merkle tree hash over all their hashes (see ``_chain``).
    """

    session: str
    count: Count
    head: Hex64
    merkle_root: Hex64


class SessionSealed(_Event, frozen=True, kw_only=True, tag="session_sealed"):
    """A ledger entry: a session's file was sealed. ``file_sha256`` covers all of its bytes."""

    session: str
    count: Count
    merkle_root: Hex64
    seal_hash: Hex64
    file_sha256: Hex64


#: What a session file's line may carry.
Entry = Event | Seal

SEAL_KIND: Final = "seal"


def kind_of(event: Entry | SessionSealed) -> str:
    """The tag an event is written with (``network``, ``seal``...)."""
    return _tag_of(type(event))


class Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One line of a session file, decoded: the event and its place in the chain.

    ``seq`` is 1 for the first line; ``prev`` is the previous line's ``hash`` (the session's
    genesis value on line 1); ``hash`` covers ``prev``, ``seq``, ``ts`` and the event's exact
    bytes. ``ts`` is UTC, ISO 8601, microseconds, ``Z``.
    """

    seq: int
    ts: str
    prev: Hex64
    hash: Hex64
    event: Entry

    @property
    def kind(self) -> str:
        return kind_of(self.event)
