"""What runs around a session's process: trust check and pins, credentials, proxy, inbound ports.

``prepare`` runs before the launch and may refuse it (TrustError, CredentialError,
PolicyError): it verifies instruction files, loads the route secrets, makes the phantom
token and returns the launch request with the child's proxy variables, phantom tokens and
pinned files. ``serve`` runs in the session's nursery once the program is running: the
filtering and credential proxy on the socket the engine created inside the session's network
namespace, and one forwarder per ``--listen-port``. Every decision goes to ``events``.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import msgspec
import structlog
import trio

from . import _callerfs
from ._accept import accept_retrying
from ._config import NetworkSection
from ._descriptors import for_sessions
from ._loopback_peers import SameUidListener, tcp_peer_uid
from ._subids import owner_of
from ._view_reads import shown_in_view
from ._writable_links import writable_links
from .audit._mask import hidden_strings
from .errors import PolicyError
from .policy import DAEMON_BACKEND_PREFIX, ResolvedPolicy
from .sandbox import LaunchRequest

if TYPE_CHECKING:
    from .credentials import LaunchBindings, SecretHosts
    from .proxy import UidShare
    from .sessions import Caller
    from .trust import PolicyFiles

log = structlog.get_logger()

PROXY_PORT_RANGE = (20000, 60000)
#: Connections through one session's ``--listen-port`` forwards at once (each holds two of
#: the daemon's descriptors); more are closed as they come, as are those that would take the
#: descriptors kept for the daemon itself (``nonod._descriptors``).
MAX_INBOUND = 256
#: ... of which one uid other than the session's may hold this many.
MAX_INBOUND_FOREIGN: Final = MAX_INBOUND // 4
#: The largest TLS file (CA bundle, client certificate or key) a route may name.
MAX_TLS_FILE: Final = 1 << 20
#: Bound, in seconds, of the trust scan of a workdir (read as the caller, in its own thread).
SCAN_TIMEOUT = 60.0
#: The audit's warning for a verified file of a policy's ``files`` that is not pinned.
UNPINNED: Final = ("verified, not pinned: the session's view does not show this path (a "
                   "trust policy's `files` never grants a read)")


#: ``[network]`` in nonod.toml, declared once in ``nonod._config``: ``resolve`` pins host names
#: to ``address:port`` (curl's ``--resolve``; pinned addresses skip the private-range refusal
#: because the operator chose them), ``extra_ca_file`` is trusted for upstream TLS besides the
#: system roots, ``listen_address`` is where ``--listen-port`` listens on the host.
NetworkSettings = NetworkSection


class Served(Protocol):
    """What serving needs of the running program (``nonod.sandbox.Sandboxed``): the proxy
    socket the engine made inside its network namespace, and connections into it."""

    proxy_listener: socket.socket | None

    async def connect_inside(self, port: int) -> trio.SocketStream: ...


class InboundEvent(msgspec.Struct, frozen=True, kw_only=True, tag="inbound"):
    """A connection to a --listen-port forward (host side -> the session)."""

    port: int
    peer: str
    decision: str  # allow | deny
    reason: str = ""
    bytes_in: int = 0
    bytes_out: int = 0


class TrustOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One instruction file's verification, for the audit stream (names, never contents)."""

    path: str
    outcome: str  # verified | unsigned | failed
    reason: str = ""
    sha256: str = ""


