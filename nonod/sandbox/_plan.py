"""Turn (ResolvedPolicy, LaunchRequest) into a LaunchPlan, in the parent, before any fork.

Everything that can be decided without the child is decided here: which namespaces, which
mounts, the Landlock ruleset, the seccomp program, the environment, the executable's path.
What cannot be enforced is either refused here (``EnforcementUnavailable``) or reported as a
weaker layer when the policy accepts it (``allow_degraded``).
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import pwd
import re
import secrets
from collections.abc import Iterable
from typing import Final

from .._callerfs import Identity, acting_as
from ..audit._events import _looks_secret as looks_secret
from ..audit._events import value_holds_secret
from ..errors import EnforcementUnavailable, LaunchError
from ..policy import EnvPolicy, Grant, ResolvedPolicy
from . import _createguard, _landlock, _libc, _linkscan, _mode, _seccomp
from ._launcher import LaunchPlan
from ._mounts import (
    ANCHOR,
    BIND_DIR,
    BIND_FILE,
    IDMAP,
    LINKED,
    MASK_DIR,
    OVERLAY,
    PIN,
    PRIVATE_TMP,
    TMPFS,
    ClosedBySession,
    MountOp,
    base_grants,
    compile_mounts,
    expand_root,
    idmap_available,
    narrow_sys,
)
from ._report import applied, partial, unavailable
from ._syscalls import native_arch
from ._types import EnforcementReport, LaunchRequest, LayerReport
from ._viewguard import guarded

# Passed through when present, unless the profile denies them: what a program needs to behave.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TERM", "COLORTERM",
            "TZ", "NO_COLOR", "COLUMNS", "LINES")
# Never passed from the caller's environment: they point at host services that the session
# cannot reach (and must not), or they change what code the program loads.
NEVER_PASS = ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "DBUS_SESSION_BUS_ADDRESS",
              "DBUS_SYSTEM_BUS_ADDRESS", "XDG_RUNTIME_DIR", "DISPLAY", "WAYLAND_DISPLAY",
              "XAUTHORITY", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
              "CREDENTIALS_DIRECTORY", "INVOCATION_ID", "JOURNAL_STREAM", "DOCKER_HOST",
              "KRB5CCNAME", "NONO_*")
# Loaded-code injection: passed only when the profile names them exactly (no wildcard).
INJECTION = ("LD_*", "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE",
             "PYTHONINSPECT", "PYTHONBREAKPOINT", "BASH_ENV", "ENV", "NODE_OPTIONS", "NODE_PATH",
             "PERL5OPT", "PERL5LIB", "RUBYOPT", "RUBYLIB", "GIT_SSH_COMMAND", "GIT_EXEC_PATH",
             "GIT_CONFIG_*", "PROMPT_COMMAND", "GCONV_PATH", "MALLOC_*", "GLIBC_TUNABLES",
             "DYLD_*")  # macOS's LD_*: harmless to drop on Linux, needed by a macOS launcher

NS_FLAGS = (_libc.CLONE_NEWUSER | _libc.CLONE_NEWNS | _libc.CLONE_NEWPID | _libc.CLONE_NEWIPC
            | _libc.CLONE_NEWUTS | _libc.CLONE_NEWCGROUP)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``name`` matches one of ``patterns`` (``fnmatch.fnmatchcase``'s rules)."""
    matcher = _matcher(patterns)
    return matcher is not None and matcher.match(name) is not None


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One expression for all of ``patterns`` (None: no pattern, nothing matches): a launch's
    environment asked ~30 patterns one ``fnmatchcase`` at a time for each variable (0.15 ms
    of each launch's plan); the profiles' patterns are the same from launch to launch."""
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


def sanitize_env(rules: EnvPolicy, env: Iterable[tuple[str, str]],
                 extra: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The program's environment: base names and ``allow_vars``, minus ``deny_vars``, the
    never-pass list, and injection variables and variables named like secrets
    (``GITHUB_TOKEN``, ``AWS_SECRET_ACCESS_KEY``: the audit's redaction rule) or holding
    one in a URL (``DATABASE_URL=postgres://u:password@h``) not named exactly; then
    ``set_vars`` and ``extra`` (proxy variables, phantom tokens). A pattern (``*``,
    ``AWS_*``) in a profile from a repository does not hand it the caller's keys."""
    allow = (*BASE_ENV, *rules.allow_vars)
    out: dict[str, str] = {}
    for key, value in env:
        if not _matches(key, allow) or _matches(key, rules.deny_vars):
            continue
        if _matches(key, NEVER_PASS):
            continue
        if (_matches(key, INJECTION) or looks_secret(key) or value_holds_secret(value)) \
                and key not in rules.allow_vars:
            continue
        out[key] = value
    for key, value in (*rules.set_vars, *extra):
        out[key] = value
    out.setdefault("PATH", DEFAULT_PATH)
    return tuple(f"{k}={v}" for k, v in out.items())


def _not_executable(name: str) -> LaunchError:
    """A command that exists but cannot run (a directory, or no execute permission): EACCES,
    which ``nonoctl`` turns into status 126, as a shell does."""
    return LaunchError(f"{name}: exists but is not an executable file", step="exec",
                       errno=errno.EACCES, detail=name,
                       hint="check its execute permission (chmod +x) and that it is a file")


def _executable(path: str) -> bool:
    return os.access(path, os.X_OK, effective_ids=True) and not os.path.isdir(path)


def find_executable(name: str, env: tuple[str, ...], cwd: str) -> str:
    """``name``'s path, as a shell finds it (``PATH`` in ``env``). Checked with the thread's
    effective (file system) identity, so that a thread acting as a caller finds what the
    caller would (``nonod._callerfs.acting_as``)."""
    if "/" in name:
        path = name if os.path.isabs(name) else os.path.join(cwd, name)
        if _executable(path):
            return os.path.normpath(path)
        if os.path.exists(path):
            raise _not_executable(name)
        raise LaunchError(f"{name}: no such executable", step="exec", errno=errno.ENOENT,
                          detail=name)
    search = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    found_unusable = False
    for directory in search.split(":"):
        path = os.path.join(directory or ".", name)
        if _executable(path):
            return path
        found_unusable = found_unusable or os.path.isfile(path)
    if found_unusable:  # as a shell: only a non-executable file in PATH, no executable one
        raise _not_executable(name)
    raise LaunchError(f"{name}: not found in the session's PATH ({search})", step="exec",
                      errno=errno.ENOENT, detail=name)


def _home_of(uid: int, env: tuple[tuple[str, str], ...], resolved: str | None = None) -> str:
    if resolved is not None:
        return resolved
    for key, value in env:
        if key == "HOME" and os.path.isabs(value):
            return value
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/"


def _processes_layer(limit: int, uid: int, host_counted: bool = False) -> LayerReport:
    if not limit:
        return LayerReport(name="processes", state="off",
                           reason='no cap ("nonod": {"max_processes": 0})')
    if uid == 0:
        return LayerReport(name="processes", state="off",
                           reason=f"unavailable for uid 0: the kernel exempts root from "
                           f"RLIMIT_NPROC (cap {limit} not applied)")
    if host_counted:
        return partial("processes", f"at most {limit} processes and threads (RLIMIT_NPROC), "
                       f"counted over every process of uid {uid} on the host: no user "
                       "namespace of its own (landlock-only mode)")
    return LayerReport(name="processes", state="applied",
                       detail=f"at most {limit} processes and threads (RLIMIT_NPROC, counted "
                       "in the session's own user namespace)")


def _degraded(policy: ResolvedPolicy, layer: str, report: LayerReport) -> LayerReport:
    """A missing layer is refused unless the profile accepts it."""
    if report.state != "applied" and layer not in policy.allow_degraded:
        raise EnforcementUnavailable(
            f"{layer} cannot be enforced on this machine: {report.reason}",
            step=layer,
            hint=f'accept it explicitly with "nonod": {{"allow_degraded": ["{layer}"]}} '
                 "in the profile, or fix the host (see `nonoctl doctor`)",
        )
    return report


PORT_RULES: Final = "network_ports"


def _accept_port_rules(policy: ResolvedPolicy, connect: list[int], bind: list[int],
                       unix_sockets: bool) -> None:
    """Landlock's TCP rules name ports, not addresses: allowing the proxy's port allows it on
    every host, and a listen port is bound on every interface. ``listen`` on an unbound socket
    binds an ephemeral port unchecked; seccomp refuses it unless the program may bind a port or
    make Unix sockets (``refuse_listen``). Refused unless accepted."""
    if (connect or bind or unix_sockets) and PORT_RULES not in policy.allow_degraded:
        what = [f"TCP connect to port {port} of any host, not only the proxy on 127.0.0.1"
                for port in connect]
        what += [f"bind of port {port} on every address of the host" for port in bind]
        if bind or unix_sockets:
            what.append("listen() on an unbound TCP socket binds an ephemeral port on every "
                        "address (Landlock does not check it; seccomp cannot refuse listen "
                        "while " + ("ports may be bound)" if bind else "Unix sockets are "
                                    "allowed)"))
        raise EnforcementUnavailable(
            f"{PORT_RULES} cannot be enforced with Landlock network rules, which name ports, "
            f"not addresses: {'; '.join(what)}", step=PORT_RULES,
            hint=f'accept it explicitly with "nonod": {{"allow_degraded": ["{PORT_RULES}"]}} '
                 "in the profile, or run with a private network namespace (see docs/network.md)")


def _view_grants(policy: ResolvedPolicy, ops: tuple[MountOp, ...], masked: tuple[str, ...]
                 ) -> tuple[list[Grant], int]:
    """Landlock's grants in a session's own view (what is visible there), and how many
    paths the view binds."""
    bound = {op.target for op in ops
             if op.kind in (BIND_DIR, BIND_FILE, TMPFS, IDMAP, OVERLAY)}
    grants: list[Grant] = list(base_grants())
    # A "/" grant is bound entry by entry, but Landlock takes it whole (masks still hold:
    # they are mode-000 mounts).
    grants.extend(g for g in policy.grants if g.path == "/")
    for grant in expand_root(policy.grants):
        visible = grant.path in bound and grant.path not in masked
        if visible or grant.path in PRIVATE_TMP:
            grants.append(grant)
    return grants, len(bound)


def _copy_on_write_detail(ops: tuple[MountOp, ...]) -> str:
    """The cache directories the session writes only its own copy of (``_mounts.OVERLAY``)."""
    overlays = sum(op.kind == OVERLAY for op in ops)
    return f", {overlays} cache directories copy-on-write" if overlays else ""


def _root_only_detail(uid: int, ops: tuple[MountOp, ...]) -> str:
    """How a uid-0 session is kept from what only root may read in ``ROOT_ONLY_TREES``."""
    if uid != 0:
        return ""
    idmapped = sum(op.kind == IDMAP for op in ops)
    if idmapped:
        return f"; root-only files: {idmapped} read-only grants idmapped (root shown unmapped)"
    return "; root-only files: masked (walk at launch)"


@functools.lru_cache(maxsize=16)
def _kept(ops: tuple[MountOp, ...]) -> int:
    """How many of ``ops`` the view guard keeps (for the report): the same from launch to
    launch of one view (0.1 ms of each launch's plan, worked out again each time)."""
    return len(guarded(ops))


@functools.cache
def _filter_for(options: _seccomp.SeccompOptions) -> bytes:
    """The BPF program for these options (a pure function of them, so built once)."""
    return _seccomp.build_filter(options)


@functools.lru_cache(maxsize=64)
def _landlock_plan(grants: tuple[Grant, ...], abi: int, scope_signals: bool,
                   required: frozenset[str], connect_ports: tuple[int, ...] | None,
                   bind_ports: tuple[int, ...] | None) -> _landlock.LandlockPlan:
    """``_landlock.compile_plan`` for these arguments (a pure function of them: the same
    policy launched again gets the plan it had, the paths' identities are the init's to
    check, ``rules_current``)."""
    return _landlock.compile_plan(
        grants, abi=abi, scope_signals=scope_signals, scope_abstract_unix=True,
        required=required, net_connect_ports=connect_ports, net_bind_ports=bind_ports)


@functools.cache
def _notify_filter() -> bytes:
    return _createguard.build_notify_filter(native_arch())


def _creation_layer(policy: ResolvedPolicy, refused: tuple[str, ...], abi: int
                    ) -> LayerReport | None:
    if not refused:
        return None
    if abi < 2:
        report = unavailable("creation_guard", f"{len(refused)} absent persistence paths could "
                             "be created: the guard needs Landlock ABI v2+ (REFER)")
    else:
        report = applied("creation_guard", detail=_createguard.describe(refused))
    return _degraded(policy, "creation_guard", report)


def _linked_layer(policy: ResolvedPolicy, linked: _linkscan.LinkScan, landlock_only: bool
                  ) -> LayerReport | None:
    """The names of the writable grants whose inode has a name outside them, made read-only
    (``_linkscan``): refused if the walk was cut short, or without a view to bind them in,
    unless the profile accepts it."""
    if not linked.targets and not linked.incomplete:
        return None
    if landlock_only:
        report = unavailable(_linkscan.LAYER, "no view to bind them read-only in "
                             "(landlock-only mode): they stay writable", detail=linked.describe())
    elif linked.incomplete:
        report = partial(_linkscan.LAYER, f"the walk stopped early: {linked.incomplete}; "
                         "files linked past that point stay writable (grant a smaller tree "
                         "writable)", detail=linked.describe())
    else:
        report = applied(_linkscan.LAYER, detail=linked.describe())
    return _degraded(policy, _linkscan.LAYER, report)


@functools.cache
def _host_abi() -> int:
    """The kernel's Landlock ABI: it cannot change while we run."""
    return _landlock.probe_abi()


#: Mount operations whose target shows the host's own directory (its device and inode),
#: and those that put another one in its place.
_HOST_DIRS: Final = frozenset({BIND_DIR, IDMAP, ANCHOR, LINKED})
_OTHER_DIRS: Final = frozenset({TMPFS, MASK_DIR, OVERLAY})


def _host_cwd(identity: tuple[int, int] | None, cwd: str,
              ops: Iterable[MountOp]) -> tuple[int, int] | None:
    """``identity``, to be checked in the session, if its working directory there is the
    host's directory (the nearest mount at or above ``cwd`` binds one); None where the view
    shows another directory at that path whatever the host has (a mask, the root's own
    tmpfs), which no check by identity fits.

    A copy-on-write overlay (a working directory in a cache root) shows the host's
    directory as its lower layer, taken by path when the view is built, and hides its
    identity (the overlay's own device): a directory renamed into its place after the
    daemon verified it would be the session's, unverified (review25). Refused then: a
    protection that cannot be applied refuses the launch."""
    if identity is None:
        return None
    real = os.path.realpath(cwd)
    nearest: MountOp | None = None
    for op in ops:
        placed = op.kind in _HOST_DIRS or op.kind in _OTHER_DIRS
        above = real == op.target or real.startswith(op.target.rstrip("/") + "/")
        if placed and above and (nearest is None or len(op.target) >= len(nearest.target)):
            nearest = op
    if nearest is not None and nearest.kind == OVERLAY:
        raise LaunchError(
            f"the working directory {cwd} is in a cache the session sees copy-on-write (an "
            "overlay of the host's directory, taken by path): the session could not be held "
            "to the directory whose instruction files were verified", step="mounts",
            hint=f"list {nearest.target} under the profile's shared_caches (the session then "
                 "writes the host's directory), keep the project outside the cache "
                 "directories, or launch with --trust-override")
    return identity if nearest is not None and nearest.kind in _HOST_DIRS else None


def build_plan(
    policy: ResolvedPolicy,
    request: LaunchRequest,
    *,
    controlling_tty: bool = False,
    landlock_abi: int | None = None,
    mode: _mode.Mode = _mode.NAMESPACES,
) -> tuple[LaunchPlan, EnforcementReport]:
    """``mode`` ``landlock-only``: no namespaces (see ``_mode``); the profile must accept
    by name every layer only a mount namespace could give, or the launch is refused."""
    if not request.argv:
        raise LaunchError("no command to run", step="exec")
    me = os.getuid()
    uid = me if request.uid is None else request.uid
    gid = os.getgid() if request.gid is None else request.gid
    if uid != me and me != 0:
        raise LaunchError("only root can launch a session as another user", step="user",
                          errno=1)
    landlock_only = mode == _mode.LANDLOCK_ONLY
    policy = _mode.adapt_policy(policy, mode)
    env = sanitize_env(policy.env, request.env, request.extra_env)
    home = _home_of(uid, request.env, policy.home)
    # A root session's /etc: idmapped where the kernel can (landlock-only mode has no view of
    # its own: the walk's masks become Landlock's exceptions there).
    idmap = uid == 0 and not landlock_only and idmap_available()
    if uid == 0:
        policy = narrow_sys(policy)  # sysfs's root-only files (``_mounts.SYS_FOR_ROOT``)
    # The plan's questions of the host (what exists, links, listings, git configurations)
    # are asked with the session's own file rights, as its launcher will act: a system
    # daemon's answers as root made a denied name in another user's 0700 directory a mask
    # that failed the launch only when the file existed, and followed a git include into
    # files only root may read (``Identity.session``).
    try:
        with acting_as(Identity.session(uid, gid) if uid != me else None):
            mounts = compile_mounts(policy, home=home, hide_root_only=uid == 0, idmap=idmap,
                                    pinned=tuple(os.path.realpath(p) for p, _ in request.pins))
    except ClosedBySession as exc:
        raise LaunchError(
            f"{exc.closed} is closed to the session's own uid, which owns it: what lies "
            "below it cannot be looked at to be protected", step="mounts",
            errno=errno.EACCES, detail=exc.path,
            hint=f"give it back its owner's permissions (chmod u+rwx {exc.closed})") from None
    linked = _linkscan.scan(mounts.ops, uid=uid)  # at each launch: never in a kept plan
    abi = _host_abi() if landlock_abi is None else landlock_abi
    if landlock_only:
        if abi < 1:  # nothing else would confine the filesystem: never accepted
            raise EnforcementUnavailable(
                "no namespaces on this host (landlock-only mode) and no Landlock: nothing "
                "would confine the filesystem", step="mode",
                hint="enable Landlock (lsm= boot parameter) or allow user namespaces; "
                     "`nonoctl doctor` checks both")
        if request.binds:  # the tool sandbox: its shims and socket live in the view
            raise EnforcementUnavailable(
                "no namespaces on this host (landlock-only mode): the profile's tools "
                "(command_policies) need a view of their own to run in child sessions",
                step="mode", hint="allow user namespaces (`nonoctl doctor` says what blocks "
                "them), or remove `command_policies` from the profile")
        grants, view_layer = _mode.landlock_only_view(policy, mounts, len(request.pins),
                                                     uid)
        mounts = _mode.EMPTY_VIEW
    else:
        grants, bound = _view_grants(policy, mounts.ops, mounts.masked)
        view_layer = applied(
            "filesystem_view", detail=f"{bound} paths bound, {len(mounts.masked)} "
            f"denied paths masked, {len(mounts.protected)} persistence files read-only"
            + _copy_on_write_detail(mounts.ops) + _root_only_detail(uid, mounts.ops))
    # "allow_all" reaches only the session's own processes in its pid namespace; without one,
    # the scope keeps it to them (and every process of the uid on the host out of reach).
    isolated_signals = policy.signal_mode != "allow_all" or landlock_only
    required = frozenset({"landlock", "landlock_refer", "landlock_truncate",
                          "landlock_scopes"} - set(policy.allow_degraded))
    net = policy.network
    # nono's model, when the profile asks for it: the host's network, Landlock TCP rules.
    landlock_net = (net.restricted or net.block) and policy.network_isolation == "landlock"
    private_net = (net.restricted or net.block) and not landlock_net
    proxy_port = 0
    connect_ports: list[int] | None = None
    bind_ports: list[int] | None = None
    if landlock_net:
        if net.restricted and not net.block and not request.proxy_port:
            raise LaunchError("the Landlock network mode needs the daemon's proxy port on the "
                              "host's loopback", step="landlock")
        connect_ports = [] if net.block else [request.proxy_port or 0]
        bind_ports = list(net.listen_ports)
        required = required | {"landlock_net"} - set(policy.allow_degraded)
    elif net.restricted and not net.block:
        # Any port will do: the namespace is the session's own. Random, so that programs do
        # not come to depend on one number instead of reading HTTP_PROXY.
        proxy_port = request.proxy_port or 20000 + secrets.randbelow(40000)
    landlock = _landlock_plan(
        tuple(grants), abi, isolated_signals, required,
        None if connect_ports is None else tuple(connect_ports),
        None if bind_ports is None else tuple(bind_ports))
    ns_flags = 0 if landlock_only else NS_FLAGS | (_libc.CLONE_NEWNET if private_net else 0)
    # A socket bound into the view (the tool sandbox's) needs socket(AF_UNIX); only a private
    # view has one, where no host socket outside the grants exists.
    unix_sockets = policy.allow_unix_sockets or (bool(request.binds) and not landlock_only)
    if landlock_net:
        _accept_port_rules(policy, connect_ports or [], bind_ports or [], unix_sockets)
    refuse_listen = landlock_net and not bind_ports and not unix_sockets
    seccomp = _filter_for(_seccomp.SeccompOptions(
        landlock_net_fallback=landlock_net, allow_netlink_route=private_net,
        allow_unix_sockets=unix_sockets, allow_ptrace=request.allow_ptrace,
        refuse_host_ipc=landlock_only, refuse_host_pids=landlock_only,
        protect_init=not landlock_only,
        refuse_host_inotify=landlock_only, refuse_listen=refuse_listen))

    executable = request.executable or find_executable(request.argv[0], env, request.cwd)
    real = os.path.realpath(executable)
    if not any(real == g.path or real.startswith(g.path.rstrip("/") + "/")
               for g in grants if g.access.reads):
        raise LaunchError(
            f"{executable} is not readable in the session: grant it (or its directory) in the "
            "profile", step="exec", errno=13, detail=executable)

    ops = [*mounts.ops, *(() if landlock_only else linked.ops())]
    for index, (path, _) in enumerate(() if landlock_only else request.pins):
        if not os.path.isabs(path):
            raise LaunchError(f"pinned path must be absolute: {path}", step="mounts")
        ops.append(MountOp(PIN, os.path.realpath(path), str(index)))
    for view_path, host_path in () if landlock_only else request.binds:
        ops.append(MountOp(BIND_FILE, view_path, host_path))

    # The first missing component of each absent denied or persistence path whose parent the
    # session may write (``_mounts``, opt-outs already applied): the creation guard's list.
    refused = mounts.creation_refused
    creation_layer = _creation_layer(policy, refused, landlock.abi)
    if creation_layer is None or creation_layer.state != "applied":
        refused = ()

    plan = LaunchPlan(
        executable=executable,
        argv=request.argv,
        env=env,
        cwd=request.cwd,
        uid=uid,
        gid=gid,
        switch_user=uid != me,
        ns_flags=ns_flags,
        mounts=tuple(ops),
        pinned=() if landlock_only else tuple(data for _, data in request.pins),
        landlock=landlock,
        seccomp=seccomp,
        controlling_tty=controlling_tty,
        loopback=private_net,
        proxy_port=proxy_port,
        audit_tag=request.audit_tag,
        oom_score_adj=-1 if request.oom_score_adj is None else request.oom_score_adj,
        cgroup_procs=request.cgroup_procs,
        cgroup_pool=request.cgroup_pool,
        cgroup_limits=request.cgroup_limits,
        # + the outer launcher and the init, which count in the same user namespace
        max_processes=policy.max_processes + 2 if policy.max_processes else 0,
        creation_refused=refused,
        creation_filter=_notify_filter() if refused else b"",
        cwd_identity=request.cwd_identity if landlock_only
        else _host_cwd(request.cwd_identity, request.cwd, ops),
    )
    layers = [
        _mode.namespaces_layer() if landlock_only else applied(
            "namespaces", detail="user, mount, pid, ipc, uts, cgroup"
            + (", net" if private_net else "")),
        view_layer,
        _degraded(policy, "landlock", landlock.report),
        applied("seccomp", detail=("unix sockets allowed" if unix_sockets
                                   else "socket(AF_UNIX) refused")
                + ("; ptrace allowed (learn)" if request.allow_ptrace else "")
                + ("; System V IPC and POSIX message queues refused (the host's)"
                   if landlock_only else "")),
        applied("no_new_privs"),
        applied("capabilities", detail="all dropped, securebits locked"),
        _processes_layer(policy.max_processes, uid, landlock_only),
    ]
    linked_layer = _linked_layer(policy, linked, landlock_only)
    if linked_layer is not None:
        layers.append(linked_layer)
    if creation_layer is not None:
        # The launch fails at step `createguard` if the guard cannot be set up.
        layers.append(creation_layer)
    kept = _kept(plan.mounts)
    if kept:
        # The launch fails at step `guard` if the guard cannot start: here it is running.
        layers.append(applied("view_guard", detail=f"{kept} masks, pins and read-only binds "
                              "kept when the host renames or deletes their paths (inotify), "
                              f"{len(mounts.absent)} of them applied if the host creates "
                              "them (absent at launch)"))
    if landlock_net:
        layers.append(partial(
            "network", "Landlock fallback (linux.sandbox_policy=landlock): the host's network, "
            "TCP connect only to " + (f"port {request.proxy_port}, the proxy's on 127.0.0.1 "
                                      "and the same port of any other host (Landlock's rules "
                                      "name ports, not addresses; accepted: network_ports)"
                                      if connect_ports else "nothing")
            + (f", bind only {bind_ports}, on every address, and listen on an ephemeral port"
               if bind_ports else ", no bind" + (", listen on an ephemeral port of every "
                                                 "address (unix sockets allowed)"
                                                 if unix_sockets else ", no listen"))
            + "; UDP, raw, MPTCP and TCP fast open refused by seccomp; the program shares "
            "the host's network namespace, and /proc/net lists its TCP connections and Unix "
            "socket names (no mount can hide each process's /proc/<pid>/net)"))
    elif net.block:
        layers.append(applied("network", detail="blocked: private network namespace, no proxy"))
    elif net.restricted:
        layers.append(applied(
            "network", detail=f"private network namespace; the only way out is the proxy "
            f"socket on 127.0.0.1:{proxy_port}, served by the daemon"))
    else:
        layers.append(LayerReport(
            name="network", state="off",
            reason="UNRESTRICTED: the profile has no network section (nono's default)"))
    return plan, EnforcementReport(layers=tuple(layers), landlock_abi=abi)
