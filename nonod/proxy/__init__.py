"""The per-session filtering proxy: CONNECT tunnels and plain-HTTP forwarding to the hosts a
session's profile allows, and nothing else.

Public face::

    policy = proxy_policy(resolved.network)                  # the allowlist, groups expanded
    resolver = Resolver(pins={"api.github.com": "127.0.0.1:8443"})
    server = await nursery.start(functools.partial(
        serve_proxy, listener, policy=policy, resolver=resolver, events=on_event,
        proxy_token=token))
    env = child_environment(port, token)                     # HTTP_PROXY and friends

Credential routes (the reverse proxy, ``docs/credentials.md``)::

    table = RouteTable(loaded_routes, token=phantom, extra_ca_file=config_ca)
    await nursery.start(functools.partial(serve_proxy, listener, ..., routes=table))

``decide(ProxyRequest(...), policy)`` is the pure decision on a name, made before any lookup.
Design, limits and reason codes are described in ``docs/network.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._allowlist import DEFAULT_PORTS as DEFAULT_PORTS
    from ._allowlist import ProxyPolicy as ProxyPolicy
    from ._allowlist import proxy_policy as proxy_policy
    from ._ask import ApprovalAsk as ApprovalAsk
    from ._ask import Asker as Asker
    from ._ask import Verdict as Verdict
    from ._buffers import bound_buffers as bound_buffers
    from ._decide import Decision as Decision
    from ._decide import ProxyRequest as ProxyRequest
    from ._decide import Reason as Reason
    from ._decide import decide as decide
    from ._events import CredentialInjected as CredentialInjected
    from ._events import NetworkEvent as NetworkEvent
    from ._events import ProxyEvent as ProxyEvent
    from ._events import log_network_event as log_network_event
    from ._http import child_environment as child_environment
    from ._resolve import PinError as PinError
    from ._resolve import Resolved as Resolved
    from ._resolve import ResolveError as ResolveError
    from ._resolve import Resolver as Resolver
    from ._reverse import RouteConfigError as RouteConfigError
    from ._reverse import RouteTable as RouteTable
    from ._server import ProxyLimits as ProxyLimits
    from ._server import ProxyServer as ProxyServer
    from ._server import ProxyStatistics as ProxyStatistics
    from ._server import serve_proxy as serve_proxy
    from ._share import UidShare as UidShare
    from ._share import uid_share_cap as uid_share_cap
else:
    __getattr__, __dir__ = exports(__name__, {
        "_allowlist": ("DEFAULT_PORTS", "ProxyPolicy", "proxy_policy"),
        "_ask": ("ApprovalAsk", "Asker", "Verdict"),
        "_buffers": ("bound_buffers",),
        "_decide": ("Decision", "ProxyRequest", "Reason", "decide"),
        "_events": ("CredentialInjected", "NetworkEvent", "ProxyEvent", "log_network_event"),
        "_http": ("child_environment",),
        "_resolve": ("PinError", "Resolved", "ResolveError", "Resolver"),
        "_reverse": ("RouteConfigError", "RouteTable"),
        "_server": ("ProxyLimits", "ProxyServer", "ProxyStatistics", "serve_proxy"),
        "_share": ("UidShare", "uid_share_cap"),
    })