@final
class SessionServices:
    """The session's services, ready to serve once the program runs."""

    def __init__(self) -> None:
        self.request: LaunchRequest | None = None
        self.trust: list[TrustOutcome] = []
        self.trust_warnings: list[str] = []
        self.credentials: list[str] = []  # route names with a loaded secret
        #: What the program holds that its audit record must never show (see audit._mask).
        self.hidden: dict[str, str] = {}
        #: Each webhook approval backend's signing key, by backend name (never the program's).
        self.approval_keys: dict[str, bytes] = {}
        #: The hosts whose TLS is intercepted (the session CA's names).
        self.intercepts: tuple[str, ...] = ()
        #: The variables that hold real secrets (``env_credentials``): said at launch, in
        #: ``inspect`` and in the audit's ``session_started``; never their values.
        self.secret_env: tuple[str, ...] = ()
        #: The secrets this launch routed for the first time, now bound to their upstreams
        #: (``credentials._hosts``): said at launch, in ``inspect`` and in the audit.
        self.secrets_bound: tuple[str, ...] = ()
        self._proxy_args: dict[str, Any] | None = None
        self._listen_ports: tuple[int, ...] = ()
        self._listen_address = "127.0.0.1"
        # Landlock network mode: the proxy listens on the host's loopback, made here.
        self._host_listener: trio.SocketListener | None = None
        # The forwards' listening sockets on the host, by port (``_open_inbound``).
        self._inbound: list[tuple[int, list[trio.SocketListener]]] = []

    def idle(self, proc: Served) -> bool:
        """Nothing to serve for ``proc``: no proxy (no route table either), no forwards, no
        listener (no host socket to close either). :func:`serve` would only wait to be
        cancelled: a session with its network blocked needs no task for it."""
        return (self._proxy_args is None and not self._inbound
                and self._host_listener is None and proc.proxy_listener is None)

    def discard(self) -> None:
        """Close the host sockets opened for a launch that did not happen."""
        listeners = [lst for _, group in self._inbound for lst in group]
        if self._host_listener is not None:
            listeners.append(self._host_listener)
        for listener in listeners:
            listener.socket.close()
        self._inbound, self._host_listener = [], None


@functools.cache
def _builtin_routes() -> Mapping[str, Any]:
    """nonod's built-in credential routes, read from the package's data file once per
    daemon (it does not change under a running daemon): not a file read and a JSON decode
    on the event loop at every proxied session's launch."""
    from . import credentials

    return credentials.builtin_routes()


def _pick_port() -> int:
    low, high = PROXY_PORT_RANGE
    return low + secrets.randbelow(high - low)


def _daemon_anchors(declared: Any) -> list[Any]:
    """The user-level policy's anchors: its publishers' keys, found in the daemon's key store
    (runs with the daemon's own identity: the caller cannot read those keys)."""
    from . import trust

    anchors = []
    for publisher in declared.publishers:
        if not publisher.key_id:
            continue
        try:
            key = trust.keystore_for(publisher.key_id).load_public_key(publisher.key_id)
        except trust.TrustError:
            continue
        anchors.append(trust.publisher_for_key(key, publisher.key_id))
    return anchors


