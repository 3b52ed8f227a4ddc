"""The resolved policy: what a session is allowed, after profiles, groups and overrides.

A profile (``nonod.profiles``) is what a person writes; a :class:`ResolvedPolicy` is what the
sandbox enforces. Only a ResolvedPolicy reaches the launcher. Every path in it is absolute and
canonical (symlinks resolved, no ``..``), every group is expanded, and everything that was left
out on the way (a macOS-only path, an optional path that does not exist) is listed in ``notes``
so that ``profile show --resolved`` and ``inspect`` can say so.

This module imports nothing but msgspec so that ``nonoctl`` can use it without the daemon.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from .protocol import Limits as Limits


class Access(enum.StrEnum):
    """nono's access modes. ``read`` = read files, list dirs, execute; ``write`` = create,
    remove, rename, truncate, write (no read); ``readwrite`` = both."""

    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"

    @property
    def reads(self) -> bool:
        return self in (Access.READ, Access.READWRITE)

    @property
    def writes(self) -> bool:
        return self in (Access.WRITE, Access.READWRITE)


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """Access to one existing path. ``is_file`` grants file rights only (``*_file`` keys)."""

    path: str
    access: Access
    is_file: bool = False
    source: str = "profile"  # "profile", "group:<name>", "workdir", "cli", "base"


class Denial(msgspec.Struct, frozen=True, kw_only=True):
    """A path the session must not see, even under an allowed parent (masked by a mount).

    The path may not exist yet; it is masked all the same, when it appears (nothing is created on
    the host for it). ``is_file`` says what kind of entry it names when it does not exist.
    """

    path: str
    is_file: bool = False
    source: str = "profile"


class Note(msgspec.Struct, frozen=True, kw_only=True):
    """Something resolution left out or changed, for people to read.

    ``kind`` is one of ``macos_only``, ``missing``, ``deprecated_key``, ``bypass``, ``info``.
    """

    kind: str
    message: str
    path: str = ""
    source: str = ""  # where the noted entry came from, as in Grant.source


class EnvPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Which variables the program gets. Nothing is inherited unless listed in ``allow_vars``
    (exact names or ``PREFIX_*``); ``set_vars`` are set as given; ``deny_vars`` always win."""

    allow_vars: tuple[str, ...] = ()
    deny_vars: tuple[str, ...] = ()
    set_vars: tuple[tuple[str, str], ...] = ()


class CustomCredential(msgspec.Struct, frozen=True, kw_only=True):
    """One ``network.custom_credentials`` entry, carried for the credential proxy."""

    upstream: str
    credential_key: str
    inject_mode: str = "header"
    inject_header: str = "Authorization"
    credential_format: str = "Bearer {}"
    env_var: str | None = None
    path_pattern: str | None = None
    path_replacement: str | None = None
    query_param_name: str | None = None
    endpoint_rules: tuple[tuple[str, str], ...] = ()  # (method, path glob)
    tls_ca: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None


class ApprovalBackend(msgspec.Struct, frozen=True, kw_only=True):
    """One named place approvals go (``network.approval_backends``): ``queue`` (the daemon's
    own pending queue: ``nonoctl approvals``, the client API's events), ``webhook`` (an HTTPS
    POST signed with HMAC-SHA256 under the credential ``key``) or ``chain`` (``members``
    asked together; ``mode`` ``all``: every one must allow, ``any``: one allow suffices)."""

    name: str
    type: str  # queue | webhook | chain
    url: str | None = None
    key: str | None = None
    timeout_secs: float | None = None
    mode: str = "any"
    members: tuple[str, ...] = ()


#: The built-in backend every profile may name: the daemon's own queue.
QUEUE_BACKEND: Final = "queue"
#: How a profile names a backend of the daemon's ``[approvals.backends]`` (``daemon:ops``).
DAEMON_BACKEND_PREFIX: Final = "daemon:"


class ApprovalPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What happens to a destination the allowlist does not name: it is *asked* about.
    ``backend`` names the deciding backend (``queue``, or one of ``backends``);
    ``timeout_secs`` bounds the wait (None: the daemon's ``[approvals] timeout``); no answer
    in time is a denial."""

    backend: str = QUEUE_BACKEND
    timeout_secs: float | None = None
    backends: tuple[ApprovalBackend, ...] = ()

    def named(self, name: str) -> ApprovalBackend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        if name != QUEUE_BACKEND:
            raise KeyError(name)  # with_daemon_backends checked every name at launch
        return ApprovalBackend(name=QUEUE_BACKEND, type="queue")

    def with_daemon_backends(self, offered: tuple[ApprovalBackend, ...]) -> ApprovalPolicy:
        """This policy with the daemon's backends it names (``daemon:<name>``) added.

        Raises KeyError naming the first backend neither the profile nor the daemon has."""
        known = {b.name: b for b in (*self.backends, *offered)}
        wanted = [self.backend, *(m for b in self.backends for m in b.members)]
        for name in wanted:
            if name != QUEUE_BACKEND and name not in known:
                raise KeyError(name)
        used = tuple(known[n] for n in dict.fromkeys(wanted) if n.startswith(
            DAEMON_BACKEND_PREFIX) and n not in {b.name for b in self.backends})
        return msgspec.structs.replace(self, backends=(*self.backends, *used))


class TlsIntercept(msgspec.Struct, frozen=True, kw_only=True):
    """``network.tls_intercept``: the session's https credential routes are intercepted on
    CONNECT (``docs/network.md``, "TLS interception"). Validities are seconds."""

    ca_validity: int = 24 * 3600
    leaf_validity: int = 3600


class NetworkPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The network part of a policy.

    ``restricted`` is False when the profile asks for no network restriction: neither
    ``block`` nor anything that needs the proxy (allowed domains, a network profile,
    credential routes, an upstream proxy), which is nono's default (unrestricted).
    ``block`` forbids all network. Otherwise the session gets a private network namespace and
    reaches ``allow_domain`` through the daemon's proxy; an empty ``allow_domain`` then allows
    no host. ``upstream_proxy`` (host:port) is where the proxy sends allowed traffic on, except
    for hosts in ``upstream_bypass``. ``approval`` set: a host that is not allowed is asked
    about (``docs/approvals.md``) instead of refused; None (the default): refused.
    ``tls_intercept`` set: a CONNECT to the upstream of an https credential route is
    intercepted (its requests get the route's credential and rules); None: blind tunnels.
    ``endpoint_domains``: ``allow_domain`` entries with ``endpoints`` (host, (method, path
    glob) rules), intercepted and filtered without a credential (only with ``tls_intercept``).
    """

    restricted: bool = False
    block: bool = False
    allow_domain: tuple[str, ...] = ()
    network_profile: str | None = None
    listen_ports: tuple[int, ...] = ()
    open_ports: tuple[int, ...] = ()
    credentials: tuple[str, ...] = ()
    custom_credentials: tuple[tuple[str, CustomCredential], ...] = ()
    env_credentials: tuple[tuple[str, str], ...] = ()  # (credential reference, env var)
    upstream_proxy: str | None = None
    upstream_bypass: tuple[str, ...] = ()
    approval: ApprovalPolicy | None = None
    tls_intercept: TlsIntercept | None = None
    endpoint_domains: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


#: A fork bomb in one session must not starve the host or the other sessions.
DEFAULT_MAX_PROCESSES: Final = 4096


class ResolvedPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What the launcher enforces. Build one with ``nonod.profiles.resolve``."""

    name: str
    grants: tuple[Grant, ...]
    denials: tuple[Denial, ...]
    workdir: str | None = None
    workdir_access: Access | None = None
    env: EnvPolicy = EnvPolicy()
    signal_mode: str = "isolated"  # isolated | allow_same_sandbox | allow_all
    ipc_mode: str = "shared_memory_only"  # shared_memory_only | full
    process_info_mode: str = "isolated"  # isolated | allow_same_sandbox | allow_all
    af_unix_mediation: str = "off"  # off | pathname (nono's linux.af_unix_mediation)
    # "namespaces": private network namespace (default); "landlock": the host's network with
    # Landlock TCP rules (connect only to the proxy port, bind only listen ports) and a seccomp
    # filter refusing everything but TCP: nono's model, weaker, and reported as such.
    network_isolation: str = "namespaces"
    network: NetworkPolicy = NetworkPolicy()
    # Layers the profile lets us run without ("accept partial enforcement"); empty = all required.
    allow_degraded: tuple[str, ...] = ()
    # socket(AF_UNIX) allowed (profile "nonod": {"unix_sockets": true}); socketpair always is.
    allow_unix_sockets: bool = False
    # A root caller of the system daemon may run this as root (profile "nonod":
    # {"allow_root": true}); the daemon's [sessions] allow_root must agree.
    allow_root: bool = False
    # Files under writable grants that stay writable although they could run code later.
    writable_persistence: tuple[str, ...] = ()
    # The home directory resolution expanded ``~`` and ``$HOME`` with: the view's protections
    # of the home (shell and tool start-up files, caches) are placed by it, so a caller whose
    # ``HOME`` variable differs from the home the grants name cannot have them placed elsewhere.
    home: str | None = None
    # The user's cache home as resolution knew it ($XDG_CACHE_HOME, else ~/.cache; canonical):
    # a writable directory grant at or under it (or under ``~/.cache``) is copy-on-write in
    # the session (``_mounts``: host tools run what their caches hold), unless it lies at or
    # under one of ``shared_caches`` (profile "nonod": {"shared_caches": [...]}).
    cache_home: str | None = None
    shared_caches: tuple[str, ...] = ()
    # Writable directory grants named through a symbolic link in the cache home (a cache
    # kept elsewhere: ``~/.cache/huggingface -> /data/hf``), canonical: copy-on-write too.
    cache_links: tuple[str, ...] = ()
    # Caches the caller's environment moved out of their default places (``GOCACHE``,
    # ``GOPATH``, ``CARGO_HOME``...: ``profiles._caches``), as written: copy-on-write too.
    cache_dirs: tuple[str, ...] = ()
    # Files the session may read but never change wherever its grants would let it: the
    # profile file the launch named (a session that rewrote it chose the next one's policy).
    protected_files: tuple[str, ...] = ()
    # The symbolic links resolution followed to a denied path (``~/.aws -> dotfiles/aws``),
    # at their real place: where one lies in a writable directory grant the session cannot
    # remove or rename it (``_mounts.LINK_ANCHOR``), or the next launch's denial would name
    # nothing and what the link led to would be readable. Resolution refuses such a link in
    # its own writable grants; a learn run adds the whole tree's after resolution.
    denial_links: tuple[str, ...] = ()
    # The XDG base directories the caller's environment moved from their places under the
    # home (``XDG_CONFIG_HOME=~/cfg``): (the default place relative to the home, ".config",
    # ".local/share" or ".local/state"; where it is, canonical). The persistence names under
    # the default place (``.config/git``...) are kept at the moved place too: the host's
    # programs, started with the same environment, read them there.
    xdg_homes: tuple[tuple[str, str], ...] = ()
    # For a root caller: the home directories of the host's other accounts (the password
    # database, canonical). Root may write them all, so their start-up files are kept, as
    # the caller's are, wherever a writable directory grant holds them (a root session with
    # ``/home`` writable wrote another user's ``.bashrc``, run at that user's next login).
    other_homes: tuple[str, ...] = ()
    # The caller's global git configuration where its environment moved it
    # (``GIT_CONFIG_GLOBAL``, ``$XDG_CONFIG_HOME/git/config``): its ``core.hooksPath`` and
    # includes are kept as ``~/.gitconfig``'s are (``_mounts._hook_dirs``).
    git_configs: tuple[str, ...] = ()
    # Processes and threads the session may have at once (RLIMIT_NPROC, counted in the
    # session's own user namespace); 0: no cap.
    max_processes: int = DEFAULT_MAX_PROCESSES
    # Resource limits (a cgroup per session): profile, flags, then nonod.toml's defaults and
    # ceilings (``nonod._limits``). ``limits.max_processes`` is set only when asked for: then
    # the pid cap is required, not best effort.
    limits: Limits = Limits()
    binary: str | None = None
    command_args: tuple[str, ...] = ()
    notes: tuple[Note, ...] = ()
    groups: tuple[str, ...] = ()
    #: Per-tool sandboxes (``command_policies``): each tool runs in a child session of its own.
    tools: tuple[ToolPolicy, ...] = ()

    def digest(self) -> str:
        """SHA-256 of the canonical JSON encoding: names this exact policy in audit records."""
        import hashlib

        data = msgspec.json.encode(self, order="sorted")
        return hashlib.sha256(data).hexdigest()


class ToolPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One command of ``command_policies``, resolved: the executable the agent's view masks
    with the daemon's shim, and the policy of the child session that runs it
    (``nonod.toolsandbox``). ``policy`` is None when the agent's session may not run it at
    all (``from.session: "deny"``). ``invocation`` is the JSON of its ``invocation_policy``
    (empty: none); this module stays free of the tool sandbox's types."""

    name: str
    executable: str
    policy: ResolvedPolicy | None = None
    invocation: str = ""
    #: The write grant (the agent's, or another tool's the agent calls: ``, by the tool
    #: ...``) or the link on the way to the executable that lets the agent change what runs
    #: as the tool, accepted by ``allow_writable_executable``; empty: none.
    rewritable: str = ""
