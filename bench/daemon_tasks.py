"""The daemon's trio tasks per launch: how many are spawned and how many steps they run.

Starts ``nonod`` through bench/_daemon_tasks.py (a trio instrument counting, by task name,
the tasks spawned, their steps and the event loop's CPU time in them), then launches
``/bin/true`` ``--runs`` times through a kept ``Connection`` (attached, stdio null, to
``Exited``: bench/daemon.py's ``client`` row), or with ``--fleet N`` N detached ``sleep``
sessions with netns + proxy (4 in flight, bench/daemon.py's fleet), stopped afterwards (their
ends count too). Prints per launch: tasks spawned, steps, the loop's CPU in steps (inflated
by the instrument's own clock reads: compare trees, not with bench/daemon_ab.py's figures),
and the busiest tasks. Every task spawned, stepped and cancelled costs the one event loop
that serves every launch; the counts, unlike times, do not depend on the machine's load.

    .venv/bin/python bench/daemon_tasks.py [--runs 150] [--fleet N] [--base REV] [--json]

``--base REV`` first runs the same with the daemon of that git revision (``git archive``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine
from daemon import FLEET_OPTIONS, OPTIONS, Daemon, _launch_fleet, _raise_nofile
from daemon_ab import exported

from nonoctl.client import Connection
from nonod import protocol as p

#: Untimed launches first (the warm launchers, the caches), not counted.
WARMUP = 5


def _attached(daemon: Daemon, runs: int) -> int:
    conn = Connection.open(daemon.socket, timeout=60)
    request = p.Launch(argv=("/bin/true",), cwd=str(daemon.work), env=daemon.env,
                       options=OPTIONS, detach=False, stdio="null")
    try:
        for _ in range(runs):
            conn.send(request)
            while not isinstance(conn.receive(), p.Exited | p.ErrorReply):
                pass
    finally:
        conn.close()
    return runs


def _fleet(daemon: Daemon, count: int) -> int:
    ids, _, _ = _launch_fleet(daemon, count, 4, time.monotonic() + 600)
    with daemon.client() as nono:
        for sid in ids:
            nono.stop(sid, timeout=5, force=True)
    return len(ids)


def one(name: str, tree: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nono-tasks-") as tmp:
        out = Path(tmp) / "tasks.json"
        daemon = Daemon(tree=tree, trace=out, wrapper="_daemon_tasks.py")
        try:
            with daemon.client() as nono:
                for _ in range(WARMUP):
                    session = nono.launch(["sleep", "600"], cwd=str(daemon.work),
                                          env=daemon.env, stdio="null", options=FLEET_OPTIONS)
                    nono.stop(session.id, timeout=5, force=True)
            launched = _fleet(daemon, args.fleet) if args.fleet else _attached(daemon, args.runs)
        finally:
            daemon.close()  # SIGTERM: the counts are written at exit
        counts = json.loads(out.read_text())
    total = launched + WARMUP
    tasks = sorted(counts["cpu_s"], key=lambda k: -counts["cpu_s"][k])
    return {
        "name": name, "launches": launched,
        "spawned_per_launch": sum(counts["spawned"].values()) / total,
        "steps_per_launch": sum(counts["steps"].values()) / total,
        "step_cpu_ms_per_launch": 1000 * sum(counts["cpu_s"].values()) / total,
        "tasks": [{"task": k, "spawned": counts["spawned"].get(k, 0) / total,
                   "steps": counts["steps"].get(k, 0) / total,
                   "cpu_ms": 1000 * counts["cpu_s"][k] / total} for k in tasks[:12]],
    }


def print_table(data: dict[str, Any]) -> None:
    m = data["machine"]
    what = (f"fleet of {data['fleet']} (netns + proxy, 4 in flight), then stopped"
            if data["fleet"] else f"{data['runs']} attached /bin/true, kept connection")
    print(f"# nonod trio tasks per launch -- {m['date']}, load {m['loadavg_1m']:.2f}; {what}")
    for side in data["sides"]:
        print(f"{side['name']}: spawned {side['spawned_per_launch']:.2f}, steps "
              f"{side['steps_per_launch']:.1f}, loop CPU in steps "
              f"{side['step_cpu_ms_per_launch']:.2f} ms (instrumented) per launch")
        for t in side["tasks"]:
            print(f"  {t['spawned']:5.2f} {t['steps']:6.2f} {t['cpu_ms']:7.3f}  {t['task'][:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=150, help="attached launches")
    parser.add_argument("--fleet", type=int, default=0, metavar="N",
                        help="N detached sessions with netns + proxy instead, then stopped")
    parser.add_argument("--base", metavar="REV", help="also the daemon of this git revision")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _raise_nofile()
    sides = []
    if args.base:
        with exported(args.base) as base:
            sides.append(one(f"base ({args.base})", base, args))
    sides.append(one("this checkout", None, args))
    emit({"machine": machine(), "runs": args.runs, "fleet": args.fleet, "sides": sides},
         as_json=args.json, table=print_table)


if __name__ == "__main__":
    main()
