"""The summary a dry run leads with (``nonoctl launch --dry-run``): filesystem grants, the
network mode and why, credential routes. Computed from the resolved policy, in the daemon.

A profile may come from the repository the program works on, so the summary says what such a
profile can hand out or take away beyond its paths and hosts: which secret each route sends to
which upstream, the real secrets and host variables put into the program's environment, and
every protection the profile turns off (``weakened``). Writable and broad grants lead the
paths, so the few lines a person reads are not the ones a profile chose to put first."""

from __future__ import annotations

from urllib.parse import urlsplit

from .policy import NetworkPolicy, ResolvedPolicy, ToolPolicy
from .protocol import DryRunSummary, NetworkMode

_UNRESTRICTED_REASON = (
    "the program reaches any host directly: neither the profile nor the command line sets "
    "network.block, allow_domain, a network_profile, credentials or an upstream_proxy (nono's "
    "default); --block-net or --allow-domain HOST restricts it"
)


def summarize(policy: ResolvedPolicy) -> DryRunSummary:
    asked = [g for g in policy.grants if not g.source.startswith("group:") and g.source != "base"]
    # Writable first, then the broadest (fewest path components): what matters is shown
    # within the first lines whatever order the profile wrote its grants in.
    asked.sort(key=lambda g: (not g.access.writes, g.path.count("/"), g.path))
    chosen = tuple((g.path, g.access) for g in asked)
    net = policy.network
    return DryRunSummary(
        grants=len(policy.grants),
        denials=len(policy.denials),
        main_paths=chosen,
        group_grants=len(policy.grants) - len(chosen),
        network=_mode(net),
        network_reason=_reason(net),
        hosts=net.allow_domain if net.restricted and not net.block else (),
        listen_ports=net.listen_ports,
        credentials=_routes(net),
        routes=_route_lines(net),
        weakened=weakened(policy),
        tools=tuple(_tool(tool) for tool in policy.tools),
        intercepts=_intercepts(net),
    )


def _intercepts(net: NetworkPolicy) -> tuple[str, ...]:
    # Imported here: the daemon loads this module at start, the credential routes (and what
    # they import) only for a dry run or a session that uses them.
    from .credentials import policy_intercepts

    return policy_intercepts(net)


def _routes(net: NetworkPolicy) -> tuple[str, ...]:
    """The route names, each once (a custom credential may also be listed by name)."""
    return tuple(dict.fromkeys((*net.credentials, *(n for n, _ in net.custom_credentials))))


def _route_lines(net: NetworkPolicy) -> tuple[str, ...]:
    """``github: env://GITHUB_TOKEN -> https://api.github.com`` for each route a session would
    use (raises the launch's own CredentialError for a route it would refuse), then each
    ``env_credentials`` variable and the reference it holds the real value of."""
    lines: list[str] = []
    if net.restricted and not net.block:
        from .credentials import session_routes  # as _intercepts: only when asked

        lines += [f"{r.name}: {r.credential_key} -> {r.upstream}"
                  + (" (built-in)" if r.origin == "builtin" else "")
                  for r in session_routes(net) if not r.filter_only]
    lines += [f"{var}: {ref} (its real value, in the program's environment)"
              for ref, var in net.env_credentials]
    return tuple(lines)


