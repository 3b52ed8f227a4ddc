"""decide(): the verdict on a name, before any lookup. Table tests, no sockets."""

# ruff: noqa: S104 - "0.0.0.0" here is an address under test, nothing binds to it

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonod.proxy import Decision, ProxyPolicy, ProxyRequest, Reason, decide

POLICY = ProxyPolicy(
    hosts=frozenset({"api.github.com", "xn--bcher-kva.example", "github"}),
    suffixes=("googleapis.com",),
    addresses=frozenset({"8.8.8.8", "2606:4700::1111"}),
)


def verdict(host: str, port: int = 443, mode: str = "connect",
            policy: ProxyPolicy = POLICY) -> Decision:
    return decide(ProxyRequest(mode="connect" if mode == "connect" else "http", host=host,
                               port=port), policy)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        # The list: every encoding of a special address is refused.
        ("169.254.169.254", Reason.LINK_LOCAL),
        ("127.0.0.1", Reason.LOOPBACK),
        ("[::1]", Reason.LOOPBACK),
        ("0x7f000001", Reason.LOOPBACK),
        ("2130706433", Reason.LOOPBACK),
        ("[::ffff:127.0.0.1]", Reason.LOOPBACK),
        # ...and more spellings of the same places.
        ("0177.0.0.1", Reason.LOOPBACK),
        ("127.1", Reason.LOOPBACK),
        ("0", Reason.UNSPECIFIED),
        ("0.0.0.0", Reason.UNSPECIFIED),
        ("[::]", Reason.UNSPECIFIED),
        ("0xa9fea9fe", Reason.LINK_LOCAL),
        ("[::ffff:169.254.169.254]", Reason.LINK_LOCAL),
        ("[fe80::1]", Reason.LINK_LOCAL),
        ("[64:ff9b::a9fe:a9fe]", Reason.LINK_LOCAL),
        ("10.0.0.1", Reason.PRIVATE),
        ("192.168.0.1", Reason.PRIVATE),
        ("[fd00::1]", Reason.PRIVATE),
        ("100.64.0.1", Reason.CGNAT),
        ("224.0.0.251", Reason.MULTICAST),
        ("255.255.255.255", Reason.BROADCAST),
        ("240.0.0.1", Reason.RESERVED),
        # Names that always mean this machine or the metadata service.
        ("localhost", Reason.LOOPBACK),
        ("LOCALHOST.", Reason.LOOPBACK),
        ("anything.localhost", Reason.LOOPBACK),
        ("metadata.google.internal", Reason.METADATA),
        ("Metadata.Google.Internal.", Reason.METADATA),
        ("metadata.azure.internal", Reason.METADATA),
        # Not on the allowlist.
        ("evil.com", Reason.NOT_ALLOWED),
        ("1.1.1.1", Reason.NOT_ALLOWED),
        ("api.github.com.evil.com", Reason.NOT_ALLOWED),
        ("evilapi.github.com", Reason.NOT_ALLOWED),
        ("sub.api.github.com", Reason.NOT_ALLOWED),
        ("googleapis.com", Reason.NOT_ALLOWED),  # *.suffix never allows the apex
        ("xgoogleapis.com", Reason.NOT_ALLOWED),
        ("github.evil", Reason.NOT_ALLOWED),
        # Not a host at all.
        ("", Reason.BAD_HOST),
        ("api.github.com\r\nX-Evil: 1", Reason.BAD_HOST),
        ("api..github.com", Reason.BAD_HOST),
        ("api.github.com%00", Reason.BAD_HOST),
        ("::1", Reason.BAD_HOST),  # IPv6 must be bracketed
        ("[::1%lo]", Reason.BAD_HOST),
        ("256.1.1.1", Reason.BAD_HOST),
        ("1.2.3.4.5", Reason.BAD_HOST),
        ("user@api.github.com", Reason.BAD_HOST),
    ],
)
def test_refused(host: str, reason: Reason) -> None:
    decision = verdict(host)
    assert not decision.allowed
    assert decision.reason is reason


@pytest.mark.parametrize(
    ("host", "normal", "reason"),
    [
        ("api.github.com", "api.github.com", Reason.ALLOWED_HOST),
        ("API.GITHUB.COM.", "api.github.com", Reason.ALLOWED_HOST),
        ("api\uff0egithub\uff0ecom", "api.github.com", Reason.ALLOWED_HOST),
        ("bücher.example", "xn--bcher-kva.example", Reason.ALLOWED_HOST),
        ("storage.googleapis.com", "storage.googleapis.com", Reason.ALLOWED_SUFFIX),
        ("a.b.googleapis.com", "a.b.googleapis.com", Reason.ALLOWED_SUFFIX),
        ("8.8.8.8", "8.8.8.8", Reason.ALLOWED_ADDRESS),
        ("0x08080808", "8.8.8.8", Reason.ALLOWED_ADDRESS),
        ("134744072", "8.8.8.8", Reason.ALLOWED_ADDRESS),
        ("[::ffff:8.8.8.8]", "8.8.8.8", Reason.ALLOWED_ADDRESS),
        ("[2606:4700:0::1111]", "[2606:4700::1111]", Reason.ALLOWED_ADDRESS),
    ],
)
def test_allowed(host: str, normal: str, reason: Reason) -> None:
    decision = verdict(host)
    assert decision.allowed
    assert decision.reason is reason
    assert decision.host == normal


def test_a_special_address_is_refused_even_if_listed() -> None:
    # ProxyPolicy refuses to hold one (see test_policy), and decide never trusts a listing.
    assert verdict("127.0.0.1", policy=POLICY).reason is Reason.LOOPBACK


@pytest.mark.parametrize(("port", "reason"), [(22, Reason.PORT_NOT_ALLOWED),
                                              (8443, Reason.PORT_NOT_ALLOWED),
                                              (0, Reason.BAD_PORT), (65536, Reason.BAD_PORT)])
def test_ports(port: int, reason: Reason) -> None:
    assert verdict("api.github.com", port).reason is reason


def test_default_ports_and_open_ports() -> None:
    assert verdict("api.github.com", 443).allowed
    assert verdict("api.github.com", 80, mode="http").allowed
    wider = ProxyPolicy(hosts=frozenset({"api.github.com"}), ports=frozenset({443, 8443}))
    assert verdict("api.github.com", 8443, policy=wider).allowed
    assert not verdict("api.github.com", 80, policy=wider).allowed


def test_block_refuses_everything() -> None:
    blocked = ProxyPolicy(hosts=frozenset({"api.github.com"}), block=True)
    decision = verdict("api.github.com", policy=blocked)
    assert (decision.allowed, decision.reason) == (False, Reason.BLOCKED)


def test_an_empty_policy_allows_nothing() -> None:
    empty = ProxyPolicy()
    for host in ["api.github.com", "8.8.8.8", "a.b"]:
        assert not verdict(host, policy=empty).allowed


@given(st.text(max_size=80))
def test_decide_never_raises_and_only_allows_listed_names(host: str) -> None:
    decision = verdict(host)
    if decision.allowed:
        assert (decision.host in POLICY.hosts
                or decision.host.endswith(".googleapis.com")
                or decision.address in POLICY.addresses)
