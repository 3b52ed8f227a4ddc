"""Adversarial review of the pump thread's fresh CONNECT (branch `latency`): heads a hostile
program could send, each sent twice in a row (the second time the fresh path may answer from
its kept plan), must get the same answers, events and counters as trio's path; and the
connection cap holds for tunnels the pump thread serves."""

from __future__ import annotations

import base64
import socket
import struct

import pytest
import trio

from nonod.proxy import ProxyLimits, ProxyPolicy
from tests.proxy.conftest import TOKEN, Proxy, connect_head, read_all, read_head
from tests.proxy.test_fresh import POLICY, StartProxy, closed_port, comparable, exchange

GOOD = "Proxy-Authorization: Basic " + base64.b64encode(f"nono:{TOKEN}".encode()).decode()
BAD = "Proxy-Authorization: Basic " + base64.b64encode(b"nono:n0pe").decode()


def head(first: str, *lines: str, end: str = "\r\n") -> bytes:
    return (end.join((first, *lines)) + end + end).encode("latin-1")


HOSTILE = {
    "good then bad token": head("CONNECT api.github.com:443 HTTP/1.1", "Host: x", GOOD, BAD),
    "bad then good token": head("CONNECT api.github.com:443 HTTP/1.1", "Host: x", BAD, GOOD),
    "bearer token": head("CONNECT api.github.com:443 HTTP/1.1",
                         f"Proxy-Authorization: Bearer {TOKEN}"),
    "token in lower case scheme": head("CONNECT api.github.com:443 HTTP/1.1",
                                       GOOD.replace("Basic", "basic")),
    "lower-case method": head("connect api.github.com:443 HTTP/1.1", GOOD),
    "HTTP/1.0": head("CONNECT api.github.com:443 HTTP/1.0", GOOD),
    "no version": head("CONNECT api.github.com:443", GOOD),
    "host in upper case": head("CONNECT API.GITHUB.COM:443 HTTP/1.1", GOOD),
    "host with a trailing dot": head("CONNECT api.github.com.:443 HTTP/1.1", GOOD),
    "userinfo": head("CONNECT nono@api.github.com:443 HTTP/1.1", GOOD),
    "absolute form": head("CONNECT https://api.github.com:443/ HTTP/1.1", GOOD),
    "no port": head("CONNECT api.github.com HTTP/1.1", GOOD),
    "port with a sign": head("CONNECT api.github.com:+443 HTTP/1.1", GOOD),
    "port with leading zeros": head("CONNECT api.github.com:0443 HTTP/1.1", GOOD),
    "port out of range": head("CONNECT api.github.com:65979 HTTP/1.1", GOOD),
    "two spaces": head("CONNECT  api.github.com:443 HTTP/1.1", GOOD),
    "bare LF": head("CONNECT api.github.com:443 HTTP/1.1", GOOD, end="\n"),
    "space before colon": head("CONNECT api.github.com:443 HTTP/1.1",
                               GOOD.replace(":", " :", 1)),
    "folded header": head("CONNECT api.github.com:443 HTTP/1.1", "X-A: 1", " folded", GOOD),
    "NUL in a header": head("CONNECT api.github.com:443 HTTP/1.1", "X-A: a\0b", GOOD),
    "chunked": head("CONNECT api.github.com:443 HTTP/1.1", GOOD, "Transfer-Encoding: chunked"),
    "empty body length": head("CONNECT api.github.com:443 HTTP/1.1", GOOD, "Content-Length: 0"),
    "two lengths": head("CONNECT api.github.com:443 HTTP/1.1", GOOD, "Content-Length: 0",
                        "Content-Length: 0"),
    "too many headers": head("CONNECT api.github.com:443 HTTP/1.1", GOOD,
                             *(f"X-{i}: 1" for i in range(120))),
    "head too large": head("CONNECT api.github.com:443 HTTP/1.1", GOOD, "X-Big: " + "a" * 70000),
    "private literal": head("CONNECT 10.1.2.3:443 HTTP/1.1", GOOD),
    "IPv6 loopback": head("CONNECT [::1]:443 HTTP/1.1", GOOD),
    "IPv4-mapped loopback": head("CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1", GOOD),
    "octal loopback": head("CONNECT 0177.0.0.1:443 HTTP/1.1", GOOD),
    "integer loopback": head("CONNECT 2130706433:443 HTTP/1.1", GOOD),
    "zero address": head("CONNECT 0.0.0.0:443 HTTP/1.1", GOOD),
    "allowed then a second request": head("CONNECT api.github.com:443 HTTP/1.1", GOOD)
    + head("CONNECT example.org:443 HTTP/1.1", GOOD),
    "pinned name on another port": head("CONNECT api.github.com:22 HTTP/1.1", GOOD),
}


