"""Reverse-proxy (credential route) benchmark on loopback: added latency and streaming rate.

A local TLS upstream (private CA made with trustme) answers ``GET /small`` with a small JSON
body and ``GET /big`` with a --size byte body (default 100 MB, Content-Length, written in
1 MiB pieces: zeros, or with --body random the same 1 MiB of random bytes over and over,
which the scrubber must search through: no sampled byte of zeros can be part of a secret).
It answers 401 unless ``Authorization: Bearer <real secret>`` arrived, so every proxied
figure below is for a request whose credential really was swapped.

Contenders, each in its own process (client, proxies and upstream never share an interpreter):

  direct    the client speaks TLS to the upstream itself and sends the real secret: the floor
  nonod     our reverse proxy: serve_proxy(routes=RouteTable) on a loopback listener, a route
            ``bench`` whose credential is ``env://NONO_BENCH_SECRET``, the upstream reached by
            a Resolver pin and trusted through extra_ca_file; the client sends plain HTTP to
            127.0.0.1:<port>/bench/... with the phantom token
  nonod-before  with --before DIR: our reverse proxy as the tree in DIR has it, e.g.
            ``git archive main nonod | tar -x -C DIR``: before and after in one run
  nono-py   nono_py.start_proxy with a RouteConfig (tls_ca = the private CA), when installed
            and when it accepts the loopback upstream; otherwise the reason is printed

Measurements, every client on one keep-alive connection:

  latency   --requests (default 1000) ``GET /small``, after 20 warm-up requests; p50/p99
  stream    ``GET /big`` on a new connection, --streams times per contender in each of
            --rounds rounds (default 1 x 7), the contenders taking turns round by round (so
            that a burst of load on this shared machine hits them alike); the median rate in
            MB/s (10^6 bytes), and the proxy process's CPU time (user + system, from
            /proc/<pid>/stat) per 100 MB, which moves less with the machine's load; beside
            it the upstream's and the client's CPU per 100 MB in the same streams (they
            share the machine's two CPUs with the proxy: when their sum nears 200 ms per
            100 MB, the figure is the machine's, not the proxy's)

The upstream and the client (this process) are shared by every contender and each is one
thread. --fixtures-nice N (e.g. -10, as root) runs them at that nice value once every proxy
has started, to see whether they are what limits a contender (the proxies stay at the default
priority). Not the default: it changes the contenders' shares unevenly (a proxy that makes
the upstream and the client work harder per byte, as nono-py does, loses more CPU to them).

    .venv/bin/python bench/reverse.py [--size BYTES] [--body zeros|random] [--requests N]
                                      [--streams N] [--rounds N] [--before DIR]
                                      [--fixtures-nice N] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import trio
from proxy import cpu_seconds, end_children  # bench/proxy.py, beside this file

CHUNK = 1 << 20
SECRET_ENV = "NONO_BENCH_SECRET"  # noqa: S105 - a variable name, not a secret
HOST = "upstream.test"
WARMUP = 20


# Child processes ---------------------------------------------------------------------------

async def _upstream_main(cert_file: str, key_file: str, size: int, body: str,
                         secret: str) -> None:
    """Keep-alive HTTP/1.1 over TLS, minimal parsing: GET only, no request bodies."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    small = json.dumps({"ok": True, "id": 12345, "items": ["a", "b", "c"]}).encode()
    block = os.urandom(CHUNK) if body == "random" else b"\0" * CHUNK
    expected = f"bearer {secret}".encode()

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ")[1]
                auth = b""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"authorization":
                        auth = value.strip()
                if auth.lower() != expected:
                    body = b'{"error": "bad credential"}'
                    await stream.send_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                                          b"application/json\r\nContent-Length: "
                                          + str(len(body)).encode() + b"\r\n\r\n" + body)
                elif target.endswith(b"/big"):
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/"
                                          b"octet-stream\r\nContent-Length: "
                                          + str(size).encode() + b"\r\n\r\n")
                    left = size
                    while left > 0:
                        n = min(left, CHUNK)
                        await stream.send_all(block[:n])
                        left -= n
                else:
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                                          b"\r\nContent-Length: " + str(len(small)).encode()
                                          + b"\r\n\r\n" + small)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_ssl_over_tcp, handle, 0, context, host="127.0.0.1"))
        port = listeners[0].transport_listener.socket.getsockname()[1]
        print(json.dumps({"port": port}), flush=True)