def weakened(policy: ResolvedPolicy) -> tuple[str, ...]:
    """Every protection the profile (or the command line) turned off, one line each: the
    dry run's summary, and a launched session's record, audit and ``nonoctl`` note."""
    said = [f"lifted: {note.path}, {note.message}" for note in policy.notes
            if note.kind == "bypass" and "lifted by" in note.message]
    for what, values in (
            ("runs without", policy.allow_degraded),
            ("writable although the host runs it later", policy.writable_persistence),
            ("host cache written in place", policy.shared_caches),
            ("variables of your environment passed in", policy.env.allow_vars)):
        if values:
            said.append(f"{what}: {', '.join(values)}")
    if policy.allow_unix_sockets:
        said.append("may create Unix sockets (nonod.unix_sockets): any listening one in its "
                    "view is reachable")
    for what, value in (("signals", policy.signal_mode),
                        ("process information", policy.process_info_mode)):
        if value == "allow_all":
            said.append(f"{what}: every process of the user (allow_all)")
    if policy.ipc_mode == "full":
        said.append("ipc: the host's System V and POSIX IPC (ipc_mode full)")
    if not policy.max_processes:
        said.append("processes: no cap (nonod.max_processes 0): the session may start as "
                    "many processes and threads as the user's own limit allows")
    if policy.allow_root:
        said.append("may run as root when a root caller asks and the daemon allows it "
                     "(nonod.allow_root)")
    if policy.network_isolation == "landlock":
        said.append("the host's network and namespaces, held by Landlock alone "
                    "(linux.sandbox_policy landlock)")
    net = policy.network
    if net.listen_ports:
        ports = ", ".join(str(port) for port in net.listen_ports)
        said.append(
            f"the program binds the host's ports {ports} itself, on every address "
            "(listen_port, Landlock)" if policy.network_isolation == "landlock" else
            f"the host's ports {ports} forwarded to the program (listen_port): whoever "
            "reaches them on the daemon's listen address reaches it")
    if net.open_ports and net.restricted and not net.block:
        said.append("allowed hosts reached on ports beyond 443 and 80: "
                    + ", ".join(str(port) for port in net.open_ports))
    for name, custom in net.custom_credentials:
        if custom.tls_ca and name in net.credentials and net.restricted and not net.block:
            host = urlsplit(custom.upstream).hostname or custom.upstream
            said.append(f"{host} trusted through the profile's CA {custom.tls_ca} (route "
                        f"{name}: whoever holds that CA's key may read what it sends)")
    if net.approval is not None and net.restricted and not net.block:
        hooks = [f"{b.name} {b.url}" for b in net.approval.backends if b.type == "webhook"]
        said.append(f"hosts outside the allow list: asked of `{net.approval.backend}`"
                    + (f" (webhooks: {', '.join(hooks)})" if hooks else ""))
    # Its tools' (command_policies): their sessions start at the agent's calls, where no one
    # reads their notes; what they run with is said at the agent's launch (redteam33).
    for tool in policy.tools:
        if tool.rewritable and tool.policy is not None:
            said.append(f"tool {tool.name}: the session may rewrite its executable "
                        f"{tool.executable} (through {tool.rewritable}; "
                        "allow_writable_executable), which runs with the tool's own grants "
                        "and credentials")
        if tool.policy is not None:
            said += [f"tool {tool.name}: {line}" for line in weakened(tool.policy)]
    return tuple(said)


def _tool(tool: ToolPolicy) -> str:
    """``gh (/usr/bin/gh): hosts api.github.com; routes github`` (docs/tool-sandboxes.md)."""
    head = f"{tool.name} ({tool.executable})"
    child = tool.policy
    if child is None:
        return f"{head}: refused to the session (from.session: deny)"
    net = child.network
    hosts = ", ".join(net.allow_domain) if net.restricted and not net.block else ""
    routes = ", ".join(_routes(net))
    intercepts = ", ".join(_intercepts(net))
    # The files it was given by the profile (the agent reads and writes them through it):
    # not its executable, not what every session gets from the groups.
    asked = [g for g in child.grants if g.source == "profile" and g.path != tool.executable]
    writes = [g.path for g in asked if g.access.writes]
    reads = [g.path for g in asked if not g.access.writes]
    said = [f"hosts {hosts}" if hosts else "no network" if net.block else "",
            f"routes {routes}" if routes else "",
            f"intercepts TLS of {intercepts}" if intercepts else "",
            "argv rules" if tool.invocation else "",
            f"writes {_paths(writes)}" if writes else "",
            f"reads {_paths(reads)}" if reads else ""]
    return f"{head}: " + "; ".join(part for part in said if part)


def _paths(paths: list[str], most: int = 6) -> str:
    """``a, b, c`` (``... and N more`` past ``most``)."""
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _mode(net: NetworkPolicy) -> NetworkMode:
    if not net.restricted:
        return "unrestricted"
    return "blocked" if net.block else "allowlist"


def _reason(net: NetworkPolicy) -> str:
    if not net.restricted:
        return _UNRESTRICTED_REASON
    if net.block:
        return "network.block or --block-net: no network at all"
    count = len(net.allow_domain)
    reason = (f"only {count} allowed host{'s' if count != 1 else ''}, through nonod's proxy"
              if count else "an empty allow list: the proxy allows no host")
    if net.network_profile:
        reason += f" (network profile `{net.network_profile}` included)"
    if net.upstream_proxy:
        reason += f"; allowed traffic goes on through {net.upstream_proxy}"
    return reason
