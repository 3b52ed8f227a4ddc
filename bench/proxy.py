"""Proxy benchmarks on loopback: CONNECT tunnel throughput and added latency, in one run.

Contenders, each in its own process so that the client, the proxy and the upstream never share
an interpreter:

  direct        the client connects to the upstream itself: the floor
  nonod         our proxy (nonod.proxy.serve_proxy), splice(2) relay
  nonod-copy    our proxy with splice turned off (userspace copy through trio streams)
  nono-py       nono_py.start_proxy (PyPI nono-py), when it is installed
  nonod-before  with --before DIR: our proxy as the tree in DIR has it (splice on), e.g.
                ``git archive main nonod | tar -x -C DIR``: before and after in one run
  floor         with --floor: the least a splice(2) relay can do, for the ceiling on this
                kernel: a CONNECT head read, no check, one thread per direction, blocking
                splice through a 1 MiB pipe (a plain loop, as a C relay would run it)

Measurements:

  throughput    one transfer of --size bytes (default 1 GiB) from the upstream through a tunnel
  latency       --requests (default 1000) small requests, each a fresh connection: connect,
                CONNECT through the proxy (not for direct), send 64 bytes, read the 64-byte echo;
                p50 and p99 of the whole request
  roundtrip     the same number of 64-byte round trips over one tunnel that is already open
  concurrent    --tunnels (default 1000) tunnels opened at once, one round trip each: wall time

With each of throughput and latency, the proxy process's own CPU time (user + system, from
/proc/<pid>/stat) per GiB and per request (of which user time, in brackets: the
interpreter's share): it moves less with the machine's load than the wall-clock figures
do. Each contender has an upstream process of its own: with latency, that upstream's CPU
time per request and the client's (this process's) are given too, what a request through
the contender costs the other two ends (on 2 CPUs the three processes of a request mostly
run one after the other, on one CPU: the request waits for all of it). With --rounds N,
throughput is also given against direct's in the same round (median and range of those
ratios): the load moves both alike within a round.

With --interleave B, the latency requests of a round alternate between the contenders in
blocks of B (the first contender of each block rotating), so that a change of the machine's
load in the round falls on all of them alike; the one-contender-after-another order of a
round otherwise puts seconds between them.

With --slices K, a round's throughput is K transfers of --size/K bytes per contender,
alternated transfer by transfer (the first contender of each slice rotating), and each
contender's rate is also given against direct's in the same slice (median and quartiles of
all slices of all rounds): a transfer through a proxy and direct's next to it are a fraction
of a second apart. Where the scheduler puts the processes moves a transfer's rate by 2-4x on
this 2-CPU VM (loopback between two CPUs is slower than on one), and it chooses anew for each
transfer: one 1 GiB transfer per contender per round reads one draw of it, many slices read
its distribution. --pin CPUS puts every process of the run (client, upstreams, proxies) on
those CPUs (e.g. ``--pin 1``: one CPU, the draw taken away; what is left is what each
transfer costs in CPU, all processes together).

    .venv/bin/python bench/proxy.py [--size BYTES] [--requests N] [--tunnels N] [--before DIR]
                                    [--floor] [--only TEST...] [--rounds N] [--interleave B]
                                    [--slices K] [--pin CPUS] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

CHUNK = 1 << 20
MESSAGE = b"m" * 64


# Child processes ---------------------------------------------------------------------------

async def _upstream_main(size: int) -> None:
    """A source (sends ``size`` bytes, then closes) and an echo server; prints both ports."""
    block = b"\0" * CHUNK

    async def source(stream: trio.SocketStream) -> None:
        left = size
        try:
            while left > 0:
                n = min(left, CHUNK)
                await stream.send_all(block[:n])
                left -= n
        except trio.BrokenResourceError:
            pass

    async def echo(stream: trio.SocketStream) -> None:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        ports = []
        for handler in (source, echo):
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, handler, 0, host="127.0.0.1", backlog=4096))
            ports.append(listeners[0].socket.getsockname()[1])
        print(json.dumps({"source": ports[0], "echo": ports[1]}), flush=True)


async def _nonod_main(source: int, echo: int, zero_copy: bool) -> None:
    from nonod.proxy import ProxyLimits, ProxyPolicy, Resolver, serve_proxy

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    token = secrets.token_hex(32)
    policy = ProxyPolicy(hosts=frozenset({"source.example", "echo.example"}))
    resolver = Resolver(pins={"source.example": f"127.0.0.1:{source}",
                              "echo.example": f"127.0.0.1:{echo}"})
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            serve_proxy, listeners[0], policy=policy, resolver=resolver,
            events=lambda event: None, limits=ProxyLimits(max_connections=4096),
            proxy_token=token, zero_copy=zero_copy))
        port = listeners[0].socket.getsockname()[1]
        print(json.dumps({"port": port, "token": token, "tree": _tree()}), flush=True)


def _nono_py_main() -> None:
    import nono_py

    handle = nono_py.start_proxy(nono_py.ProxyConfig(allowed_hosts=["127.0.0.1"],
                                                     max_connections=4096))
    token = dict(handle.env_vars())["NONO_PROXY_TOKEN"]
    print(json.dumps({"port": handle.port, "token": token}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    handle.shutdown()


def _floor_main() -> None:
    """The ``floor`` contender (see the module docstring); prints its port."""
    import fcntl
    import threading

    def one_way(src: socket.socket, dst: socket.socket) -> None:
        out, into = os.pipe()
        fcntl.fcntl(into, 1031, CHUNK)  # F_SETPIPE_SZ
        while n := os.splice(src.fileno(), into, CHUNK, flags=os.SPLICE_F_MOVE):
            while n:
                n -= os.splice(out, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
        dst.shutdown(socket.SHUT_WR)
        os.close(out)
        os.close(into)

    def serve(client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        host, port = head.split()[1].decode().rsplit(":", 1)
        with client, socket.create_connection((host, int(port))) as upstream:
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            other = threading.Thread(target=one_way, args=(client, upstream))
            other.start()
            with contextlib.suppress(OSError):
                one_way(upstream, client)
            other.join()

    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    print(json.dumps({"port": listener.getsockname()[1], "token": ""}), flush=True)
    while True:
        threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()


def _tree() -> str:
    """Where the running nonod was imported from (a contender's proof of which code it is)."""
    import nonod

    return os.path.dirname(os.path.dirname(os.path.abspath(nonod.__file__)))


def _child(args: list[str], before: str | None = None
           ) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a child role; with ``before``, its nonod is imported from that tree."""
    env = None if before is None else {**os.environ, "PYTHONPATH": before}
    proc = subprocess.Popen([sys.executable, __file__, "--role", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"child {args} did not start")
    return proc, json.loads(line)


# The client --------------------------------------------------------------------------------

@dataclass
class Route:
    name: str
    proxy: int | None = None  # proxy port, None for direct
    token: str = ""
    targets: dict[str, str] = field(default_factory=dict)  # source/echo -> host:port
    pid: int | None = None  # the proxy's process, for its CPU time
    ports: dict[str, int] = field(default_factory=dict)  # its upstream's source and echo
    upstream_pid: int | None = None  # its upstream's process

    def head(self, which: str) -> bytes:
        target = self.targets[which]
        auth = base64.b64encode(f"nono:{self.token}".encode()).decode()
        return (f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                f"Proxy-Authorization: Basic {auth}\r\n\r\n").encode()


def _open(route: Route, which: str, direct_port: int) -> tuple[socket.socket, int]:
    """A connection to the upstream (through the route's proxy), and how many tunnel bytes
    already arrived with the proxy's response head."""
    early = 0
    if route.proxy is None:
        sock = socket.create_connection(("127.0.0.1", direct_port))
    else:
        sock = socket.create_connection(("127.0.0.1", route.proxy))
        sock.sendall(route.head(which))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                raise RuntimeError(f"{route.name}: proxy closed the connection")
            head += data
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{route.name}: {head.splitlines()[0]!r}")
        early = len(head.split(b"\r\n\r\n", 1)[1])  # the source sends at once
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, early


def throughput(route: Route, ports: dict[str, int], size: int) -> float:
    buf = bytearray(CHUNK)
    start = time.perf_counter()
    sock, got = _open(route, "source", ports["source"])
    while True:
        n = sock.recv_into(buf)
        if not n:
            break
        got += n
    elapsed = time.perf_counter() - start
    sock.close()
    if got != size:
        raise RuntimeError(f"{route.name}: got {got} of {size} bytes")
    return size / elapsed


def _echo_once(sock: socket.socket) -> None:
    sock.sendall(MESSAGE)
    got = 0
    while got < len(MESSAGE):
        data = sock.recv(4096)
        if not data:
            raise RuntimeError("echo closed early")
        got += len(data)


def latency(route: Route, ports: dict[str, int], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        sock, _ = _open(route, "echo", ports["echo"])
        _echo_once(sock)
        samples.append(time.perf_counter() - start)
        sock.close()
    return samples


def roundtrips(route: Route, ports: dict[str, int], n: int) -> list[float]:
    sock, _ = _open(route, "echo", ports["echo"])
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        _echo_once(sock)
        samples.append(time.perf_counter() - start)
    sock.close()
    return samples


def concurrent(route: Route, ports: dict[str, int], n: int) -> tuple[float, int]:
    """Wall time for ``n`` tunnels opened at once, and how many failed."""
    failed = 0

    async def one() -> None:
        nonlocal failed
        try:
            await exchange()
        except (OSError, trio.BrokenResourceError, RuntimeError):
            failed += 1

    async def exchange() -> None:
        port = route.proxy if route.proxy is not None else ports["echo"]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            if route.proxy is not None:
                await stream.send_all(route.head("echo"))
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some(4096)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{route.name}: {head.splitlines()[0]!r}")
            await stream.send_all(MESSAGE)
            got = 0
            while got < len(MESSAGE):
                got += len(await stream.receive_some(4096))

    async def main() -> float:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        return trio.current_time() - start

    return trio.run(main), failed


def end_children(children: list[subprocess.Popen[str]]) -> None:
    """End the helper processes: each one's stdin closed (its cue), then SIGTERM, waited for."""
    for proc in children:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=10)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` so far (0 for None: no proxy process)."""
    return sum(cpu_times(pid))


def cpu_times(pid: int | None) -> tuple[float, float]:
    """User and system CPU time of process ``pid`` so far (0 for None: no proxy process)."""
    if pid is None:
        return 0.0, 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class Spent:
    """CPU seconds spent so far by a route's proxy (user, system), its upstream and this
    process (the client)."""

    user: float
    system: float
    upstream: float
    client: float

    @classmethod
    def now(cls, route: Route) -> Spent:
        return cls(*cpu_times(route.pid), cpu_seconds(route.upstream_pid), time.process_time())

    def __sub__(self, before: Spent) -> Spent:
        return Spent(self.user - before.user, self.system - before.system,
                     self.upstream - before.upstream, self.client - before.client)

    def __add__(self, other: Spent) -> Spent:
        return Spent(self.user + other.user, self.system + other.system,
                     self.upstream + other.upstream, self.client + other.client)


def latency_row(samples: list[float], spent: Spent) -> dict[str, float]:
    """The latency figures of ``samples`` (one per request), and the CPU ``spent`` on them
    per request."""
    n = len(samples)
    return {"latency_cpu_us": (spent.user + spent.system) * 1e6 / n,
            "latency_user_us": spent.user * 1e6 / n,
            "latency_upstream_cpu_us": spent.upstream * 1e6 / n,
            "latency_client_cpu_us": spent.client * 1e6 / n,
            "latency_p50_ms": pct(samples, 0.50), "latency_p99_ms": pct(samples, 0.99)}


def interleaved_latency(routes: list[Route], requests: int, block: int
                        ) -> dict[str, dict[str, float]]:
    """``requests`` fresh requests on each route, in blocks of ``block`` alternating between
    the routes (the first route of each block rotating): each route's latency row."""
    samples: dict[str, list[float]] = {route.name: [] for route in routes}
    spent = {route.name: Spent(0, 0, 0, 0) for route in routes}
    for index in range(-(-requests // block)):
        start = index % len(routes)
        for route in routes[start:] + routes[:start]:
            count = min(block, requests - index * block)
            before = Spent.now(route)
            samples[route.name] += latency(route, route.ports, count)
            spent[route.name] += Spent.now(route) - before
    return {name: latency_row(samples[name], spent[name]) for name in samples}


def interleaved_throughput(routes: list[Route], size: int, slices: int
                           ) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """``slices`` transfers of ``size`` bytes on each route, alternated transfer by transfer
    (the first route of each slice rotating): each route's throughput row (bytes over the
    time of all its transfers, the proxy's CPU per GiB), and its rate against direct's in
    each slice."""
    elapsed = {route.name: 0.0 for route in routes}
    used = {route.name: 0.0 for route in routes}
    ratios: dict[str, list[float]] = {route.name: [] for route in routes}
    for index in range(slices):
        start = index % len(routes)
        rates = {}
        for route in routes[start:] + routes[:start]:
            before = cpu_seconds(route.pid)
            rates[route.name] = throughput(route, route.ports, size)
            used[route.name] += cpu_seconds(route.pid) - before
            elapsed[route.name] += size / rates[route.name]
        for name, rate in rates.items():
            ratios[name].append(rate / rates["direct"])
    rows = {name: {"throughput_MiBps": slices * size / elapsed[name] / (1 << 20),
                   "throughput_cpu_ms_per_GiB": used[name] * 1000 * (1 << 30)
                   / (slices * size)}
            for name in elapsed}
    return rows, ratios


def measure(route: Route, tests: list[tuple[str, Callable[[Route], Any]]], size: int,
            requests: int) -> dict[str, float]:
    """One round of ``tests`` on ``route``: its row of figures."""
    row: dict[str, float] = {}
    for test, run in tests:
        before = Spent.now(route)
        value = run(route)
        spent = Spent.now(route) - before
        used = spent.user + spent.system
        if test == "throughput":
            row["throughput_cpu_ms_per_GiB"] = used * 1000 * (1 << 30) / size
            row["throughput_MiBps"] = value / (1 << 20)
        elif test == "concurrent":
            row["concurrent_s"], row["concurrent_failed"] = value
        elif test == "latency":
            row.update(latency_row(value, spent))
        else:
            row[f"{test}_p50_ms"] = pct(value, 0.50)
            row[f"{test}_p99_ms"] = pct(value, 0.99)
    return row


def _paired(rounds: dict[str, dict[str, list[float]]],
            results: dict[str, dict[str, float]]) -> None:
    """Each contender's throughput against direct's in the same round (the load moves both
    alike within a round, not across rounds): the median and the range of those ratios."""
    direct = rounds["direct"].get("throughput_MiBps", [])
    for name, row in rounds.items():
        ours = row.get("throughput_MiBps", [])
        if name == "direct" or not ours or len(ours) != len(direct):
            continue
        ratios = [mine / theirs for mine, theirs in zip(ours, direct, strict=True)]
        results[name]["throughput_paired"] = statistics.median(ratios)
        results[name]["throughput_paired_min"] = min(ratios)
        results[name]["throughput_paired_max"] = max(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--tunnels", type=int, default=1000)
    parser.add_argument("--before", metavar="DIR",
                        help="also time the nonod of the tree in DIR, as nonod-before")
    parser.add_argument("--floor", action="store_true",
                        help="also time a plain blocking splice relay (the ceiling)")
    parser.add_argument("--only", nargs="+", metavar="TEST",
                        choices=("throughput", "latency", "roundtrip", "concurrent"),
                        help="run only these measurements (the others print as -)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the measurements, contenders alternated, and report "
                             "each figure's median over the rounds")
    parser.add_argument("--interleave", type=int, default=0, metavar="B",
                        help="latency: alternate the contenders in blocks of B requests "
                             "within each round")
    parser.add_argument("--slices", type=int, default=1, metavar="K",
                        help="throughput: K transfers of SIZE/K per contender and round, "
                             "alternated transfer by transfer")
    parser.add_argument("--pin", metavar="CPUS",
                        help="run every process on these CPUs (comma-separated numbers)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        if role == "upstream":
            trio.run(_upstream_main, int(rest[0]))
        elif role == "nonod":
            trio.run(_nonod_main, int(rest[0]), int(rest[1]), rest[2] == "splice")
        elif role == "nono-py":
            _nono_py_main()
        elif role == "floor":
            _floor_main()
        return

    import resource

    if args.slices < 1 or args.size % args.slices:
        parser.error("--slices must be at least 1 and divide --size")
    if args.pin:
        # (inherited by every child started from here on, and their threads)
        os.sched_setaffinity(0, {int(cpu) for cpu in args.pin.split(",")})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    children: list[subprocess.Popen[str]] = []
    try:

        def upstream() -> tuple[dict[str, int], int]:
            """An upstream of the contender's own: its ports and its process."""
            proc, ports = _child(["upstream", str(args.size // args.slices)])
            children.append(proc)
            return ports, proc.pid

        ports, pid = upstream()
        routes = [Route("direct", ports=ports, upstream_pid=pid)]
        ours = [("nonod", "splice", None), ("nonod-copy", "copy", None)]
        if args.before:
            ours.append(("nonod-before", "splice", os.path.abspath(args.before)))
        for name, mode, tree in ours:
            ports, pid = upstream()
            proc, info = _child(["nonod", str(ports["source"]), str(ports["echo"]), mode], tree)
            children.append(proc)
            if tree is not None and info["tree"] != tree:
                raise SystemExit(f"{name}: nonod came from {info['tree']}, not {tree}")
            routes.append(Route(name, info["port"], info["token"],
                                {"source": "source.example:443", "echo": "echo.example:443"},
                                proc.pid, ports, pid))
        peers = ["floor"] if args.floor else []
        try:
            import nono_py  # noqa: F401

            peers.append("nono-py")
        except ImportError:
            pass
        for name in peers:
            ports, pid = upstream()
            proc, info = _child([name])
            children.append(proc)
            routes.append(Route(name, info["port"], info["token"],
                                {which: f"127.0.0.1:{port}" for which, port in ports.items()},
                                proc.pid, ports, pid))
        tests: list[tuple[str, Callable[[Route], Any]]] = [
            ("throughput", lambda r: throughput(r, r.ports, args.size)),
            ("latency", lambda r: latency(r, r.ports, args.requests)),
            ("roundtrip", lambda r: roundtrips(r, r.ports, args.requests)),
            ("concurrent", lambda r: concurrent(r, r.ports, args.tunnels)),
        ]
        tests = [(name, run) for name, run in tests if not args.only or name in args.only]
        interleave = args.interleave > 0 and any(name == "latency" for name, _ in tests)
        if interleave:
            tests = [(name, run) for name, run in tests if name != "latency"]
        sliced = args.slices > 1 and any(name == "throughput" for name, _ in tests)
        if sliced:
            tests = [(name, run) for name, run in tests if name != "throughput"]
        rounds: dict[str, dict[str, list[float]]] = {route.name: {} for route in routes}
        slice_ratios: dict[str, list[float]] = {route.name: [] for route in routes}
        for _ in range(args.rounds):
            if sliced:
                rows, ratios = interleaved_throughput(routes, args.size // args.slices,
                                                      args.slices)
                for name, row in rows.items():
                    for key, value in row.items():
                        rounds[name].setdefault(key, []).append(value)
                    slice_ratios[name] += ratios[name]
            for route in routes:
                for key, value in measure(route, tests, args.size, args.requests).items():
                    rounds[route.name].setdefault(key, []).append(value)
            if interleave:
                for name, row in interleaved_latency(routes, args.requests,
                                                     args.interleave).items():
                    for key, value in row.items():
                        rounds[name].setdefault(key, []).append(value)
        results = {name: {key: statistics.median(values) for key, values in row.items()}
                   for name, row in rounds.items()}
        _paired(rounds, results)
        for name, ratios in slice_ratios.items():
            if ratios and name != "direct":
                low, middle, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 \
                    else (ratios[0],) * 3
                results[name].update({"throughput_sliced": middle,
                                      "throughput_sliced_q1": low,
                                      "throughput_sliced_q3": high})
    finally:
        end_children(children)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"size={args.size} requests={args.requests} tunnels={args.tunnels} "
          f"rounds={args.rounds} interleave={args.interleave} slices={args.slices} "
          f"cpus={os.cpu_count()} pin={args.pin or '-'}")
    print("| route | throughput MiB/s | proxy CPU ms/GiB | request p50 ms | request p99 ms |"
          " proxy CPU us/request | round trip p50 ms | round trip p99 ms |"
          " tunnels at once, s (failed) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")

    def cell(row: dict[str, float], key: str, form: str) -> str:
        return format(row[key], form) if key in row else "-"

    for name, row in results.items():
        user_cell = "" if "latency_user_us" not in row else (
            f" (user {row['latency_user_us']:.0f}; upstream "
            f"{row['latency_upstream_cpu_us']:.0f}, client {row['latency_client_cpu_us']:.0f})")
        concurrent_cell = "-" if "concurrent_s" not in row else (
            f"{row['concurrent_s']:.2f} ({row['concurrent_failed']:.0f})")
        print(f"| {name} | {cell(row, 'throughput_MiBps', '.0f')} | "
              f"{cell(row, 'throughput_cpu_ms_per_GiB', '.0f')} | "
              f"{cell(row, 'latency_p50_ms', '.3f')} | {cell(row, 'latency_p99_ms', '.3f')} | "
              f"{cell(row, 'latency_cpu_us', '.0f')}{user_cell} | "
              f"{cell(row, 'roundtrip_p50_ms', '.3f')} | "
              f"{cell(row, 'roundtrip_p99_ms', '.3f')} | {concurrent_cell} |")
    direct = results["direct"]
    for name, row in results.items():
        if name == "direct":
            continue
        figures = []
        if "latency_p50_ms" in row:
            added = row["latency_p50_ms"] - direct["latency_p50_ms"]
            figures.append(f"added request latency p50 {added:.3f} ms")
            peer = results.get("nono-py", {}).get("latency_p50_ms")
            if peer is not None and name != "nono-py" and peer > direct["latency_p50_ms"]:
                figures.append(f"{added / (peer - direct['latency_p50_ms']):.2f}x nono-py's")
        if "throughput_MiBps" in row:
            figures.append(f"throughput {row['throughput_MiBps'] / direct['throughput_MiBps']:.0%}"
                           " of direct")
            if "throughput_paired" in row and len(rounds["direct"]["throughput_MiBps"]) > 1:
                figures.append(f"round by round {row['throughput_paired']:.0%} "
                               f"({row['throughput_paired_min']:.0%}-"
                               f"{row['throughput_paired_max']:.0%})")
            if "throughput_sliced" in row:
                figures.append(f"slice by slice {row['throughput_sliced']:.0%} (quartiles "
                               f"{row['throughput_sliced_q1']:.0%}-"
                               f"{row['throughput_sliced_q3']:.0%})")
        if figures:
            print(f"{name}: {', '.join(figures)}")

if __name__ == "__main__":
    main()
