"""What auditing adds to a proxied request: a real daemon session, audit on vs audit off.

Two ``nonod`` processes run side by side, identical but for ``[audit] enabled``. In each, one
sandboxed session (``nonoctl launch``, the session's proxy on, the upstream pinned with
``[network] resolve``) makes --requests small requests, each a fresh connection: connect to the
session's proxy, CONNECT to a loopback echo server, send 64 bytes, read the 64-byte echo. The
program inside the sandbox times every request itself (``time.perf_counter``), so the figures
are what the sandboxed program sees. Rounds alternate between the two daemons (--rounds) so
that drift in the machine's load falls on both; p50/p99 are over all rounds' requests.

Each daemon's CPU time (user and system, from ``/proc/<pid>/stat``, worker threads included)
over the measured rounds is reported per request too: on a shared machine it moves less than
the latency percentiles, and the difference between the daemons is what auditing costs the
daemon (session launches and seals included, ~1 per 1000 requests).

With auditing on, each request writes its ``network`` event(s) to the session's
``audit.ndjson`` (an O_APPEND write; fsync in a worker thread at most once a second) and
publishes them to the live hub (no subscriber here).

With ``--baseline DIR`` (another checkout or export of the repository, e.g.
``git archive HEAD | tar -x -C DIR`` before a change), a third daemon runs that tree's code with
auditing on, in the same rounds, so a change to the audit path is measured against its baseline
under the same load.

    .venv/bin/python bench/audit_proxy.py [--requests N] [--rounds R] [--baseline DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _p in (str(BENCH), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _common import machine, percentile  # noqa: E402

CLIENT = r"""
import base64, json, os, socket, sys, time
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
head = (f"CONNECT echo.bench:443 HTTP/1.1\r\nHost: echo.bench:443\r\n"
        f"Proxy-Authorization: Basic {auth}\r\n\r\n").encode()
payload = b"x" * 64
out = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
    s.sendall(head)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("proxy closed: " + got.decode(errors="replace"))
        got += chunk
    if b" 200 " not in got.split(b"\r\n", 1)[0]:
        raise SystemExit("refused: " + got.split(b"\r\n", 1)[0].decode())
    s.sendall(payload)
    echo = b""
    while len(echo) < len(payload):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("upstream closed")
        echo += chunk
    s.close()
    out.append((time.perf_counter() - t0) * 1e6)
