"""``nonoctl ps`` with N live sessions: this checkout against a base, daemon and client apart.

Two daemons side by side (bench/daemon.py's ``Daemon``), the base's (``--base-tree DIR``: a
checkout with its ``nono-reaper`` built, or ``--base REV``: ``git archive``d and built) and
this checkout's, each holding ``--live`` fleet sessions (``sleep 600`` with a network
namespace and the proxy, bench/daemon.py's ``FLEET_OPTIONS``, 4 in flight). Then
``--runs`` rounds (after ``--warmup`` untimed ones); in each, in an order that alternates
round by round:

  ps A/B     ``nonoctl ps`` of each tree's wheel install (bench/_wheel.py) against each
             daemon (four pairs: the client's and the daemon's shares apart): wall time, the
             nonoctl process's CPU time, and the daemon's CPU over it (every thread,
             ``/proc/<pid>/task/*/schedstat``: exact, not in ticks)
  list       ``ListSessions(brief=True)`` on a kept connection (what ``ps`` asks), per
             daemon: the round trip and the daemon's CPU per request

    .venv/bin/python bench/ps_live.py --base-tree /tmp/fleet2-base [--live 1000] [--runs 25]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trio
from _common import emit, machine, percentile
from _wheel import installed_cli
from daemon import Daemon, _launch_fleet, _raise_nofile, cli, failure_kinds, stop_all
from daemon_ab import exported

from nonoctl.client import Connection
from nonod import protocol as p


def daemon_cpu_ms(pid: int) -> float:
    """Every thread's CPU time of ``pid`` so far (ms, exact: schedstat's run time)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a worker thread that ended meanwhile
    return total / 1e6


#: A fill run with another tree's client (its protocol: a daemon refuses a request with a
#: field it does not know): that tree's bench/daemon.py ``_launch_fleet``, ids out as JSON.
_FILL = """
import json, sys, time
from pathlib import Path
from nonoctl.client import Client
from daemon import _launch_fleet
class D:
    socket = Path(sys.argv[1]); work = Path(sys.argv[2]); env = json.loads(sys.argv[3])
    def client(self): return Client(self.socket, autostart=False, timeout=60)
ids, failures, _ = _launch_fleet(D(), int(sys.argv[4]), 4, time.monotonic() + 900)
print(json.dumps([ids, failures]))
"""


def _fill(daemon: Daemon, name: str, live: int, tree: Path | None) -> list[str]:
    began = time.perf_counter()
    if tree is None:
        ids, failures, _ = _launch_fleet(daemon, live, 4, time.monotonic() + 900)
    else:
        out = subprocess.run(
            [sys.executable, "-c", _FILL, str(daemon.socket), str(daemon.work),
             json.dumps(daemon.env), str(live)],
            env={**os.environ, "PYTHONPATH": f"{tree}:{tree / 'bench'}"}, cwd=tree / "bench",
            check=True, capture_output=True, text=True, timeout=1000).stdout
        ids, failures = json.loads(out.strip().splitlines()[-1])
    print(f"{name}: {len(ids)} live in {time.perf_counter() - began:.1f} s, "
          f"{len(failures)} failed {failure_kinds(failures)}", file=sys.stderr, flush=True)
    return ids


Sample = dict[str, list[float]]


def _timed_cli(daemon: Daemon, argv: list[str]) -> Callable[[Sample], None]:
    cpu: list[float] = []
    run = cli(daemon, argv, cpu)

    def timed(into: Sample) -> None:
        d0 = daemon_cpu_ms(daemon.proc.pid)
        began = time.perf_counter()
        trio.run(run)
        into["wall"].append((time.perf_counter() - began) * 1000)
        into["daemon"].append(daemon_cpu_ms(daemon.proc.pid) - d0)
        into["cpu"].append(cpu[-1])
    return timed


def _timed_list(daemon: Daemon, conn: Connection) -> Callable[[Sample], None]:
    request = p.ListSessions(brief=True)

    def timed(into: Sample) -> None:
        d0 = daemon_cpu_ms(daemon.proc.pid)
        began = time.perf_counter()
        reply = conn.request(request)
        into["wall"].append((time.perf_counter() - began) * 1000)
        into["daemon"].append(daemon_cpu_ms(daemon.proc.pid) - d0)
        into["cpu"].append(0.0)
        if not isinstance(reply, p.SessionList):
            raise SystemExit(f"ListSessions answered {reply!r}")
    return timed


