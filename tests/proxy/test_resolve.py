"""Resolver: pins, the special-range refusal, timeouts. The lookup function is a fake DNS
(an in-memory table with the getaddrinfo signature), except where the real one is asked for
names the system always knows."""

# ruff: noqa: S104 - "0.0.0.0" here is an address under test, nothing binds to it

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import trio

from nonod.proxy import PinError, Reason, ResolveError, Resolver


def fake_dns(table: dict[str, list[str]]) -> Any:
    def getaddrinfo(host: str, port: int, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> Sequence[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out: list[tuple[Any, ...]] = []
        for address in table[host]:
            if ":" in address:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return out

    return getaddrinfo


async def test_public_answers_are_returned_in_order() -> None:
    resolver = Resolver(getaddrinfo=fake_dns({"api.example": ["140.82.112.6",
                                                               "2606:4700::1111",
                                                               "140.82.112.6"]}))
    resolved = await resolver.resolve("api.example", 443)
    assert resolved.addresses == (("140.82.112.6", 443), ("2606:4700::1111", 443))
    assert not resolved.pinned


@pytest.mark.parametrize(
    ("answer", "reason"),
    [(["127.0.0.1"], Reason.LOOPBACK), (["169.254.169.254"], Reason.LINK_LOCAL),
     (["::1"], Reason.LOOPBACK), (["::ffff:127.0.0.1"], Reason.LOOPBACK),
     (["10.1.2.3"], Reason.PRIVATE), (["fd12::1"], Reason.PRIVATE),
     (["100.64.1.1"], Reason.CGNAT), (["0.0.0.0"], Reason.UNSPECIFIED),
     (["224.0.0.1"], Reason.MULTICAST), (["fe80::1"], Reason.LINK_LOCAL),
     # One bad address poisons the whole answer (no fallback to the bad one, no mixing).
     (["140.82.112.6", "127.0.0.1"], Reason.LOOPBACK)],
)
async def test_special_answers_are_refused(answer: list[str], reason: Reason) -> None:
    resolver = Resolver(getaddrinfo=fake_dns({"rebind.example": answer}))
    with pytest.raises(ResolveError) as info:
        await resolver.resolve("rebind.example", 443)
    assert info.value.refused
    assert info.value.reason is reason


async def test_private_answers_can_be_allowed_but_never_loopback() -> None:
    dns = fake_dns({"intranet.example": ["10.1.2.3"], "lo.example": ["127.0.0.1"]})
    resolver = Resolver(allow_private=True, getaddrinfo=dns)
    assert (await resolver.resolve("intranet.example", 80)).addresses == (("10.1.2.3", 80),)
    with pytest.raises(ResolveError, match="loopback"):
        await resolver.resolve("lo.example", 80)


async def test_pins_skip_the_lookup_and_the_refusal() -> None:
    asked: list[str] = []

    def never(*args: Any) -> list[Any]:
        asked.append(args[0])
        raise AssertionError("a pinned name was looked up")

    resolver = Resolver(pins={"API.GitHub.com.": "127.0.0.1:8443", "v6.example": "[::1]",
                              "bare.example": "10.0.0.7"}, getaddrinfo=never)
    assert resolver.pinned("api.github.com")
    pinned = await resolver.resolve("api.github.com", 443)
    assert pinned.addresses == (("127.0.0.1", 8443),) and pinned.pinned
    assert (await resolver.resolve("v6.example", 443)).addresses == (("::1", 443),)
    assert (await resolver.resolve("bare.example", 80)).addresses == (("10.0.0.7", 80),)
    assert asked == []


@pytest.mark.parametrize(
    "pins",
    [{"api.github.com": "localhost:8443"}, {"api.github.com": "127.0.0.1:0"},
     {"api.github.com": "127.0.0.1:99999"}, {"api.github.com": "[::1"},
     {"127.0.0.1": "127.0.0.1"},
     {"bad host": "127.0.0.1"}, {"api.github.com": "2130706433"}],
)
def test_bad_pins(pins: dict[str, str]) -> None:
    with pytest.raises(PinError):
        Resolver(pins=pins)


async def test_lookup_failure_is_not_a_refusal() -> None:
    resolver = Resolver(getaddrinfo=fake_dns({}))
    with pytest.raises(ResolveError) as info:
        await resolver.resolve("nxdomain.example", 443)
    assert not info.value.refused
    assert info.value.reason is Reason.RESOLVE_FAILED


async def test_the_query_is_the_normalised_name_for_tcp() -> None:
    seen: list[tuple[Any, ...]] = []

    def record(*args: Any) -> list[Any]:
        seen.append(args)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("140.82.112.6", 443))]

    await Resolver(getaddrinfo=record).resolve("api.example", 443)
    assert [args[:5] for args in seen] == [
        ("api.example", 443, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP)]


async def test_lookup_timeout(autojump_clock: trio.abc.Clock) -> None:
    release = threading.Event()

    def hang(*args: Any) -> list[Any]:
        release.wait(30)
        return []

    resolver = Resolver(timeout=5.0, getaddrinfo=hang)
    start = trio.current_time()
    try:
        with pytest.raises(ResolveError) as info:
            await resolver.resolve("slow.example", 443)
    finally:
        release.set()
    assert info.value.reason is Reason.RESOLVE_TIMEOUT
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_literals_are_checked_not_looked_up() -> None:
    resolver = Resolver(getaddrinfo=fake_dns({}))
    assert (await resolver.resolve("8.8.8.8", 443)).addresses == (("8.8.8.8", 443),)
    assert (await resolver.resolve("[2606:4700::1111]", 443)).addresses == (
        ("2606:4700::1111", 443),)
    with pytest.raises(ResolveError, match="loopback"):
        await resolver.resolve("127.0.0.1", 443)


async def test_the_system_resolver_refuses_loopback_names() -> None:
    # "localhost" is in every /etc/hosts; decide() refuses it by name before this point,
    # and the Resolver refuses it again by address.
    with pytest.raises(ResolveError) as info:
        await Resolver().resolve("localhost", 443)
    assert info.value.refused and info.value.reason is Reason.LOOPBACK