print(json.dumps(out))
"""


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _env(base: Path, tree: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": f"{base}/home", "PYTHONPATH": str(tree),
            "XDG_STATE_HOME": f"{base}/state", "XDG_CONFIG_HOME": f"{base}/config",
            "XDG_RUNTIME_DIR": f"{base}/home/run", "NONO_NO_AUTOSTART": "1",
            "NONO_SOCKET": f"{base}/run/nonod.sock"}  # nonod makes run/ 0700


class Daemon:
    def __init__(self, root: Path, name: str, *, audit: bool, port: int,
                 tree: Path = REPO) -> None:
        self.name = name
        self.tree = tree
        self.base = root / name
        (self.base / "home" / "run").mkdir(parents=True)
        self.env = _env(self.base, tree)
        self.config = self.base / "nonod.toml"
        self.config.write_text(
            f"[audit]\nenabled = {'true' if audit else 'false'}\n"
            f'[network]\nresolve = {{ "echo.bench" = "127.0.0.1:{port}" }}\n')
        self.profile = self.base / "bench.json"
        self.profile.write_text(json.dumps({
            "meta": {"name": "bench"}, "workdir": {"access": "readwrite"},
            "groups": {"include": ["python_runtime"]},
            "network": {"allow_domain": ["echo.bench"]},
        }))
        (self.base / "client.py").write_text(CLIENT)

    def start(self) -> None:
        # cwd: ``-m`` puts it first on sys.path, ahead of PYTHONPATH.
        done = subprocess.run([sys.executable, "-m", "nonod", "--socket",
                               self.env["NONO_SOCKET"], "--config", str(self.config)],
                              env=self.env, cwd=self.tree, capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise SystemExit(f"nonod ({self.name}) did not start: {done.stderr}")

    def run(self, requests: int) -> list[float]:
        done = subprocess.run(
            [sys.executable, "-m", "nonoctl", "launch", "--profile", str(self.profile),
             "--allow-cwd", "--", "/usr/bin/python3", "-S", "client.py", str(requests)],
            env=self.env, cwd=self.base, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"session ({self.name}) failed: {done.stderr or done.stdout}")
        values: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
        return values

    def pid(self) -> int:
        done = subprocess.run([sys.executable, "-m", "nonoctl", "daemon", "status", "--json"],
                              env=self.env, capture_output=True, text=True, timeout=60,
                              check=True)
        pid: int = json.loads(done.stdout)["pid"]
        return pid

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "nonoctl", "daemon", "stop"], env=self.env,
                       capture_output=True, timeout=60, check=False)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per daemon, alternating")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="also run DIR's code with auditing on (audit-base), same rounds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    echo = _Server(("127.0.0.1", 0), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    port = echo.server_address[1]
    root = Path(tempfile.mkdtemp(prefix="nb-", dir="/tmp"))
    root.chmod(0o755)
    daemons = [Daemon(root, "audit-on", audit=True, port=port),
               Daemon(root, "audit-off", audit=False, port=port)]
    if args.baseline is not None:
        daemons.append(Daemon(root, "audit-base", audit=True, port=port,
                              tree=args.baseline.resolve()))
    results: dict[str, list[float]] = {d.name: [] for d in daemons}
    cpu: dict[str, tuple[float, float]] = {}
    events = 0
    try:
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:  # a warm-up session each: fork server, imports, caches
            daemon.run(50)
        pids = {daemon.name: daemon.pid() for daemon in daemons}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        for i in range(args.rounds):  # alternate the order too: no daemon always goes first
            for daemon in daemons if i % 2 == 0 else daemons[::-1]:
                results[daemon.name] += daemon.run(args.requests)
        for name, pid in pids.items():
            (u0, s0), (u1, s1) = before[name], cpu_seconds(pid)
            n = len(results[name])
            cpu[name] = ((u1 - u0) / n * 1e6, (s1 - s0) / n * 1e6)
        audited = sorted((root / "audit-on" / "state" / "nono" / "sessions").glob(
            "*/audit.ndjson"))
        events = sum(len(f.read_bytes().splitlines()) for f in audited)
    finally:
        for daemon in daemons:
            daemon.stop()
        echo.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    summary = {
        name: {"requests": len(v), "p50_us": round(percentile(v, 0.5), 1),
               "p99_us": round(percentile(v, 0.99), 1),
               "cpu_user_us": round(cpu[name][0], 1), "cpu_sys_us": round(cpu[name][1], 1)}
        for name, v in results.items()
    }
    keys = ("p50_us", "p99_us", "cpu_user_us", "cpu_sys_us")
    off = summary["audit-off"]
    added = {name: {key: round(row[key] - off[key], 1) for key in keys}
             for name, row in summary.items() if name != "audit-off"}
    if args.json:
        print(json.dumps({"machine": machine(), "results": summary,
                          "added": added["audit-on"], "added_base": added.get("audit-base"),
                          "audit_lines": events}))
        return
    print(" ".join(f"{k}={v}" for k, v in machine().items()))
    print(f"proxied request (connect, CONNECT, 64-byte echo), {args.rounds} x {args.requests} "
          "per daemon, timed inside the sandbox")
    print(f"{'daemon':<10} {'requests':>8} {'p50 µs':>9} {'p99 µs':>9} "
          f"{'daemon CPU µs/request (user+sys)':>34}")
    for name, row in summary.items():
        print(f"{name:<10} {row['requests']:>8} {row['p50_us']:>9.1f} {row['p99_us']:>9.1f} "
              f"{row['cpu_user_us']:>14.1f} + {row['cpu_sys_us']:>6.1f}")
    for name, row in added.items():
        print(f"added by auditing ({name}): p50 {row['p50_us']:+.1f} µs, "
              f"p99 {row['p99_us']:+.1f} µs, daemon CPU {row['cpu_user_us']:+.1f} µs user "
              f"{row['cpu_sys_us']:+.1f} µs sys per request")
    print(f"({events} audit lines written by audit-on)")


if __name__ == "__main__":
    os.umask(0o022)
    socket.setdefaulttimeout(None)
    main()
