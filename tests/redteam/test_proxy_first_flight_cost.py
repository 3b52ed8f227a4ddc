"""A tunnel's first bytes sent one at a time: what the proxy spends on them grows linearly.

A tunnel to a looked-up name holds the client's first bytes until it can judge them (a TLS
ClientHello's name, or an HTTP request line: ``nonod/proxy/_sni.py``). Before, each read
copied what had come and read the request line again from its start: a client sending its
first 8 KiB a byte at a time cost the event loop (every session's proxy, every control
connection) time quadratic in the bytes, seconds of CPU per tunnel, and a session may hold
hundreds of tunnels. A real proxy on real sockets; each byte is read on its own (the client
waits until the proxy is blocked again before sending the next).
"""

from __future__ import annotations

import functools
import time

import trio
import trio.testing

from nonod.proxy import NetworkEvent, ProxyPolicy, Resolver, serve_proxy
from nonod.proxy._resolve import Resolved
from tests.proxy.conftest import connect_head, echo_port, read_head  # noqa: F401 - a fixture

POLICY = ProxyPolicy(hosts=frozenset({"sink.example"}))
ROUNDS = 8  # of 1 KiB each: the first-flight reader gives up undecided at 8 KiB


async def test_first_bytes_sent_one_at_a_time_cost_the_same_per_byte_to_the_end(
        nursery: trio.Nursery, echo_port: int) -> None:  # noqa: F811

    class LookedUp(Resolver):  # a name looked up (not pinned): its first bytes are checked
        async def resolve(self, host: str, port: int) -> Resolved:
            return Resolved(host=host, addresses=(("127.0.0.1", echo_port),))

    events: list[NetworkEvent] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(functools.partial(
        serve_proxy, listeners[0], policy=POLICY, resolver=LookedUp(), events=events.append))
    client = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    await client.send_all(connect_head("sink.example:443"))
    assert (await read_head(client))[0] == 200
    costs: list[float] = []  # the CPU of each KiB, sent a byte at a time
    for _ in range(ROUNDS):
        before = time.thread_time()
        for _ in range(1024 - (len(costs) == ROUNDS - 1)):  # the last byte decides: below
            await client.send_all(b"a")  # a method token that never ends: undecided
            await trio.testing.wait_all_tasks_blocked()
        costs.append(time.thread_time() - before)
    await client.send_all(b"a")
    answer = await client.receive_some(4096)
    assert b"403" in answer  # 8 KiB undecided: refused as plain HTTP (fail closed)
    await trio.testing.wait_all_tasks_blocked()  # its record is written after the answer
    assert [e.reason for e in events if e.stage == "close"] == ["plain_http_in_tunnel"]
    # The last KiBs (up to 7 KiB held) cost what the first did; before, the last cost 3 to 4
    # times the first (a rescan per read): the cheapest of the last three about 2.5 times the
    # cheapest of the first three. The cheapest of each: a busy host only adds to a round's
    # CPU time (rounds of the same work measured 1x to 4x apart under load).
    assert min(costs[-3:]) < 1.8 * min(costs[:3]), costs
    await client.aclose()


class Spawned(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


async def test_first_bytes_sent_one_at_a_time_cost_a_read_each_not_tasks(
        nursery: trio.Nursery, echo_port: int) -> None:  # noqa: F811
    """Each read of the first bytes cost two new tasks too (a nursery watching the client
    and the upstream), some 20 µs of the event loop per byte: 32 tunnels fed a byte per
    millisecond each kept the loop 80% busy. One watch of the upstream now serves the wait."""

    class LookedUp(Resolver):
        async def resolve(self, host: str, port: int) -> Resolved:
            return Resolved(host=host, addresses=(("127.0.0.1", echo_port),))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(functools.partial(
        serve_proxy, listeners[0], policy=POLICY, resolver=LookedUp(), events=lambda _e: None))
    client = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    await client.send_all(connect_head("sink.example:443"))
    assert (await read_head(client))[0] == 200
    spawned = Spawned()
    trio.lowlevel.add_instrument(spawned)
    try:
        for _ in range(512):
            await client.send_all(b"a")
            await trio.testing.wait_all_tasks_blocked()
    finally:
        trio.lowlevel.remove_instrument(spawned)
    assert spawned.count < 8, spawned.count  # before: two per byte
    await client.aclose()