async def _nonod_main(upstream: int, ca_file: str) -> None:
    from nonod.credentials import PhantomToken, Route, load_route_secrets
    from nonod.proxy import ProxyLimits, ProxyPolicy, Resolver, RouteTable, serve_proxy

    route = Route(name="bench", upstream=f"https://{HOST}", credential_key=f"env://{SECRET_ENV}",
                  credential_format="Bearer {}")
    loaded = await load_route_secrets([route], environ=os.environ)
    if loaded[0].secret is None:
        raise SystemExit(f"nonod: the route's secret did not load: {loaded[0]!r}")
    token = PhantomToken.new()
    table = RouteTable(loaded, token=token, extra_ca_file=ca_file)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_proxy(
                listeners[0], policy=ProxyPolicy(),
                resolver=Resolver(pins={HOST: f"127.0.0.1:{upstream}"}),
                events=lambda event: None, limits=ProxyLimits(), proxy_token=token.reveal(),
                routes=table, task_status=task_status))
        import nonod

        tree = os.path.dirname(os.path.dirname(os.path.abspath(nonod.__file__)))
        print(json.dumps({"port": listeners[0].socket.getsockname()[1],
                          "token": token.reveal(), "tree": tree}), flush=True)


def _nono_py_main(upstream: int, ca_file: str) -> None:
    try:
        import nono_py

        route = nono_py.RouteConfig(
            prefix="bench", upstream=f"https://127.0.0.1:{upstream}",
            credential_key=f"env://{SECRET_ENV}", credential_format="Bearer {}",
            env_var="BENCH_API_KEY", tls_ca=ca_file)
        handle = nono_py.start_proxy(nono_py.ProxyConfig(allowed_hosts=["127.0.0.1"],
                                                         routes=[route]))
        env = dict(handle.credential_env_vars())
        token = env.get("BENCH_API_KEY") or dict(handle.env_vars()).get("NONO_PROXY_TOKEN")
        problems = [d for d in handle.diagnostics() if d.get("route_prefix") == "bench"]
        if problems or not token:
            handle.shutdown()
            print(json.dumps({"error": f"route not usable: {problems or env}"}), flush=True)
            return
    except Exception as exc:  # noqa: BLE001 - any failure means "skip, and say why"
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    print(json.dumps({"port": handle.port, "token": token, "env": sorted(env)}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    handle.shutdown()


def _child(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, __file__, "--role", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        return proc, {"error": f"child {args[0]} exited ({proc.returncode}) before it started"}
    return proc, json.loads(line)


# The client: raw-socket HTTP/1.1, keep-alive ----------------------------------------------

class Conn:
    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.host = host_header
        self.buf = bytearray()
        self.scratch = bytearray(CHUNK)
        self.closed = False  # the server said Connection: close

    def _fill(self) -> None:
        n = self.sock.recv_into(self.scratch)
        if not n:
            raise RuntimeError("connection closed mid-response")
        self.buf += memoryview(self.scratch)[:n]

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return line

    def _discard(self, n: int) -> None:
        take = min(n, len(self.buf))
        del self.buf[:take]
        n -= take
        while n > 0:
            got = self.sock.recv_into(self.scratch, min(n, CHUNK))
            if not got:
                raise RuntimeError("connection closed mid-body")
            n -= got

    def get(self, path: str, auth: str) -> tuple[int, int]:
        """Send ``GET path``; read the whole response; return (status, body bytes)."""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Authorization: Bearer {auth}\r\nAccept: */*\r\n\r\n".encode())
        try:
            status = int(self._line().split(b" ")[1])
        except RuntimeError:  # closed before answering: the server dropped keep-alive
            self.closed = True
            raise
        length, chunked = None, False
        while line := self._line():
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.closed = True
        if chunked:
            total = 0
            while size := int(self._line().split(b";")[0], 16):
                self._discard(size)
                self._line()
                total += size
            while self._line():  # trailers
                pass
            return status, total
        if length is None:
            raise RuntimeError("a response without framing (no keep-alive possible)")
        self._discard(length)
        return status, length


@dataclass
class Contender:
    name: str
    port: int
    token: str
    tls: ssl.SSLContext | None = None  # direct only
    prefix: str = ""
    pid: int | None = None  # the proxy's process (none for direct)

    def connect(self) -> Conn:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            return Conn(self.tls.wrap_socket(sock, server_hostname=HOST), HOST)
        return Conn(sock, f"127.0.0.1:{self.port}")


def latency(c: Contender, n: int) -> tuple[list[float], int]:
    """Samples, and how many new connections were needed (a server that answers with
    ``Connection: close`` costs a connect per request, and that is timed too)."""
    conn, reconnects = c.connect(), 0
    samples = []
    for i in range(WARMUP + n):
        start = time.perf_counter()
        if conn.closed:
            conn.sock.close()
            conn, reconnects = c.connect(), reconnects + 1
        try:
            status, _ = conn.get(f"{c.prefix}/small", c.token)
        except (RuntimeError, OSError):  # dropped after the last response; timed all the same
            conn.sock.close()
            conn, reconnects = c.connect(), reconnects + 1
            status, _ = conn.get(f"{c.prefix}/small", c.token)
        if status != 200:
            raise RuntimeError(f"{c.name}: /small answered {status}")
        if i >= WARMUP:
            samples.append(time.perf_counter() - start)
    conn.sock.close()
    return samples, reconnects


def stream(c: Contender, size: int, times: int) -> list[float]:
    conn = c.connect()
    conn.get(f"{c.prefix}/small", c.token)  # the upstream connection is open before timing
    rates = []
    for _ in range(times):
        start = time.perf_counter()
        if conn.closed:
            conn.sock.close()
            conn = c.connect()
        conn.sock.close()  # a new connection for every stream, for every contender alike
        conn = c.connect()
        status, got = conn.get(f"{c.prefix}/big", c.token)
        elapsed = time.perf_counter() - start
        if status != 200 or got != size:
            raise RuntimeError(f"{c.name}: /big gave {status} with {got} of {size} bytes")
        rates.append(size / elapsed / 1e6)
    conn.sock.close()
    return rates


def _prioritise(pids: tuple[int, ...], nice: int) -> int:
    """Set the nice value of ``pids`` (the upstream, the client); the value they have."""
    if nice:
        try:
            for pid in pids:
                os.setpriority(os.PRIO_PROCESS, pid, nice)
        except PermissionError:
            pass
    return os.getpriority(os.PRIO_PROCESS, pids[0])


def _cpu_now(proxy: int | None, upstream: int) -> tuple[float, float, float]:
    """CPU seconds so far of the proxy, the upstream and this process (the client)."""
    return cpu_seconds(proxy), cpu_seconds(upstream), time.process_time()


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000_000)
    parser.add_argument("--body", choices=("zeros", "random"), default="zeros")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=1, help="streams per contender per round")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds of streams, the contenders taking turns")
    parser.add_argument("--before", metavar="DIR",
                        help="also time the nonod of the tree in DIR, as nonod-before")
    parser.add_argument("--fixtures-nice", type=int, default=0, metavar="N",
                        help="the upstream's and the client's nice value (0: unchanged)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        if role == "upstream":
            trio.run(_upstream_main, rest[0], rest[1], int(rest[2]), rest[3],
                     os.environ[SECRET_ENV])
        elif role == "nonod":
            trio.run(_nonod_main, int(rest[0]), rest[1])
        elif role == "nono-py":
            _nono_py_main(int(rest[0]), rest[1])
        return

    import trustme

    secret = "sk-bench-" + secrets.token_hex(24)
    env = {**os.environ, SECRET_ENV: secret}
    tmp = tempfile.mkdtemp(prefix="nono-bench-reverse-")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "127.0.0.1")
    ca_file, cert_file, key_file = (os.path.join(tmp, n) for n in ("ca.pem", "cert.pem",
                                                                    "key.pem"))
    ca.cert_pem.write_to_path(ca_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    client_tls = ssl.create_default_context(cafile=ca_file)

    children: list[subprocess.Popen[str]] = []
    skipped: dict[str, str] = {}
    results: dict[str, dict[str, float]] = {}
    try:
        proc, info = _child(["upstream", cert_file, key_file, str(args.size), args.body],
                             env)
        children.append(proc)
        upstream, upstream_pid = info["port"], proc.pid
        contenders = [Contender("direct", upstream, secret, tls=client_tls)]
        proc, info = _child(["nonod", str(upstream), ca_file], env)
        children.append(proc)
        contenders.append(Contender("nonod", info["port"], info["token"], prefix="/bench",
                                    pid=proc.pid))
        if args.before:
            tree = os.path.abspath(args.before)
            proc, info = _child(["nonod", str(upstream), ca_file], {**env, "PYTHONPATH": tree})
            children.append(proc)
            if info.get("tree") != tree:
                raise SystemExit(f"nonod-before: nonod came from {info.get('tree')}, not {tree}")
            contenders.append(Contender("nonod-before", info["port"], info["token"],
                                        prefix="/bench", pid=proc.pid))
        try:
            import nono_py  # noqa: F401

            proc, info = _child(["nono-py", str(upstream), ca_file], env)
            children.append(proc)
            if "error" in info:
                skipped["nono-py"] = info["error"]
            else:
                candidate = Contender("nono-py", info["port"], info["token"], prefix="/bench",
                                      pid=proc.pid)
                try:  # a probe: does its route reach our upstream with the real secret?
                    status, _ = candidate.connect().get("/bench/small", candidate.token)
                    if status == 200:
                        contenders.append(candidate)
                    else:
                        skipped["nono-py"] = f"probe request answered {status}"
                except (OSError, RuntimeError, ValueError, IndexError) as exc:
                    skipped["nono-py"] = f"probe request failed: {exc!r}"
        except ImportError:
            skipped["nono-py"] = "nono_py is not installed"
        # after every proxy started (a child would inherit this process's nice value)
        niced = _prioritise((upstream_pid, os.getpid()), args.fixtures_nice)
        for c in contenders:
            print(f"running {c.name}", file=sys.stderr)
            lat, reconnects = latency(c, args.requests)
            results[c.name] = {"p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99),
                               "reconnects": reconnects}
        rates: dict[str, list[float]] = {c.name: [] for c in contenders}
        cpu = {c.name: [0.0, 0.0, 0.0] for c in contenders}  # proxy, upstream, client
        for round_ in range(args.rounds):
            for c in contenders:
                print(f"streaming {c.name}, round {round_ + 1}", file=sys.stderr)
                before = _cpu_now(c.pid, upstream_pid)
                rates[c.name] += stream(c, args.size, args.streams)
                for i, (end, start) in enumerate(zip(_cpu_now(c.pid, upstream_pid), before,
                                                     strict=True)):
                    cpu[c.name][i] += end - start
        per_100mb = 1000 * 100e6 / (args.size * args.streams * args.rounds)
        for c in contenders:
            proxy_cpu, upstream_cpu, client_cpu = (t * per_100mb for t in cpu[c.name])
            results[c.name].update({
                "stream_MBps": statistics.median(rates[c.name]),
                "stream_MBps_all": rates[c.name],  # type: ignore[dict-item]
                "stream_cpu_ms_per_100MB": proxy_cpu if c.pid is not None else None,
                "upstream_cpu_ms_per_100MB": upstream_cpu,
                "client_cpu_ms_per_100MB": client_cpu})
    finally:
        end_children(children)
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "kernel": platform.release(), "nproc": os.cpu_count(), "size": args.size,
            "body": args.body,
            "requests": args.requests, "streams": args.streams, "rounds": args.rounds,
            "loadavg_1m": os.getloadavg()[0], "fixtures_nice": niced}
    if args.json:
        print(json.dumps({"meta": meta, "results": results, "skipped": skipped}, indent=2))
        return
    print(f"date={meta['date']} kernel={meta['kernel']} nproc={meta['nproc']} "
          f"size={args.size} body={args.body} requests={args.requests} streams={args.streams} "
          f"rounds={args.rounds} load={meta['loadavg_1m']:.2f} fixtures_nice={niced}")
    print("| route | p50 ms | p99 ms | added p50 ms | added p99 ms | stream MB/s (median) |"
          " stream vs direct | stream vs nono-py | proxy CPU ms per 100 MB |"
          " upstream, client CPU ms | new connections |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    direct = results["direct"]
    peer = results.get("nono-py", {}).get("stream_MBps")
    for name, row in results.items():
        versus = f"{row['stream_MBps'] / peer:.2f}x" if peer else "-"
        cpu_ms = row["stream_cpu_ms_per_100MB"]
        print(f"| {name} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
              f"{row['p50_ms'] - direct['p50_ms']:.3f} | {row['p99_ms'] - direct['p99_ms']:.3f}"
              f" | {row['stream_MBps']:.0f} | {row['stream_MBps'] / direct['stream_MBps']:.0%} | "
              f"{versus} | {'-' if cpu_ms is None else f'{cpu_ms:.0f}'} | "
              f"{row['upstream_cpu_ms_per_100MB']:.0f}, {row['client_cpu_ms_per_100MB']:.0f} | "
              f"{row['reconnects']:.0f} |")
    for name, why in skipped.items():
        print(f"{name}: skipped: {why}")


if __name__ == "__main__":
    main()
