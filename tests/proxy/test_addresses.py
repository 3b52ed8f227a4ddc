"""Host normalisation and special address ranges (pure functions)."""

# ruff: noqa: S104 - "0.0.0.0" here is an address under test, nothing binds to it

from __future__ import annotations

import ipaddress

import pytest

from nonod.proxy._addresses import (
    HostError,
    Special,
    normalize_name,
    parse_ip_literal,
    parse_ipv4,
    special_range,
)


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("169.254.169.254", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("[::FFFF:7f00:1]", "127.0.0.1"),
        ("[0:0:0:0:0:ffff:169.254.169.254]", "169.254.169.254"),
        ("[fe80::1]", "fe80::1"),
        ("[2606:4700::1111]", "2606:4700::1111"),
    ],
)
def test_every_spelling_of_an_address_is_normalised(spelling: str, address: str) -> None:
    assert parse_ip_literal(spelling) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "spelling",
    ["256.0.0.1", "1.2.3.4.5", "08.0.0.1", "1.2.3.256", "4294967296", "1..2",
     "[::1", "[::1%eth0]", "[fe80::1%25lo]", "[127.0.0.1]", "[]", "1.2.3.0x100",
     "example.0x", "a.1"],
)
def test_malformed_literals_are_refused(spelling: str) -> None:
    with pytest.raises(HostError):
        parse_ip_literal(spelling)


@pytest.mark.parametrize("name", ["example.com", "a1.example", "0xdead.example.com", "1e100",
                                  "0x1g"])
def test_names_are_not_literals(name: str) -> None:
    assert parse_ip_literal(name) is None


def test_parse_ipv4_matches_inet_aton_for_valid_forms() -> None:
    import socket

    for text in ["1", "1.2", "1.2.3", "1.2.3.4", "0x10.0x20.0x30.0x40", "010.020.030.040",
                 "255.255.65535", "255.16777215", "4294967295"]:
        assert parse_ipv4(text).packed == socket.inet_aton(text)


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("API.GitHub.com", "api.github.com"),
        ("api.github.com.", "api.github.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("api\uff0egithub\uff0ecom", "api.github.com"),  # full-width dots (UTS 46)
        ("a_b.example", "a_b.example"),
    ],
)
def test_names_are_normalised(host: str, normal: str) -> None:
    assert normalize_name(host) == normal


@pytest.mark.parametrize(
    "host",
    ["", ".", "a..b", ".example.com", "exa mple.com", "a\r\nb", "a\x00b", "a/b", "a@b",
     "a%2eb", "-a.example", "a-.example", "xn--zz.example", "a" * 64 + ".com",
     ".".join(["a" * 60] * 5), "example.com..", "a:b"],
)
def test_bad_names_are_refused(host: str) -> None:
    with pytest.raises(HostError):
        normalize_name(host)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", Special.LOOPBACK),
        ("127.255.255.254", Special.LOOPBACK),
        ("169.254.169.254", Special.LINK_LOCAL),
        ("0.0.0.0", Special.UNSPECIFIED),
        ("0.1.2.3", Special.RESERVED),
        ("10.1.2.3", Special.PRIVATE),
        ("172.16.0.1", Special.PRIVATE),
        ("172.31.255.255", Special.PRIVATE),
        ("192.168.1.1", Special.PRIVATE),
        ("100.64.0.1", Special.CGNAT),
        ("100.127.255.255", Special.CGNAT),
        ("224.0.0.1", Special.MULTICAST),
        ("239.255.255.250", Special.MULTICAST),
        ("255.255.255.255", Special.BROADCAST),
        ("240.0.0.1", Special.RESERVED),
        ("192.0.2.1", Special.RESERVED),
        ("198.18.0.1", Special.RESERVED),
        ("::", Special.UNSPECIFIED),
        ("::1", Special.LOOPBACK),
        ("fe80::1", Special.LINK_LOCAL),
        ("fd00::1", Special.PRIVATE),
        ("fc00::1", Special.PRIVATE),
        ("ff02::1", Special.MULTICAST),
        ("::ffff:127.0.0.1", Special.LOOPBACK),
        ("::ffff:169.254.169.254", Special.LINK_LOCAL),
        ("::ffff:10.0.0.1", Special.PRIVATE),
        ("64:ff9b::7f00:1", Special.LOOPBACK),
        ("64:ff9b::a9fe:a9fe", Special.LINK_LOCAL),
        ("2002:7f00:1::", Special.LOOPBACK),
        ("2002:a9fe:a9fe::1", Special.LINK_LOCAL),
        ("::127.0.0.1", Special.RESERVED),
        ("2001:db8::1", Special.RESERVED),
        ("2001::1", Special.RESERVED),
        ("fec0::1", Special.RESERVED),
        ("100::1", Special.RESERVED),
    ],
)
def test_special_ranges(address: str, kind: Special) -> None:
    assert special_range(ipaddress.ip_address(address)) is kind


@pytest.mark.parametrize(
    "address",
    ["1.1.1.1", "8.8.8.8", "140.82.112.6", "172.15.255.255", "172.32.0.0", "100.63.255.255",
     "100.128.0.0", "2606:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8",
     "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses(address: str) -> None:
    assert special_range(ipaddress.ip_address(address)) is None
