"""What one session's proxy lets through, built from the session's NetworkPolicy.

A :class:`ProxyPolicy` is the proxy's whole view of a profile: exact host names, ``*.suffix``
patterns, IP-literal entries, the ports a target may use, and ``block``. It is frozen and checks
its own invariants, so a policy that exists is well-formed: every name is already in the
canonical form :func:`nonod.proxy._addresses.normalize_name` produces, and an empty policy allows
nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

import msgspec

from ..errors import PolicyError
from ..policy import NetworkPolicy
from ..profiles._groups import NetworkCatalog, builtin_network
from ._addresses import (
    HostError,
    canonical_address,
    normalize_name,
    parse_ip_literal,
    special_range,
)

#: Ports a CONNECT or plain-HTTP target may use unless the profile opens more (``open_port``).
DEFAULT_PORTS: Final = (443, 80)


class ProxyPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The allowlist of one session's proxy. Build it with :func:`proxy_policy`.

    ``hosts`` are exact names; ``suffixes`` come from ``*.suffix`` entries and match names
    strictly below the suffix (``a.example.com`` and ``a.b.example.com``, never
    ``example.com``); ``addresses`` are IP-literal entries, all public; ``ports`` are the
    destination ports allowed; ``block`` refuses everything. ``ask``: a name or public address
    that is merely not listed (reason ``not_allowed``) is put to the session's approval asker
    instead of being refused at once (metadata, loopback and private targets never are).
    """

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    addresses: frozenset[str] = frozenset()
    ports: frozenset[int] = frozenset(DEFAULT_PORTS)
    block: bool = False
    ask: bool = False

    def with_target(self, host: str, address: str | None) -> ProxyPolicy:
        """This policy with one more exact name (or public address) allowed: an approval
        ``for the session``. ``host`` must be the normalised name :func:`decide` produced."""
        if address is not None:
            return msgspec.structs.replace(self, addresses=self.addresses | {address})
        return msgspec.structs.replace(self, hosts=self.hosts | {host})

    def __post_init__(self) -> None:
        for port in self.ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is out of range (1-65535)")
        for name in (*self.hosts, *self.suffixes):
            try:
                canonical = normalize_name(name)
            except HostError as exc:
                raise ValueError(f"`{name}` is not a host name: {exc}") from None
            if canonical != name or parse_ip_literal(name) is not None:
                raise ValueError(f"`{name}` is not a canonical host name")
        for suffix in self.suffixes:
            if "." not in suffix:
                raise ValueError(f"`*.{suffix}` would allow a whole top-level domain")
        for text in self.addresses:
            address = ipaddress.ip_address(text)
            if (str(canonical_address(address)) != text
                    or special_range(address) is not None):
                raise ValueError(f"`{text}` is not a canonical public address")


def proxy_policy(
    network: NetworkPolicy,
    *,
    catalog: NetworkCatalog | None = None,
    ports: Iterable[int] = DEFAULT_PORTS,
) -> ProxyPolicy:
    """The proxy's allowlist for a session's resolved network policy.

    Entries of ``allow_domain`` are exact names, ``*.suffix`` patterns, IP literals (public
    only) or names of network groups (``github``, ``llm_apis``...), which expand to their
    hosts; ``network_profile`` expands to the hosts of its groups. ``ports`` (default 443 and
    80) plus the profile's ``open_port`` entries are the destination ports allowed.

    Raises PolicyError for a network policy that has no proxy (unrestricted network), one
    that asks for an upstream proxy (not implemented: connecting directly instead would be a
    silent change), an unknown network profile, or an entry the proxy could never honour.
    """
    if not network.restricted:
        raise PolicyError(
            "the network is unrestricted: a session without network restriction has no proxy",
            hint="allow domains, choose a network profile, or set network.block",
        )
    if network.block:
        return ProxyPolicy(block=True, ports=frozenset())
    if network.upstream_proxy is not None:
        raise PolicyError(
            "network.upstream_proxy: chaining through an upstream proxy is not implemented; "
            "the session would otherwise connect directly, which the profile did not ask for",
            hint="remove upstream_proxy, or run this profile with nono until nonod supports it",
        )
    catalog = catalog if catalog is not None else builtin_network()
    entries = list(network.allow_domain)
    if network.network_profile is not None:
        if network.network_profile not in catalog.profiles:
            raise PolicyError(f"unknown network profile `{network.network_profile}`",
                              hint="see docs/network.md for the built-in network profiles")
        entries += catalog.hosts(network.network_profile)
    hosts: set[str] = set()
    suffixes: list[str] = []
    addresses: set[str] = set()
    for entry in _expand_groups(entries, catalog):
        _add_entry(entry, hosts, suffixes, addresses)
    allowed_ports = frozenset((*ports, *network.open_ports))
    return ProxyPolicy(
        hosts=frozenset(hosts),
        suffixes=tuple(suffixes),
        addresses=frozenset(addresses),
        ports=allowed_ports,
        ask=network.approval is not None,
    )


def _expand_groups(entries: Iterable[str], catalog: NetworkCatalog) -> Iterable[str]:
    for entry in entries:
        group = catalog.groups.get(entry.lower()) if "." not in entry else None
        if group is not None:
            yield from group.hosts
        else:
            yield entry


def _add_entry(entry: str, hosts: set[str], suffixes: list[str], addresses: set[str]) -> None:
    raw = entry.strip()
    try:
        if raw.startswith("*."):
            suffix = normalize_name(raw[2:])
            if "." not in suffix or parse_ip_literal(suffix) is not None:
                raise PolicyError(f"allow_domain entry `{entry}` would allow a whole "
                                  "top-level domain or address range")
            if suffix not in suffixes:
                suffixes.append(suffix)
            return
        address = parse_ip_literal(raw)
        if address is None:
            hosts.add(normalize_name(raw))
            return
    except HostError as exc:
        raise PolicyError(f"allow_domain entry `{entry}` is not a host name: {exc}") from None
    kind = special_range(address)
    if kind is not None:
        raise PolicyError(
            f"allow_domain entry `{entry}` is a {kind.value.replace('_', '-')} address, which "
            "the proxy never connects to",
            hint="to reach a local service, pin a host name to it in the daemon configuration "
            "([network] resolve)",
        )
    addresses.add(str(address))
