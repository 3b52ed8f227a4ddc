"""The idle daemon's memory, before and after a change: lone daemons of two trees, alternating.

PSS splits shared pages between the processes that map them, so two daemons running side by
side (bench/daemon_ab.py) each look smaller than one alone. This starts one daemon at a time,
from a git revision (``--base``, exported with ``git archive``) or from this checkout, in
alternating order (AB, BA, ...), and takes bench/daemon.py's memory snapshots of each:

  fresh      before any launch: the daemon and its fork server
  idle       1 s after one ``/bin/true`` launch (exited, pruned): warm launchers wait below
             the fork server
  settled    ``--settle`` seconds after that launch (31.5 by default: past the fork server's
             ``[sandbox] warm_idle`` of 30 s), the steady idle state
  worked     ``--settle`` seconds after ``--launches`` more (250 by default, back to back,
             each waited for, then pruned): the idle state of a daemon that has worked, as
             bench/daemon.py's runs leave it (``--launches 0``: not measured); with
             ``--sleeps N``, N live ``sleep 600`` sessions first, stopped and pruned before
             the launches, as bench/daemon.py's memory step runs before its latency runs
             (its 100: the table's "settled after the latency runs")
  fleet      ``--settle`` seconds after a fleet of ``--fleet`` live sessions (300 by default:
             bench/daemon.py's fleet, netns + proxy, two launches in flight, ``sleep 600``),
             all stopped and pruned: what a burst of live sessions leaves (``--fleet 0``: not
             measured)

Printed: the median over ``--rounds`` daemons of each tree (PSS, MiB), the range of the
total, and the medians of anonymous memory alone (PSS of the heaps and their copies, which
no process outside the daemon's tree shares: the steadier figure on a busy host), of the
daemon (``d.anon``) and of the whole tree (``anon``).

    .venv/bin/python bench/idle_ab.py [--base main] [--rounds 3] [--settle 31.5]
                                      [--launches 250] [--sleeps 0] [--fleet 300] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import daemon as fleets
from _common import emit, machine
from daemon import OPTIONS, BenchFailure, Daemon, snapshot
from daemon_ab import REPO, exported

STATES = ("fresh", "idle", "settled", "worked", "fleet")
PARTS = ("daemon", "fork_server", "below", "total")


def _launch(daemon: Daemon, count: int) -> float:
    """``count`` launches of ``/bin/true``, each waited for, then pruned; when they ended."""
    with daemon.client() as nono:
        for _ in range(count):
            session = nono.launch(["/bin/true"], cwd=str(daemon.work), env=daemon.env,
                                  stdio="null", options=OPTIONS)
            nono.wait(session.id)
        nono.prune()
    return time.monotonic()


def _sleeps(daemon: Daemon, count: int) -> None:
    """``count`` live ``sleep 600`` sessions (bench/daemon.py's memory step), then stopped
    and pruned."""
    with daemon.client() as nono:
        ids = [nono.launch(["sleep", "600"], cwd=str(daemon.work), env=daemon.env,
                           stdio="null", options=OPTIONS).id for _ in range(count)]
        time.sleep(1.0)
        for sid in ids:
            nono.stop(sid)
        nono.prune()


def _fleet(daemon: Daemon, count: int) -> float:
    """``count`` live sessions (bench/daemon.py's fleet), then all stopped and pruned; when
    they ended."""
    ids, failures, _ = fleets._launch_fleet(daemon, count, fleets.FLEET_INFLIGHT,
                                             time.monotonic() + 600)
    if failures:
        raise BenchFailure(f"{len(failures)} fleet launches failed: {failures[0]}")
    with daemon.client() as nono:
        for sid in ids:
            nono.stop(sid, timeout=5, force=True)
        nono.prune()
    return time.monotonic()


def _one(tree: Path, settle: float, launches: int, fleet: int, sleeps: int = 0
         ) -> dict[str, Any]:
    daemon = Daemon(tree=tree)
    try:
        time.sleep(1.0)
        out = {"fresh": snapshot(daemon.proc.pid)}
        launched = _launch(daemon, 1)
        time.sleep(1.0)
        out["idle"] = snapshot(daemon.proc.pid)
        time.sleep(max(0.0, launched + settle - time.monotonic()))
        out["settled"] = snapshot(daemon.proc.pid)
        if launches:
            _sleeps(daemon, sleeps)
            launched = _launch(daemon, launches)
            time.sleep(max(0.0, launched + settle - time.monotonic()))
            out["worked"] = snapshot(daemon.proc.pid)
        if fleet:
            launched = _fleet(daemon, fleet)
            time.sleep(max(0.0, launched + settle - time.monotonic()))
            out["fleet"] = snapshot(daemon.proc.pid)
        return out
    finally:
        daemon.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    fleets._raise_nofile()  # the daemons inherit it: a fleet holds many descriptors
    with ExitStack() as stack:
        trees = {f"base ({args.base})": stack.enter_context(exported(args.base)),
                 "this checkout": REPO}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for i in range(args.rounds):
            for name in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
                runs[name].append(_one(trees[name], args.settle, args.launches,
                                       args.fleet, args.sleeps))
    return {"machine": machine(), "base": args.base, "rounds": args.rounds,
            "settle_s": args.settle, "launches": args.launches, "sleeps": args.sleeps,
            "fleet": args.fleet, "runs": runs}


def print_table(data: dict[str, Any]) -> None:
    m = data["machine"]
    print(f"# nonod idle memory A/B, lone daemons alternating -- {m['date']}, load "
          f"{m['loadavg_1m']:.2f}, nproc {m['nproc']}; median of {data['rounds']} daemons "
          f"each, PSS MiB; settled = {data['settle_s']:g} s after the launch; worked = as "
          f"long after {data.get('sleeps', 0)} live sleeps and {data.get('launches', 0)} "
          f"launches more; fleet = as long after "
          f"{data.get('fleet', 0)} live sessions")
    print(f"{'tree':<16} {'state':<8} {'daemon':>7} {'fork srv':>8} {'below':>6} {'procs':>5} "
          f"{'total':>6}  range      d.anon  anon")
    for name, snaps in data["runs"].items():
        for state in STATES:
            if any(state not in s for s in snaps):
                continue
            med = {part: statistics.median(s[state][part]["pss_mib"] for s in snaps)
                   for part in PARTS}
            procs = statistics.median(s[state]["below"]["processes"] for s in snaps)
            totals = [s[state]["total"]["pss_mib"] for s in snaps]
            anon = {part: statistics.median(s[state][part].get("pss_anon_mib", 0.0)
                                            for s in snaps) for part in ("daemon", "total")}
            print(f"{name:<16} {state:<8} {med['daemon']:>7.1f} {med['fork_server']:>8.1f} "
                  f"{med['below']:>6.1f} {procs:>5.0f} {med['total']:>6.1f}  "
                  f"{min(totals):.1f}-{max(totals):.1f}  {anon['daemon']:>6.1f} "
                  f"{anon['total']:>5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="daemons per tree")
    parser.add_argument("--settle", type=float, default=31.5,
                        help="seconds after the launch for the settled snapshot")
    parser.add_argument("--launches", type=int, default=250,
                        help="launches before the worked snapshot (0: none)")
    parser.add_argument("--sleeps", type=int, default=0,
                        help="live sleep sessions before the worked launches (100: as "
                        "bench/daemon.py's memory step)")
    parser.add_argument("--fleet", type=int, default=300,
                        help="live sessions before the fleet snapshot (0: none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    emit(run(args), as_json=args.json, table=print_table)


if __name__ == "__main__":
    main()