async def _verify_instruction_files(workdir: str, user_config_dir: Path | None,
                                    caller: Caller | None, prepared: SessionServices,
                                    view: ResolvedPolicy | None = None,
                                    read: Callable[[], PolicyFiles | None] | None = None
                                    ) -> tuple[tuple[tuple[str, bytes], ...],
                                               tuple[int, int] | None]:
    """Verify the workdir's included files and the policy's listed ``files``; raise TrustError
    to refuse the launch, also when a pinned file's name goes through a symbolic link the
    grants of ``view`` (the session's policy) let the session re-point. Returns the pins and
    the ``(st_dev, st_ino)`` of the workdir all of this was decided for: its policies read
    and its files verified in that one directory (``LaunchRequest.cwd_identity``).

    ``~`` in ``files`` is the home resolution expanded the profile with (``view.home``). A
    verified listed file is pinned only where ``view`` shows that path anyway
    (``nonod._view_reads``): a policy's list never grants a read.

    The policies and the instruction files are read as ``caller`` (``nonod._callerfs``: the
    system daemon never lends its rights, nothing blocks); the user-level policy is anchored
    to the daemon's keys with the daemon's own identity. Every outcome lands in ``prepared``
    for the audit record, "no policy, nothing verified" included. ``read``: the policy files
    as already read as ``caller`` (``nonod.sessions.CallerReads``; it raises what their read
    raised, None: read them here).
    """
    from . import trust

    if user_config_dir is None:
        prepared.trust_warnings.append(
            "the user-level trust policy could not be located (no absolute XDG_CONFIG_HOME "
            "and no home directory for this uid): only the workdir's policy is checked")
    try:
        files = read() if read is not None else None
        if files is None:
            files = await _callerfs.run_as(
                caller, functools.partial(
                    trust.read_policy_files,
                    trust.user_policy_path(user_config_dir) if user_config_dir else None,
                    workdir),
                timeout=_callerfs.DEFAULT_TIMEOUT, what="the trust policies")
        # No policy file at either level (the common case): nothing to verify, no thread.
        policy = await trio.to_thread.run_sync(functools.partial(
            trust.load_policies, files, user_anchors=_daemon_anchors)) if files.found else None
        if policy is None:
            prepared.trust_warnings.append(
                f"no trust policy found (looked in {files.looked_in()}): nothing verified")
            # Nothing was decided for that directory: whatever directory the session gets
            # is as unverified as it (no identity to hold the session to, review25: a
            # working directory the view shows through a copy-on-write overlay is refused
            # only when something was verified in it).
            return (), None
        report = await _callerfs.run_as(
            caller, functools.partial(trust.verify_tree, workdir, policy,
                                      home=view.home if view is not None else None,
                                      expect=files.workdir_identity),
            timeout=SCAN_TIMEOUT, what=f"the trust scan of {workdir}")
    except _callerfs.ThreadsExhausted:
        raise
    except _callerfs.CallerFileError as exc:
        raise trust.TrustPolicyError(f"cannot verify instruction files: {exc.message}",
                                     hint=exc.hint) from None
    prepared.trust_warnings.extend(report.warnings)
    pinned = []
    for entry in report.entries:
        if entry.verified is not None and entry.real_path is not None:
            if not entry.listed or (view is not None and shown_in_view(entry.real_path, view)):
                pinned.append(entry)
            else:
                prepared.trust_warnings.append(f"{entry.path}: {UNPINNED}")
        prepared.trust.append(TrustOutcome(
            path=entry.path, outcome=entry.status, reason=entry.reason or "",
            sha256=entry.verified.sha256 if entry.verified is not None else ""))
    report.check()
    # A mount keeps a file, not a link: through a link the session may re-point, a pinned
    # name would read other text in this session, and a project policy would be another
    # one (or its link's target rewritten) at the next launch.
    policy_files = (trust.POLICY_FILE_NAME, trust.POLICY_FILE_NAME + ".bundle")
    names = [*(os.path.join(workdir, name) for name in policy_files),
             *(os.path.join(workdir, entry.path) for entry in pinned)]
    grants = view.grants if view is not None else ()
    links = await _callerfs.run_as(
        caller, lambda: [link for name in names for link in writable_links(name, grants)],
        timeout=_callerfs.DEFAULT_TIMEOUT, what="the verified files' names")
    if links:
        raise trust.TrustError(
            f"a verified instruction file or the project trust policy is named through the "
            f"symbolic link {links[0]}, in a directory the session may write: it could point "
            "it at other text",
            hint="replace the link by the file itself, or keep the link where the session "
                 "cannot write")
    return tuple((entry.real_path, entry.verified.data) for entry in pinned
                 if entry.real_path is not None and entry.verified is not None), \
        report.root_identity


async def _read_tls_files(loaded: Sequence[Any], caller: Caller | None) -> dict[str, bytes]:
    """The TLS files of the session's https routes (``tls_ca``, ``tls_client_cert``,
    ``tls_client_key``: paths from the caller's profile), read as the caller (``_callerfs``:
    once, never blocking, regular files of at most :data:`MAX_TLS_FILE` bytes). OpenSSL gets
    these bytes, never the paths: the system daemon lends neither its rights nor a thread."""
    paths = {path for item in loaded if item.route.scheme == "https"
             for path in (item.route.tls_ca, item.route.tls_client_cert,
                          item.route.tls_client_key) if path}
    return {path: (await _callerfs.open_for(caller, path, max_bytes=MAX_TLS_FILE)).data
            for path in sorted(paths)}


