"""Where a fleet's launches spend the daemon's event loop: cProfile over the fleet alone.

One daemon of this checkout under bench/_daemon_trace.py (no step wrappers) with its main
thread under cProfile, timed in its CPU time, between the fleet's first launch and its last
answer (``NONO_TRACE_PROFILE_WINDOW``: the daemon's start and the sessions' stop are left
out). Then ``--fleet`` sessions (bench/daemon.py's fleet: ``sleep 600`` with netns + proxy,
``--inflight`` launches in flight), and per session: the CPU of each process of the
daemon's tree (``tree_cpu``), the daemon's main thread's apart from its other threads
(``/proc/<pid>/task/<pid>/schedstat``: the event loop, which runs one piece at a time) and
its threads by name, and the profile's functions by their own and by cumulative time
(``--plain``: the daemon as it runs, no profile: the CPU figures alone).

    .venv/bin/python bench/fleet_profile.py [--fleet 300] [--inflight 4] [--top 40]
                                            [--out /tmp/fleet.prof] [--plain]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import sys
import time
from pathlib import Path

from daemon import Daemon, _launch_fleet, _raise_nofile, failure_kinds, stop_all, tree_cpu


def _thread_ms(pid: int, tid: int) -> float:
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e6


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Each live thread of ``pid``: its name and CPU time so far (ms)."""
    out: dict[int, tuple[str, float]] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
            out[int(task)] = (comm, _thread_ms(pid, int(task)))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _by_name(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
             n: int) -> dict[str, float]:
    """CPU ms per session by thread name over the window (threads that ended meanwhile are
    not counted: the process's total says how much that left out)."""
    out: dict[str, float] = {}
    for tid, (comm, ms) in after.items():
        out[comm] = out.get(comm, 0.0) + (ms - before.get(tid, (comm, 0.0))[1]) / n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _print_hops(steps: Path, n: int) -> None:
    """Each worker-thread job and fsync of the daemon's whole life (its start and the
    sessions' stop too: read the counts), per session of the fleet: calls, the thread's CPU
    and the wall time."""
    samples: dict[str, list[list[float]]] = json.loads(steps.read_text())
    rows = sorted(((k, v) for k, v in samples.items() if k.split(" ", 1)[0] in
                   ("hop", "soon", "fsync")), key=lambda kv: -sum(c for _, c in kv[1]))
    print(f"worker-thread jobs and fsyncs per session ({n}): calls, thread CPU ms, wall ms")
    for name, got in rows:
        print(f"  {len(got) / n:5.2f}  {sum(c for _, c in got) / n:6.3f}  "
              f"{sum(w for w, _ in got) / n:7.3f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fleet", type=int, default=300)
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", default="/tmp/fleet-profile.prof")
    parser.add_argument("--plain", action="store_true",
                        help="no profile, no step timing: the CPU split alone, unwrapped")
    parser.add_argument("--hops", action="store_true",
                        help="no profile: the steps wrapped, and each hand-over to a worker "
                        "thread (to_thread, a Started job) and fsync by its function, with "
                        "the thread's CPU over it, per session")
    args = parser.parse_args()
    _raise_nofile()
    out = Path(args.out).resolve()
    os.environ["NONO_TRACE_PROFILE"] = str(out)
    os.environ["NONO_TRACE_PROFILE_WINDOW"] = "1"
    os.environ["NONO_TRACE_PROFILE_CPU"] = "1"  # the main thread's CPU time, not wall
    os.environ["NONO_TRACE_STEPS"] = "0"  # no step wrappers: their own calls cost much
    if args.hops:
        os.environ["NONO_TRACE_STEPS"] = "1"
        del os.environ["NONO_TRACE_PROFILE"]
    steps = out.with_suffix(".steps.json")
    daemon = Daemon() if args.plain else Daemon(trace=steps)
    ids: list[str] = []
    try:
        pid = daemon.proc.pid
        before, loop0, threads0 = tree_cpu(pid), _thread_ms(pid, pid), _threads(pid)
        if not (args.plain or args.hops):
            os.kill(pid, signal.SIGUSR1)
        began = time.perf_counter()
        ids, failures, _ = _launch_fleet(daemon, args.fleet, args.inflight,
                                         time.monotonic() + 900)
        wall = time.perf_counter() - began
        if not (args.plain or args.hops):
            os.kill(pid, signal.SIGUSR2)
        after, loop1, threads1 = tree_cpu(pid), _thread_ms(pid, pid), _threads(pid)
        n = max(1, len(ids))
        print(f"{len(ids)} launched in {wall:.1f} s ({wall / n * 1000:.2f} ms each), "
              f"{len(failures)} failed {failure_kinds(failures)}; load "
              f"{os.getloadavg()[0]:.1f}")
        per = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / n for k in after}
        print("CPU ms per session: " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05))
        print(f"the daemon's event loop (main thread) {(loop1 - loop0) / n:.2f} ms per session, "
              f"its other threads {per.get('daemon', 0.0) - (loop1 - loop0) / n:.2f}")
        print("the daemon's threads by name, CPU ms per session: " + ", ".join(
            f"{k} {v:.2f}" for k, v in _by_name(threads0, threads1, n).items() if v >= 0.02))
    finally:
        if ids:
            stop_all(daemon, ids)
        daemon.close()  # the profile is written at the daemon's exit
    if args.hops:
        _print_hops(steps, max(1, len(ids)))
    if args.plain or args.hops:
        return
    stats = pstats.Stats(str(out), stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
