"""The summary a dry run leads with (``nonoctl launch --dry-run``): filesystem grants, the
network mode and why, credential routes. Computed from the resolved policy, in the daemon."""

from __future__ import annotations

from .policy import NetworkPolicy, ResolvedPolicy, ToolPolicy
from .protocol import DryRunSummary, NetworkMode

_UNRESTRICTED_REASON = (
    "the program reaches any host directly: neither the profile nor the command line sets "
    "network.block, allow_domain, a network_profile, credentials or an upstream_proxy (nono's "
    "default); --block-net or --allow-domain HOST restricts it"
)


def summarize(policy: ResolvedPolicy) -> DryRunSummary:
    chosen = tuple((g.path, g.access) for g in policy.grants
                   if not g.source.startswith("group:") and g.source != "base")
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
    said = [f"hosts {hosts}" if hosts else "no network" if net.block else "",
            f"routes {routes}" if routes else "",
            f"intercepts TLS of {intercepts}" if intercepts else "",
            "argv rules" if tool.invocation else ""]
    return f"{head}: " + "; ".join(part for part in said if part)


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