async def prepare(
    policy: ResolvedPolicy,
    request: LaunchRequest,
    *,
    settings: NetworkSettings,
    environ: Mapping[str, str],
    listen_ports: Sequence[int] = (),
    user_config_dir: Path | None = None,
    trust_override: bool = False,
    caller: Caller | None = None,
    trust_files: Callable[[], PolicyFiles | None] | None = None,
    caller_identity: _callerfs.Identity | None = None,
    secret_hosts: SecretHosts | None = None,
    bindings: LaunchBindings | None = None,
    tool_session: bool = False,
) -> SessionServices:
    """Everything decided before the launch. Raises to refuse it; nothing is left running.

    ``user_config_dir`` is where the caller's user-level trust policy lives (None: it could
    not be located, which is recorded); ``caller`` is whose identity reads the caller's files
    (None: the daemon's own, as a user daemon's caller); ``trust_files``: the trust policy
    files, read as ``caller`` already (see ``_verify_instruction_files``);
    ``caller_identity``: ``caller``'s, when already known; ``secret_hosts``: where each of
    the caller's secrets has been sent (a route elsewhere refuses the launch); ``bindings``:
    the launch's, which keeps what it binds there provisional until the caller settles it
    (``SecretHosts.confirm`` once the program exists, ``withdraw`` if it is refused: even
    by this function, after the binding). ``tool_session``: the launch is a tool's
    (``command_policies``), whose routes its agent's launch bound: it binds nothing new (a
    reference bound to nothing refuses it).
    """
    from . import credentials, proxy

    prepared = SessionServices()
    prepared._listen_ports = tuple(listen_ports)
    prepared._listen_address = settings.listen_address
    extra: list[tuple[str, str]] = list(request.extra_env)
    pins: tuple[tuple[str, bytes], ...] = request.pins
    cwd_identity = request.cwd_identity

    if not trust_override:
        verified, cwd_identity = await _verify_instruction_files(
            request.cwd, user_config_dir, caller, prepared, policy, trust_files)
        pins = pins + verified
    else:
        prepared.trust_warnings.append("trust verification skipped (--trust-override)")

    sources = credentials.SourceOptions()
    if caller is not None:  # file:// credentials: opened as the caller, and must be its own
        identity = caller_identity if caller_identity is not None else \
            await trio.to_thread.run_sync(_callerfs.Identity.of, caller)
        sources = credentials.SourceOptions(file_owner=caller.uid, file_identity=identity,
                                            daemon_stores=caller.uid == 0)
    net = policy.network
    port = request.proxy_port
    proxied = net.restricted and not net.block
    routes = credentials.session_routes(net, _builtin_routes()) if proxied else ()
    # Where this launch would send each secret: its routes' upstreams, and the profile's
    # approval webhooks, which sign what they post with theirs (an HMAC of bodies the
    # program steers; the daemon's own backends are the operator's, not bound).
    hooks = [b for b in net.approval.backends if b.type == "webhook" and b.key and b.url
             and not b.name.startswith(DAEMON_BACKEND_PREFIX)] if net.approval else []
    # Each file reference's links are resolved once, as the caller: the path that is bound
    # is the path read, with no link on the way (``exact_paths``), so a link changed in
    # between (by another session writing the repository) refuses the read.
    # Its tools' routes too (``command_policies``): their sessions start at the agent's
    # calls, where no one reads a note; they are bound (and said, or refused) here, and a
    # tool's session binds nothing of its own (``tool_session``).
    tool_routes = [(tool.name, route) for tool in policy.tools if tool.policy is not None
                   and tool.policy.network.restricted and not tool.policy.network.block
                   for route in credentials.session_routes(tool.policy.network,
                                                           _builtin_routes())
                   if not route.filter_only]
    references = [r.credential_key for r in routes if not r.filter_only] + \
        [b.key for b in hooks if b.key] + [r.credential_key for _, r in tool_routes] + \
        [ref for ref, _ in net.env_credentials]
    real: dict[str, str] = {}
    if any(ref.startswith("file://") for ref in references):
        real = await trio.to_thread.run_sync(
            credentials.real_references, references, sources.file_identity)
        routes = tuple(msgspec.structs.replace(r, credential_key=real[r.credential_key])
                       if r.credential_key in real else r for r in routes)
    bound = msgspec.structs.replace(sources, exact_paths=True)
    sent = [(f"route `{r.name}`", r.credential_key, credentials.trusting(r.upstream, r.tls_ca))
            for r in routes if not r.filter_only]
    sent += [(f"approval webhook `{b.name}`", real.get(b.key, b.key), b.url)
             for b in hooks if b.key and b.url]
    sent += [(f"tool `{tool}`'s route `{r.name}`", real.get(r.credential_key, r.credential_key),
              credentials.trusting(r.upstream, r.tls_ca)) for tool, r in tool_routes]
    # The program's environment: from there a secret goes wherever the network reaches.
    sent += [(f"env_credentials `{var}`", real.get(ref, ref), credentials.ENVIRONMENT)
             for ref, var in net.env_credentials]
    if secret_hosts is not None and sent:  # before any secret is read
        prepared.secrets_bound = await trio.to_thread.run_sync(functools.partial(
            secret_hosts.admit, caller.uid if caller is not None else None, sent,
            identity=sources.file_identity,  # a file's links, resolved as the caller
            bind=not tool_session, launch=bindings))
    if proxied:
        loaded = await credentials.load_route_secrets(routes, environ=environ, options=bound)
        credentials.require_route_secrets(loaded)  # before anything is opened
        # The program never holds these, but may piece one together from what an upstream
        # reflects in a form the scrubber does not know: it never reaches the audit file.
        prepared.hidden.update(hidden_strings(
            None, tuple(r.secret.reveal() for r in loaded if r.secret is not None)))
        if policy.network_isolation == "landlock":
            # No namespace of its own: the session connects to the proxy on the host's
            # loopback (Landlock lets it reach that port and no other).
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            prepared._host_listener = listeners[0]
            port = listeners[0].socket.getsockname()[1]
            prepared._listen_ports = ()  # it binds the host's ports itself (Landlock-limited)
        port = port or _pick_port()
        token = credentials.PhantomToken.new()
        prepared.credentials = [r.route.name for r in loaded if r.secret is not None]
        table = None
        if routes:
            tls_files = await _read_tls_files(loaded, caller)
            table = await trio.to_thread.run_sync(functools.partial(
                proxy.RouteTable, loaded, token=token, extra_ca_file=settings.extra_ca_file,
                tls_files=tls_files))
        extra += proxy.child_environment(port, token.reveal())
        extra += credentials.credential_environment(routes, port=port, token=token)
        prepared.hidden.update(hidden_strings(token.reveal()))
        prepared._proxy_args = {
            "policy": proxy.proxy_policy(net),
            "resolver": proxy.Resolver(pins=settings.resolve or None,
                                       allow_private=settings.allow_private),
            "proxy_token": token.reveal(),
            "routes": table,
        }
        hosts = credentials.intercepted_hosts(routes) if net.tls_intercept else []
        if net.tls_intercept is not None and hosts:
            if policy.network_isolation == "landlock":
                raise PolicyError("network.tls_intercept needs the session's own view (its "
                                  "trust bundle holds the session's CA); Landlock network "
                                  "isolation has none", hint="use namespace isolation")
            ca = await trio.to_thread.run_sync(functools.partial(
                credentials.SessionCA, hosts, ca_validity=net.tls_intercept.ca_validity,
                leaf_validity=net.tls_intercept.leaf_validity))
            pin, bundle_env = await trio.to_thread.run_sync(credentials.session_trust, ca)
            pins += (pin,)
            extra += bundle_env
            prepared._proxy_args["intercept"] = ca
            prepared.intercepts = tuple(hosts)
    if net.approval is not None:  # a missing webhook key refuses the launch, as a route's
        for backend in net.approval.backends:
            if backend.type == "webhook" and backend.key:
                # The operator's backends ([approvals.backends]) read with the daemon's rights.
                own = backend.name.startswith(DAEMON_BACKEND_PREFIX)
                key = await trio.to_thread.run_sync(functools.partial(
                    credentials.resolve_credential, real.get(backend.key, backend.key),
                    environ=environ, options=credentials.SourceOptions() if own else bound))
                prepared.approval_keys[backend.name] = key.reveal().encode()
    if net.env_credentials:  # the paths bound, read with no link on the way (as routes')
        pairs = await trio.to_thread.run_sync(functools.partial(
            credentials.resolve_env_credentials,
            tuple((real.get(ref, ref), var) for ref, var in net.env_credentials),
            environ=environ, options=bound))
        extra += [(name, secret.reveal()) for name, secret in pairs]
        prepared.secret_env = tuple(name for name, _ in pairs)
        prepared.hidden.update(hidden_strings(None, tuple(s.reveal() for _, s in pairs)))
    prepared.request = msgspec.structs.replace(
        request, extra_env=tuple(extra), proxy_port=port, pins=pins, cwd_identity=cwd_identity)
    prepared._inbound = await _open_inbound(prepared._listen_ports, prepared._listen_address)
    return prepared


