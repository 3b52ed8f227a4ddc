"""Another session's proxied latency while one session sends its tunnels' first bytes one
at a time (red team, twentieth pass, branch ``redteam19``).

One trio loop serves two sessions' proxies, as the daemon's does. The attacker (a process of
its own) holds ``--tunnels`` CONNECT tunnels to a looked-up name on its proxy, sends each
4 KiB of a request-line method that never ends at once, then a byte more every millisecond,
so that the proxy reads them one at a time; a tunnel refused at 8 KiB is opened again. The
victim (another process) opens a tunnel to a looked-up name on the other proxy, sends
``SSH-2.0`` (judged at once) and waits for the echo, again and again. Prints the victim's
latencies, the loop's CPU and that CPU per byte the attacker sent one at a time.

Run it with the tree to measure first on ``PYTHONPATH``, e.g.::

    PYTHONPATH=/tmp/redteam19-base .venv/bin/python bench/first_flight.py --seconds 8
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import textwrap
import time

import trio

import nonod
from nonod.proxy import ProxyPolicy, Resolver, serve_proxy
from nonod.proxy._resolve import Resolved

ATTACKER = textwrap.dedent(r"""
    import socket, sys, time
    port, tunnels, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    def open_one():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        s.sendall(b"a" * 4096)  # half way at once (one read), then a byte at a time
        s.setblocking(False)
        return [s, 4096, 0]
    held = [open_one() for _ in range(tunnels)]
    sent_before = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for one in held:
            try:
                one[0].send(b"a")
                one[1] += 1
                one[2] += 1
            except OSError:
                one[1] = 8192
            if one[1] >= 8192:
                sent_before += one[2]
                one[0].close()
                one[:] = open_one()
        time.sleep(0.001)
    print(sum(one[2] for one in held) + sent_before)
""")

VICTIM = textwrap.dedent(r"""
    import socket, sys, time, json
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"CONNECT v.example:443 HTTP/1.1\r\nHost: v.example:443\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        s.sendall(b"SSH-2.0-victim\r\n")
        got = b""
        while len(got) < 16:
            got += s.recv(4096)
        out.append(time.monotonic() - start)
        s.close()
        time.sleep(0.02)
    print(json.dumps(out))
""")


async def echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        servers = await nursery.start(functools.partial(trio.serve_tcp, echo, 0,
                                                        host="127.0.0.1"))
        echo_port = servers[0].socket.getsockname()[1]

        class LookedUp(Resolver):  # looked-up names (not pinned): first bytes checked
            async def resolve(self, host: str, port: int) -> Resolved:
                return Resolved(host=host, addresses=(("127.0.0.1", echo_port),))

        ports = []
        for host in ("a.example", "v.example"):
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(functools.partial(
                serve_proxy, listeners[0], policy=ProxyPolicy(hosts=frozenset({host})),
                resolver=LookedUp(), events=lambda _e: None))
            ports.append(listeners[0].socket.getsockname()[1])
        cpu = time.thread_time()
        sent: list[int] = []

        async def attack() -> None:
            done = await trio.run_process(
                [sys.executable, "-c", ATTACKER, str(ports[0]), str(args.tunnels),
                 str(args.seconds)], capture_stdout=True)
            sent.append(int(done.stdout))

        async with trio.open_nursery() as both:
            if args.tunnels:
                both.start_soon(attack)
            victim = await trio.run_process(
                [sys.executable, "-c", VICTIM, str(ports[1]), str(args.seconds)],
                capture_stdout=True)
        cpu = time.thread_time() - cpu
        nursery.cancel_scope.cancel()
    lat = sorted(json.loads(victim.stdout))
    print(json.dumps({
        "tree": os.path.dirname(os.path.dirname(nonod.__file__)),
        "tunnels": args.tunnels, "victim_requests": len(lat),
        "p50_ms": round(statistics.median(lat) * 1000, 2),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2),
        "loop_cpu_s": round(cpu, 2), "attacker_single_bytes": sum(sent),
        "loop_cpu_us_per_single_byte": round(cpu * 1e6 / sum(sent), 1) if sum(sent) else None,
        "seconds": args.seconds}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--tunnels", type=int, default=32)
    trio.run(main, parser.parse_args())