def profile(args: argparse.Namespace) -> None:
    """This checkout's daemon alone, its main thread under cProfile while ``--runs`` kept
    connection lists and as many ``nonoctl ps`` run (bench/_daemon_trace.py's window)."""
    out = Path(args.profile).resolve()
    os.environ["NONO_TRACE_PROFILE"] = str(out)
    os.environ["NONO_TRACE_PROFILE_WINDOW"] = "1"
    with ExitStack() as stack:
        bin_dir = stack.enter_context(installed_cli())
        daemon = Daemon(trace=out.with_suffix(".steps.json"))
        stack.callback(daemon.close)
        ids = _fill(daemon, "this", args.live, None)
        stack.callback(stop_all, daemon, ids)
        time.sleep(args.settle)
        conn = Connection.open(daemon.socket, timeout=60)
        stack.callback(conn.close)
        listing = _timed_list(daemon, conn)
        ps = _timed_cli(daemon, [str(bin_dir / "nonoctl"), "ps"])
        into: Sample = {"wall": [], "cpu": [], "daemon": []}
        os.kill(daemon.proc.pid, signal.SIGUSR1)
        for _ in range(args.runs):
            listing(into)
            ps(into)
        os.kill(daemon.proc.pid, signal.SIGUSR2)
    print(f"profile of {args.runs} lists and {args.runs} ps with {len(ids)} live: {out}",
          file=sys.stderr)


def run(args: argparse.Namespace) -> dict[str, Any]:
    _raise_nofile()
    with ExitStack() as stack:
        base_tree = (Path(args.base_tree) if args.base_tree
                     else stack.enter_context(exported(args.base)))
        bins = {"base": stack.enter_context(installed_cli(base_tree)),
                "this": stack.enter_context(installed_cli())}
        daemons: dict[str, Daemon] = {}
        ids: dict[str, list[str]] = {}
        for name, tree in (("base", base_tree), ("this", None)):
            daemons[name] = Daemon(tree=tree)
            stack.callback(daemons[name].close)
            ids[name] = _fill(daemons[name], name, args.live, tree)
            stack.callback(stop_all, daemons[name], ids[name])
        time.sleep(args.settle)
        timed: dict[str, Callable[[Sample], None]] = {}
        for d in ("base", "this"):
            for c in ("base", "this"):
                timed[f"ps client {c} -> daemon {d}"] = _timed_cli(
                    daemons[d], [str(bins[c] / "nonoctl"), "ps"])
            conn = Connection.open(daemons[d].socket, timeout=60)
            stack.callback(conn.close)
            timed[f"list (kept connection) -> daemon {d}"] = _timed_list(daemons[d], conn)
        samples: dict[str, Sample] = {k: {"wall": [], "cpu": [], "daemon": []} for k in timed}
        order = list(timed)
        for i in range(args.warmup + args.runs):
            for key in (order if i % 2 == 0 else order[::-1]):
                timed[key](samples[key])
        rows = []
        for key, s in samples.items():
            rows.append({"what": key,
                         **{f"{k}_p50_ms": percentile(v[args.warmup:], 0.5)
                            for k, v in s.items()},
                         "samples": {k: [round(x, 3) for x in v] for k, v in s.items()}})
        live = {n: len(v) for n, v in ids.items()}
    return {"machine": machine(), "live": live, "runs": args.runs, "rows": rows,
            "base": args.base_tree or args.base}


def print_table(data: dict[str, Any]) -> None:
    m = data["machine"]
    print(f"# nonoctl ps with live sessions {data['live']} -- {m['date']}, base "
          f"{data['base']}, {data['runs']} runs, load {os.getloadavg()[0]:.1f} at the end")
    print(f"{'':<40} {'wall p50':>9} {'client CPU':>11} {'daemon CPU':>11}  (ms)")
    for r in data["rows"]:
        print(f"{r['what']:<40} {r['wall_p50_ms']:>9.2f} {r['cpu_p50_ms']:>11.2f} "
              f"{r['daemon_p50_ms']:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base-tree", default="", help="a checkout of the base, reaper built")
    parser.add_argument("--base", default="main", help="else: a git revision to export")
    parser.add_argument("--live", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after the fills before timing")
    parser.add_argument("--profile", metavar="OUT",
                        help="instead: this checkout's daemon alone under cProfile (pstats to "
                        "OUT) while --runs lists and ps run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.profile:
        _raise_nofile()
        profile(args)
        return
    emit(run(args), as_json=args.json, table=print_table)


if __name__ == "__main__":
    main()
