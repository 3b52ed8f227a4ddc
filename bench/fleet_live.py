"""Does a launch cost more with many sessions alive? The fleet's launch at 0 and at N live.

One daemon (bench/daemon.py's ``Daemon``): ``--batch`` fleet sessions (``sleep 600`` with a
network namespace and the proxy, bench/daemon.py's ``FLEET_OPTIONS``) launched one at a time
with no other session alive, then stopped; then ``--live`` sessions launched (2 in flight)
and left running, and the same batch again beside them. Per batch: the launch latency's p50
and the CPU per launch of the daemon, of its fork server, of what they reaped (ended
launchers) and of the sessions' own processes (each init and program; ``tree_cpu``), which
the host's load stretches less than the wall time. With ``--base REV``, a daemon of that revision
(``git archive``, bench/daemon_ab.py's ``exported``) first and last, this checkout's twice
between (base / this / this / base).

    .venv/bin/python bench/fleet_live.py [--live 900] [--batch 60] [--base REV] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import emit, machine, percentile
from daemon import Daemon, _launch_fleet, _raise_nofile, failure_kinds, stop_all, tree_cpu
from daemon_ab import exported


def _batch(daemon: Daemon, count: int) -> dict[str, Any]:
    before = tree_cpu(daemon.proc.pid)
    ids, failures, latencies = _launch_fleet(daemon, count, 1, time.monotonic() + 600)
    after = tree_cpu(daemon.proc.pid)
    per = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / max(1, len(ids))
           for k in after}
    sessions = sum(v for k, v in per.items() if k not in ("daemon", "fork server", "reaped"))
    if failures:
        print(f"batch: {failure_kinds(failures)}; first: {failures[0]}", file=sys.stderr,
              flush=True)
    return {"ids": ids, "failed": len(failures), "p50_ms": percentile(latencies, 0.5),
            "daemon_ms": per.get("daemon", 0.0), "fork_server_ms": per.get("fork server", 0.0),
            "reaped_ms": per.get("reaped", 0.0), "sessions_ms": sessions,
            "load": os.getloadavg()[0]}


def one(tree: Path | None, name: str, live: int, batch: int) -> list[dict[str, Any]]:
    daemon = Daemon(tree=tree)
    rows: list[dict[str, Any]] = []
    alive: list[str] = []
    try:
        for want in (0, live):
            if len(alive) < want:
                ids, failures, _ = _launch_fleet(daemon, want - len(alive), 2,
                                                 time.monotonic() + 900)
                alive += ids
                if failures:  # (the fill gives up after more than 10)
                    print(f"{name}: {len(failures)} launches failed filling to {want}: "
                          f"{failure_kinds(failures)}; first: {failures[0]}",
                          file=sys.stderr, flush=True)
            time.sleep(1.0)
            row = _batch(daemon, batch)
            stop_all(daemon, row.pop("ids"))
            rows.append({"tree": name, "live": len(alive), **row})
            print(_line(rows[-1]), file=sys.stderr, flush=True)
        stop_all(daemon, alive)
    finally:
        daemon.close()
    return rows


def _line(row: dict[str, Any]) -> str:
    return (f"{row['tree']:<16} {row['live']:>5} live  p50 {row['p50_ms']:7.1f} ms  daemon "
            f"{row['daemon_ms']:6.2f}  fork server {row['fork_server_ms']:6.2f}  reaped "
            f"{row.get('reaped_ms', 0.0):5.2f}  sessions {row.get('sessions_ms', 0.0):6.2f} "
            "ms/launch  "
            f"failed {row['failed']}  load {row['load']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--live", type=int, default=900)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--base", default="", help="git revision to compare against")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _raise_nofile()
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        base = stack.enter_context(exported(args.base)) if args.base else None
        order = ([(base, f"base ({args.base})"), (None, "this checkout"),
                  (None, "this checkout"), (base, f"base ({args.base})")]
                 if base is not None else [(None, "this checkout")])
        for tree, name in order:
            rows += one(tree, name, args.live, args.batch)
    data = {"machine": machine(), "live": args.live, "batch": args.batch, "rows": rows}
    emit(data, as_json=args.json, table=lambda d: print(
        f"# fleet launches at 0 and {d['live']} live -- {d['machine']['date']}, "
        f"{d['batch']} each, one in flight\n" + "\n".join(_line(r) for r in d["rows"])))


if __name__ == "__main__":
    main()