async def _twice(proxy: Proxy, data: bytes) -> list[bytes]:
    answers = [await exchange(proxy, data) for _ in range(2)]
    with trio.fail_after(5):
        await proxy.events.wait_for(2, stage="close")
    return answers


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_heads_get_the_same_answers_on_both_paths(
        start_proxy: StartProxy, echo_port: int, name: str) -> None:
    pins = {"api.github.com": f"127.0.0.1:{echo_port}",
            "closed.example": f"127.0.0.1:{closed_port()}"}
    results = []
    for fresh in (True, False):
        proxy = await start_proxy(POLICY, pins=pins, token=TOKEN, fresh=fresh)
        answers = await _twice(proxy, HOSTILE[name])
        stats = proxy.server.statistics()
        # (events sorted: the pump's reach trio's thread a little later than its own)
        events = sorted((comparable(event) for event in proxy.events), key=repr)
        results.append((answers, events, (stats.allowed, stats.denied, stats.accepted)))
    assert results[0] == results[1], results


async def test_the_connection_cap_holds_for_tunnels_in_the_pump(
        start_proxy: StartProxy, echo_port: int) -> None:
    pins = {"api.github.com": f"127.0.0.1:{echo_port}"}
    answers = {}
    for fresh in (True, False):
        proxy = await start_proxy(POLICY, pins=pins, token=TOKEN, fresh=fresh,
                                  limits=ProxyLimits(max_connections=3))
        tunnels = []
        for _ in range(3):
            stream = await proxy.open()
            await stream.send_all(connect_head("api.github.com:443", token=TOKEN))
            assert (await read_head(stream))[0] == 200
            tunnels.append(stream)
        over = await proxy.open()
        await over.send_all(connect_head("api.github.com:443", token=TOKEN))
        with trio.fail_after(5):
            answers[fresh] = (await read_all(over)).split(b"\r\n", 1)[0]
        await over.aclose()
        if fresh:
            # A tunnel the pump serves gives its place back before its close is reported
            # (trio's path reports first and releases as its task ends).
            await tunnels.pop().aclose()
            with trio.fail_after(5):  # the 503's, then the tunnel's
                await proxy.events.wait_for(2, stage="close")
            again = await proxy.open()
            await again.send_all(connect_head("api.github.com:443", token=TOKEN))
            assert (await read_head(again))[0] == 200
            tunnels.append(again)
        for stream in tunnels:
            await stream.aclose()
    assert answers[True] == answers[False]
    assert answers[True].startswith(b"HTTP/1.1 503 ")


async def test_a_policy_replaced_by_an_approval_drops_kept_plans(
        start_proxy: StartProxy, echo_port: int) -> None:
    # What a kept plan is valid for: the policy object in force when it was made.
    proxy = await start_proxy(ProxyPolicy(hosts=frozenset({"api.github.com"})),
                              pins={"api.github.com": f"127.0.0.1:{echo_port}"}, token=TOKEN)
    good = connect_head("api.github.com:443", token=TOKEN)
    assert await exchange(proxy, good) == b"200 ping"
    proxy.server._policy = ProxyPolicy(hosts=frozenset({"other.example"}))
    assert (await exchange(proxy, good)).startswith(b"403 ")


ENDINGS = ("close after the head", "reset after the head", "half-close after the head",
           "part of a head, then close")


async def _end_client(port: int, ending: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        data = connect_head("api.github.com:443", token=TOKEN)
        if ending == "part of a head, then close":
            sock.sendall(data[:10])
            return
        sock.sendall(data + b"data")
        if ending == "reset after the head":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif ending == "half-close after the head":
            sock.shutdown(socket.SHUT_WR)
            await trio.to_thread.run_sync(sock.recv, 100)
    finally:
        sock.close()


@pytest.mark.parametrize("ending", ENDINGS)
async def test_clients_that_go_away_are_recorded_alike(start_proxy: StartProxy, echo_port: int,
                                                       ending: str) -> None:
    # A client that leaves at once, resets, half-closes or sends half a head: each request
    # is closed on the record once, with the same decision and reason, by both paths. (How
    # far it got before the client was gone, a 200 sent or the echo relayed, is a race
    # with the client on either path.)
    results = []
    for fresh in (True, False):
        proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                                  token=TOKEN, fresh=fresh)
        await _end_client(proxy.port, ending)
        with trio.fail_after(5):
            await proxy.events.wait_for(1, stage="close")  # the last of each request's
        closes = [(e.mode, e.decision, e.reason, e.host) for e in proxy.events
                  if e.stage == "close"]
        opened = [e.status for e in proxy.events if e.stage == "open"]
        assert opened in ([], [200]), opened
        assert all(e.bytes_out <= 4 for e in proxy.events)
        results.append(closes)
    assert results[0] == results[1], results
    assert len(results[0]) == 1