async def _open_inbound(ports: Sequence[int], address: str
                        ) -> list[tuple[int, list[trio.SocketListener]]]:
    """The host's listening sockets of the session's forwards, opened before anything runs:
    a port that cannot be bound refuses the launch (it used to kill the program after it had
    started, with a traceback in the log), and so does one whose descriptor would lie in the
    daemon's reserve (``_descriptors``): one user's forwards must not fill the descriptor
    table that every session and client of the daemon shares."""
    opened: list[tuple[int, list[trio.SocketListener]]] = []
    try:
        for port in ports:
            try:
                listeners = await trio.open_tcp_listeners(port, host=address)
            except OSError as exc:
                raise PolicyError(f"listen port {port} cannot be bound on {address}: "
                                  f"{exc.strerror or exc}") from None
            opened.append((port, listeners))
            if not all(for_sessions(lst.socket.fileno()) for lst in listeners):
                raise PolicyError(
                    f"listen port {port}: the daemon keeps its last descriptors for itself "
                    f"({len(ports)} listen ports asked)",
                    hint="forward fewer ports, or raise the daemon's descriptor limit "
                    "(LimitNOFILE=)")
    except BaseException:
        for _, group in opened:
            for listener in group:
                listener.socket.close()
        raise
    return opened


async def serve(
    prepared: SessionServices,
    proc: Served,
    events: Callable[[object], None],
    *,
    asker: Any = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the session's proxy and inbound forwards until cancelled. ``asker``
    (``nonod.proxy.Asker``) decides unlisted hosts when the profile says ``ask``."""
    try:
        await _serve(prepared, proc, events, asker, task_status)
    finally:
        table = (prepared._proxy_args or {}).get("routes")
        if table is not None:
            table.forget()  # the session's real secrets go with it, whoever holds the table


async def _serve(prepared: SessionServices, proc: Served, events: Callable[[object], None],
                 asker: Any, task_status: trio.TaskStatus[None]) -> None:
    from . import proxy

    async with trio.open_nursery() as nursery:
        listener: trio.abc.Listener[trio.SocketStream] | None = None
        if prepared._host_listener is not None and prepared.request is not None:
            # On the host's loopback, where every local user can connect: only the
            # session's uid may (``_loopback_peers``).
            uid = prepared.request.uid
            proxy.bound_buffers(prepared._host_listener.socket)
            listener = SameUidListener(prepared._host_listener,
                                       os.geteuid() if uid is None else uid)
        elif proc.proxy_listener is not None:
            listener = trio.SocketListener(
                trio.socket.from_stdlib_socket(proc.proxy_listener))
        if prepared._proxy_args is not None and listener is not None:
            runs_as = prepared.request.uid if prepared.request is not None else None
            await nursery.start(functools.partial(
                proxy.serve_proxy, listener, events=events, asker=asker,
                # The system daemon's sessions run as their users (a uid is given): each
                # user's proxies together hold a share of the host's ephemeral ports.
                share=None if runs_as is None else (_upstream_share(), runs_as),
                **prepared._proxy_args))
        uid = prepared.request.uid if prepared.request is not None else None
        # Each forwarded connection holds two of the daemon's descriptors: on the system
        # daemon it counts in its peer's share of the proxies' (``UidShare``), one pool.
        inbound = _Inbound(os.geteuid() if uid is None else uid,
                           share=None if uid is None else _upstream_share())
        for port, listeners in prepared._inbound:
            for lst in listeners:
                nursery.start_soon(_forward_inbound, lst, proc, port, events, inbound)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            prepared.discard()  # the forwards' host sockets go with the session


_shares: trio.lowlevel.RunVar[UidShare] = trio.lowlevel.RunVar("nonod.upstream_share")


def _upstream_share() -> UidShare:
    """The daemon's one count of its users' proxy connections (one per trio run)."""
    from .proxy import UidShare, uid_share_cap  # the proxy loads with the first session

    try:
        return _shares.get()
    except LookupError:
        share = UidShare(uid_share_cap())
        _shares.set(share)
        return share


@final
class _Inbound:
    """The connections open through one session's forwards (:data:`MAX_INBOUND`), and how
    many of them each peer uid holds: any local user may connect, and one that is not the
    session's own holds at most :data:`MAX_INBOUND_FOREIGN` (the peer socket's owner, from
    ``sock_diag``; a peer the kernel does not know counts as one foreign uid)."""

    def __init__(self, owner: int, share: UidShare | None = None) -> None:
        self.active = 0
        self.owner = owner
        self.by_uid: Counter[int | None] = Counter()
        #: The system daemon's count of each uid's connections (``UidShare``): a peer's
        #: connections here count in its share (every peer the kernel does not know in one).
        self._share = share

    def admit(self, stream: trio.SocketStream) -> tuple[bool, int | None]:
        """Count ``stream`` in (True) or say it must be closed (False); and its peer uid."""
        if self.active >= MAX_INBOUND or not for_sessions(stream.socket.fileno()):
            return False, None
        try:
            uid: int | None = owner_of(tcp_peer_uid(stream.socket))  # subordinate: its user's
        except OSError:
            uid = None
        if uid != self.owner and self.by_uid[uid] >= MAX_INBOUND_FOREIGN:
            return False, uid
        if self._share is not None and not self._share.take(_share_key(uid)):
            return False, uid
        self.active += 1
        self.by_uid[uid] += 1
        return True, uid

    def release(self, uid: int | None) -> None:
        self.active -= 1
        self.by_uid[uid] -= 1
        if self._share is not None:
            self._share.give(_share_key(uid))


def _share_key(uid: int | None) -> int:
    """A peer's key in ``UidShare``: its uid, or -1 for every peer the kernel does not know."""
    return -1 if uid is None else uid


