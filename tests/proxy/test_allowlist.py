"""proxy_policy(): from a session's NetworkPolicy to the proxy's allowlist."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonod.errors import PolicyError
from nonod.policy import NetworkPolicy
from nonod.profiles._groups import builtin_network
from nonod.proxy import DEFAULT_PORTS, ProxyPolicy, ProxyRequest, decide, proxy_policy


def net(**kwargs: object) -> NetworkPolicy:
    return NetworkPolicy(restricted=True, **kwargs)  # type: ignore[arg-type]


def test_gitbot_hosts_exactly() -> None:
    policy = proxy_policy(net(allow_domain=("api.github.com",
                                            "generativelanguage.googleapis.com", "smee.io")))
    assert policy.hosts == {"api.github.com", "generativelanguage.googleapis.com", "smee.io"}
    assert policy.suffixes == ()
    assert policy.ports == frozenset(DEFAULT_PORTS)
    for host in ["github.com", "googleapis.com", "evil.com", "x.smee.io"]:
        assert not decide(ProxyRequest(mode="connect", host=host, port=443), policy).allowed


def test_suffix_entries_allow_subdomains_only() -> None:
    policy = proxy_policy(net(allow_domain=("*.Example.COM",)))
    assert policy.suffixes == ("example.com",)
    assert decide(ProxyRequest(mode="connect", host="a.example.com", port=443), policy).allowed
    assert not decide(ProxyRequest(mode="connect", host="example.com", port=443),
                      policy).allowed


def test_group_names_expand() -> None:
    catalog = builtin_network()
    policy = proxy_policy(net(allow_domain=("github", "google_cloud", "smee.io")))
    assert set(catalog.groups["github"].hosts) <= policy.hosts
    assert "googleapis.com" in policy.suffixes
    assert "smee.io" in policy.hosts
    assert "github" not in policy.hosts


def test_network_profile_expands() -> None:
    catalog = builtin_network()
    policy = proxy_policy(net(network_profile="developer"))
    expected = {h for h in catalog.hosts("developer") if not h.startswith("*.")}
    assert policy.hosts == expected
    assert "api.anthropic.com" in policy.hosts


def test_unknown_network_profile() -> None:
    with pytest.raises(PolicyError, match="unknown network profile `nope`"):
        proxy_policy(net(network_profile="nope"))


def test_open_ports_add_to_the_defaults() -> None:
    policy = proxy_policy(net(allow_domain=("a.example",), open_ports=(8443, 3000)))
    assert policy.ports == {80, 443, 8443, 3000}
    assert proxy_policy(net(allow_domain=("a.example",)), ports=(443,)).ports == {443}


def test_block() -> None:
    policy = proxy_policy(NetworkPolicy(restricted=True, block=True))
    assert policy.block
    assert not decide(ProxyRequest(mode="connect", host="a.example", port=443),
                      policy).allowed


def test_unrestricted_has_no_proxy_policy() -> None:
    with pytest.raises(PolicyError, match="unrestricted"):
        proxy_policy(NetworkPolicy())


def test_empty_allowlist_allows_nothing() -> None:
    policy = proxy_policy(net())
    assert policy.hosts == frozenset() and policy.suffixes == ()
    assert not decide(ProxyRequest(mode="connect", host="a.example", port=443),
                      policy).allowed


@pytest.mark.parametrize("entry", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "0x7f000001",
                                   "[::1]"])
def test_special_address_entries_are_refused(entry: str) -> None:
    with pytest.raises(PolicyError, match="never connects to"):
        proxy_policy(net(allow_domain=(entry,)))


def test_public_address_entries() -> None:
    policy = proxy_policy(net(allow_domain=("8.8.8.8", "[2606:4700::1111]")))
    assert policy.addresses == {"8.8.8.8", "2606:4700::1111"}


@pytest.mark.parametrize("entry", ["*.com", "a b.example", "*.1.2.3.4"])
def test_bad_entries(entry: str) -> None:
    with pytest.raises(PolicyError):
        proxy_policy(net(allow_domain=(entry,)))


@pytest.mark.parametrize(
    "kwargs",
    [{"hosts": frozenset({"API.example"})}, {"hosts": frozenset({"127.0.0.1"})},
     {"suffixes": ("com",)}, {"addresses": frozenset({"10.0.0.1"})},
     {"addresses": frozenset({"::ffff:8.8.8.8"})}, {"addresses": frozenset({"::ffff:808:808"})},
     {"ports": frozenset({0})}],
)
def test_invalid_policies_cannot_exist(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ProxyPolicy(**kwargs)  # type: ignore[arg-type]


def test_upstream_proxy_is_refused_not_ignored() -> None:
    with pytest.raises(PolicyError, match="upstream_proxy"):
        proxy_policy(net(allow_domain=("a.example",), upstream_proxy="squid.corp:3128"))


def test_the_seed_gitbot_profile_allows_exactly_its_three_hosts(tmp_path: Path) -> None:
    from nonod.profiles import ResolveContext, load_profile, resolve
    from nonod.proxy import ProxyRequest, decide, proxy_policy

    profile = load_profile("gitbot", user_dir=tmp_path / "none")
    resolved = resolve(profile, ResolveContext.for_user(home=str(tmp_path), workdir=str(tmp_path),
                                                        uid=0))
    policy = proxy_policy(resolved.network)
    for host in ("api.github.com", "generativelanguage.googleapis.com", "smee.io"):
        assert decide(ProxyRequest(mode="connect", host=host, port=443), policy).allowed, host
    for host in ("github.com", "evil.com", "api.github.com.evil.com", "gist.github.com",
                 "googleapis.com", "169.254.169.254", "localhost"):
        assert not decide(ProxyRequest(mode="connect", host=host, port=443), policy).allowed, host