async def _forward_inbound(listener: trio.SocketListener, proc: Served, port: int,
                           events: Callable[[object], None], inbound: _Inbound) -> None:
    async def admitted(stream: trio.SocketStream, uid: int | None) -> None:
        try:
            await handle(stream)
        except Exception:  # one connection's failure, never the session's (any local user
            log.exception("inbound.connection_failed", port=port)  # may connect here)
            await trio.aclose_forcefully(stream)
        finally:
            inbound.release(uid)

    async def handle(stream: trio.SocketStream) -> None:
        peer = "?"
        try:
            host, port_ = stream.socket.getpeername()[:2]
            peer = f"{host}:{port_}"
        except OSError:
            pass
        try:
            inside = await proc.connect_inside(port)
            if not for_sessions(inside.socket.fileno()):
                await trio.aclose_forcefully(inside)
                raise OSError(errno.EMFILE, "descriptors kept for the daemon")
        except OSError as exc:
            events(InboundEvent(port=port, peer=peer, decision="deny",
                                reason=os.strerror(exc.errno) if exc.errno else str(exc)))
            await stream.aclose()
            return
        counts = [0, 0]

        async def pipe(src: trio.abc.Stream, dst: trio.abc.Stream, i: int) -> None:
            try:
                while data := await src.receive_some(65536):
                    counts[i] += len(data)
                    await dst.send_all(data)
                if isinstance(dst, trio.SocketStream):
                    await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipe, stream, inside, 0)
                nursery.start_soon(pipe, inside, stream, 1)
        finally:
            await stream.aclose()
            await inside.aclose()
            events(InboundEvent(port=port, peer=peer, decision="allow",
                                bytes_in=counts[0], bytes_out=counts[1]))

    async with trio.open_nursery() as nursery:
        while True:
            stream = await accept_retrying(listener.accept, event="inbound.accept_backoff")
            taken, uid = inbound.admit(stream)
            if not taken:
                await trio.aclose_forcefully(stream)  # a flood: not even an event for it
                continue
            nursery.start_soon(admitted, stream, uid)
