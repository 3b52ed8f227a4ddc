"""Where a launch's time goes inside the daemon: each step of the launch path, timed.

Starts ``nonod`` through bench/_daemon_trace.py (its launch steps wrapped: wall time and the
main thread's CPU time per call, every hop to a worker thread and every ``fsync`` counted),
then launches ``/bin/true`` ``--runs`` times through a kept ``Connection`` (bench/daemon.py's
``client`` row: attached, stdio null, to ``Exited``), or with ``--fleet N`` N detached
``sleep`` sessions with netns + proxy (bench/daemon.py's fleet, one launch in flight), and
prints per step: calls per launch, wall p50 and mean, the main thread's CPU per launch.
Steps nest (``registry.launch`` holds ``prepare``, which holds ``services``...), so the rows
do not add up; ``hop NAME`` rows are worker-thread hops, ``fsync NAME`` rows fsyncs.

    .venv/bin/python bench/daemon_steps.py [--runs 100] [--warmup 10] [--fleet N]
                                           [--base REV [--interleave]] [--timeline] [--json]

``--timeline`` (attached launches) prints, instead of the table, when each step starts and
ends within a launch: offsets in ms from the client's send of the ``Launch`` request (the
client and the daemon read the same CLOCK_MONOTONIC), medians over the launches, in order of
start, and the client's receipt of ``Exited``: what is on the launch's path and what is not.

``--base REV`` first runs the same with the daemon of that git revision (``git archive``),
one daemon after the other (compare the counts, and the times only roughly); with
``--interleave`` both daemons run at once and their launches alternate (ABAB, then BABA, as
bench/daemon_ab.py does), so that both see the same load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine, percentile
from daemon import BenchFailure, Daemon, _launch_fleet, _raise_nofile
from daemon_ab import Side, _cpu_ms, exported

from nonod import protocol as p


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.base:
        return {"trees": [_run(args, None, "this checkout")]}
    with exported(args.base) as base:
        if args.interleave:
            return {"trees": _run_interleaved(args, base)}
        return {"trees": [_run(args, base, f"base ({args.base})"),
                          _run(args, None, "this checkout")]}


class _Traced:
    """One traced daemon (bench/_daemon_trace.py) with its kept connection, warmed up:
    what one tree's row needs, launch by launch."""

    def __init__(self, args: argparse.Namespace, tree: Path | None, name: str,
                 tmp: Path) -> None:
        self.args = args
        self.name = name
        self.trace = tmp / f"steps-{'base' if tree else 'this'}.json"
        self.daemon = Daemon(tree=tree, trace=self.trace)
        try:
            self.side = Side(name, self.daemon)  # bench/daemon_ab.py's attached launches
            for _ in range(args.warmup):
                self.side.launch()
            self.side.conn.request(p.Prune())
            # Only what follows counts: the samples of the warm-up are dropped below.
            self.side.conn.request(p.ListSessions(brief=True))
        except BaseException:
            self.daemon.close()
            raise
        self.cpu0 = _cpu_ms(self.daemon.proc.pid)
        self.samples: list[float] = []
        self.marks: list[tuple[float, float]] = []
        self.cpu1 = self.cpu0

    def launch(self) -> None:
        sent = time.perf_counter()
        self.samples.append(self.side.launch())
        self.marks.append((sent, time.perf_counter()))

    def stop_counting(self) -> None:
        self.cpu1 = _cpu_ms(self.daemon.proc.pid)

    def close(self) -> None:
        try:
            self.side.conn.request(p.Prune())
            self.side.conn.close()
        finally:
            self.daemon.close()

    def result(self, launches: int) -> dict[str, Any]:
        steps: dict[str, list[list[float]]] = json.loads(self.trace.read_text())
        events: list[list[Any]] = json.loads(Path(f"{self.trace}.events").read_text())
        return _result(self.args, self.name, steps, events, self.samples, self.marks,
                       launches, self.cpu0, self.cpu1)


def _run_interleaved(args: argparse.Namespace, base: Path) -> list[dict[str, Any]]:
    """Both daemons at once, their launches alternated (ABAB, then BABA: each sees the same
    load), as bench/daemon_ab.py does; each traced."""
    with tempfile.TemporaryDirectory(prefix="nono-steps-") as tmp:
        sides = [_Traced(args, base, f"base ({args.base})", Path(tmp))]
        try:
            sides.append(_Traced(args, None, "this checkout", Path(tmp)))
            for i in range(args.runs):
                for side in (sides if i % 2 == 0 else sides[::-1]):
                    side.launch()
            for side in sides:
                side.stop_counting()
        finally:
            for side in sides:
                side.close()
        return [side.result(args.runs) for side in sides]


def _run(args: argparse.Namespace, tree: Path | None, name: str) -> dict[str, Any]:
    if not args.fleet:
        with tempfile.TemporaryDirectory(prefix="nono-steps-") as tmp:
            traced = _Traced(args, tree, name, Path(tmp))
            try:
                for _ in range(args.runs):
                    traced.launch()
                traced.stop_counting()
            finally:
                traced.close()
            return traced.result(args.runs)
    with tempfile.TemporaryDirectory(prefix="nono-steps-") as tmp:
        trace = Path(tmp) / "steps.json"
        daemon = Daemon(tree=tree, trace=trace)
        try:
            side = Side(name, daemon)
            conn = side.conn
            for _ in range(args.warmup):
                side.launch()
            conn.request(p.Prune())
            conn.request(p.ListSessions(brief=True))
            cpu0 = _cpu_ms(daemon.proc.pid)
            ids, failures, samples = _launch_fleet(daemon, args.fleet, 1,
                                                   time.monotonic() + 600)
            launches = len(ids)
            cpu1 = _cpu_ms(daemon.proc.pid)
            for sid in ids:
                conn.request(p.Stop(session=sid, timeout=5, force=True))
            if failures:
                raise BenchFailure(f"{len(failures)} failed: {failures[:3]}")
            conn.request(p.Prune())
            conn.close()
        finally:
            daemon.close()
        steps: dict[str, list[list[float]]] = json.loads(trace.read_text())
        events: list[list[Any]] = json.loads(Path(f"{trace}.events").read_text())
    return _result(args, name, steps, events, samples, [], launches, cpu0, cpu1)


def _result(args: argparse.Namespace, name: str, steps: dict[str, list[list[float]]],
            events: list[list[Any]], samples: list[float], marks: list[tuple[float, float]],
            launches: int, cpu0: tuple[float, float], cpu1: tuple[float, float]
            ) -> dict[str, Any]:
    skip = args.warmup
    rows = []
    for step, values in sorted(steps.items(), key=lambda kv: (kv[0][0].isalpha(), kv[0])):
        per_launch = _per_launch(values, skip, args)
        if not per_launch:
            continue
        walls = [w for w, _ in per_launch]
        rows.append({"step": step, "calls": len(per_launch) / launches,
                     "p50_ms": percentile(walls, 0.5), "mean_ms": sum(walls) / len(walls),
                     "wall_per_launch_ms": sum(walls) / launches,
                     "cpu_per_launch_ms": sum(c for _, c in per_launch) / launches})
    return {"tree": name, "machine": machine(), "launches": launches, "fleet": args.fleet,
            "client_p50_ms": percentile(samples, 0.5),
            "daemon_cpu_ms": (cpu1[0] + cpu1[1] - cpu0[0] - cpu0[1]) / launches,
            "steps": rows, "timeline": _timeline(events, marks),
            "path": _path(events, marks)}

#: Where the launch's gate has passed: the init told so (``_api._go``, daemon9's GO gate, not
#: merged: the plan went out before the gate), else the place taken after it.
GATE = "gate passed"
GATE_MARKS = ("11c engine: the gate passed, GO sent", "11b engine: the gate passed, a place")

#: The attached launch's path, cut at steps every launch has once: (segment, from, to), each
#: point ``(step, "start" | "end")``; ``CLIENT`` is the client's send (start) and its receipt
#: of ``Exited`` (end).
PATH = (
    ("request to resolution", ("CLIENT", "start"), ("01 resolution", "start")),
    ("resolution", ("01 resolution", "start"), ("01 resolution", "end")),
    ("to the engine (prepare, audit file, first records)", ("01 resolution", "end"),
     ("10 engine: Launcher.launch", "start")),
    ("engine: Launcher.launch", ("10 engine: Launcher.launch", "start"),
     ("10 engine: Launcher.launch", "end")),
    ("  of which: to the gate passed (plan, fsyncs, checks)",
     ("10 engine: Launcher.launch", "start"), (GATE, "start")),
    ("to the Launched reply", ("10 engine: Launcher.launch", "end"), ("send Launched", "start")),
    ("Launched reply to the end's start", ("send Launched", "start"),
     ("20 finish (all below)", "start")),
    ("end's start to the seal", ("20 finish (all below)", "start"),
     ("21 audit close + seal", "start")),
    ("seal (file, ledger, record)", ("21 audit close + seal", "start"),
     ("21 audit close + seal", "end")),
    ("seal to the Exited reply", ("21 audit close + seal", "end"), ("send Exited", "start")),
    ("Exited reply to the client", ("send Exited", "start"), ("CLIENT", "end")),
)


#: Measured the same way, not on the path's sum: how long after the engine's launch returned
#: the daemon had the program's exit (the engine's report of it, read by its exit watcher).
ASIDE = (
    ("(aside) launch returned to exit read", ("10 engine: Launcher.launch", "end"),
     ("15 engine: wait for the exit", "end")),
    ("(aside) the client's send to the gate passed", ("CLIENT", "start"),
     (GATE, "start")),
    # Which of the gate's waits was the last, launch by launch (the smaller, the later it
    # ended), and when the plan's thread began against the first records (< 0: before).
    # (``build_plan`` itself, in its worker thread: the hop's end is the loop's turn after.)
    ("(aside) the plan made to the gate passed", ("11 engine: build_plan", "end"),
     (GATE, "start")),
    ("(aside) the audit directory's fsync ended to the gate passed",
     ("soon audit directory fsync", "end"), (GATE, "start")),
    ("(aside) the first records begun to the gate passed",
     ("08 first records + fsync", "start"), (GATE, "start")),
    ("(aside) the audit file's fsync ended to the gate passed",
     ("soon audit fsync", "end"), (GATE, "start")),
    # (daemon10 on, with a claimed slot: the directories' fsync begins at the claim, and
    # ``session.json`` is written in a thread of its own beside the file's fsync.)
    ("(aside) the record beside ended to the gate passed",
     ("soon audit record beside", "end"), (GATE, "start")),
    ("(aside) the first records begun to the plan begun",
     ("08 first records + fsync", "start"), ("11 engine: build_plan", "start")),
    # 0 but with a GO gate: then how long the launcher worked before the gate passed.
    ("(aside) the plan about to go out (a place) to the gate passed",
     ("11b engine: the gate passed, a place", "start"), (GATE, "start")),
)


def _path(events: list[list[Any]], marks: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """``PATH``'s segments, each measured within each launch (from that launch's first call
    of a step), medians in ms: the launch's critical path, cut in pieces that add up."""
    if not marks:
        return []
    bounds = [sent for sent, _ in marks] + [marks[-1][1] + 1.0]
    firsts: list[dict[str, tuple[float, float]]] = [{} for _ in marks]
    for name, start, end in sorted(events, key=lambda e: e[1]):
        for i, (sent, _) in enumerate(marks):
            if sent <= start < bounds[i + 1]:
                firsts[i].setdefault(name, (start, end))
                break
    for i, (sent, got) in enumerate(marks):
        firsts[i]["CLIENT"] = (sent, got)
        gate = next((firsts[i][m] for m in GATE_MARKS if m in firsts[i]), None)
        if gate is not None:
            firsts[i][GATE] = gate
    rows = []
    for segment, (a, a_at), (b, b_at) in (*PATH, *ASIDE):
        spans = [(f[b][b_at == "end"] - f[a][a_at == "end"]) * 1000
                 for f in firsts if a in f and b in f]
        if spans:
            rows.append({"segment": segment, "p50_ms": percentile(spans, 0.5),
                         "launches": len(spans)})
    return rows


def _timeline(events: list[list[Any]], marks: list[tuple[float, float]]
              ) -> list[dict[str, Any]]:
    """Each step's start and end within the launch it falls in (from the client's send of
    that launch's request to its next send), medians in ms; ``calls`` per launch."""
    if not marks:
        return []
    bounds = [sent for sent, _ in marks] + [marks[-1][1] + 1.0]
    per: dict[str, list[tuple[float, float]]] = {}
    for name, start, end in events:
        for i, (sent, _) in enumerate(marks):
            if sent <= start < bounds[i + 1]:
                per.setdefault(name, []).append(((start - sent) * 1000, (end - sent) * 1000))
                break
    rows = [{"step": name, "calls": len(spans) / len(marks),
             "start_ms": percentile([s for s, _ in spans], 0.5),
             "end_ms": percentile([e for _, e in spans], 0.5)}
            for name, spans in per.items()]
    rows.append({"step": "CLIENT has Exited", "calls": 1.0, "start_ms": 0.0,
                 "end_ms": percentile([(got - sent) * 1000 for sent, got in marks], 0.5)})
    return sorted(rows, key=lambda r: (r["start_ms"], r["end_ms"]))


def _per_launch(values: list[list[float]], skip: int,
                args: argparse.Namespace) -> list[list[float]]:
    """The samples of the timed launches: each step's first ``skip`` launches' worth are
    the warm-up's (a step called k times per launch drops k * skip: the same count per
    launch is assumed; hops and fsyncs outside launches, e.g. the heartbeat, stay in)."""
    total_launches = skip + (args.fleet or args.runs)
    per = max(1, round(len(values) / total_launches))
    return values[per * skip:]


def print_table(data: dict[str, Any]) -> None:
    for tree in data["trees"]:
        _print_tree(tree)
        if data.get("timeline"):
            _print_timeline(tree)
            _print_path(tree)


def _print_path(data: dict[str, Any]) -> None:
    print(f"# the launch's path, {data['tree']}: each segment within each launch (p50 ms)")
    total = 0.0
    for r in data["path"]:
        aside = r["segment"].startswith(("(aside)", "  of which"))
        total += 0.0 if aside else r["p50_ms"]
        print(f"{r['segment'][:52]:<52} {r['p50_ms']:>8.3f}  ({r['launches']} launches)")
    print(f"{'sum of the segments (but the aside)':<52} {total:>8.3f}")


def _print_timeline(data: dict[str, Any]) -> None:
    print(f"# timeline, {data['tree']}: ms from the client's send of the request (medians)")
    print(f"{'step':<48} {'calls':>6} {'start':>8} {'end':>8}")
    for r in data["timeline"]:
        print(f"{r['step'][:48]:<48} {r['calls']:>6.2f} {r['start_ms']:>8.3f} "
              f"{r['end_ms']:>8.3f}")


def _print_tree(data: dict[str, Any]) -> None:
    m = data["machine"]
    what = (f"fleet of {data['fleet']} (netns + proxy, 1 in flight)" if data["fleet"]
            else "attached /bin/true, kept connection")
    print(f"# nonod launch steps, {data['tree']} -- {m['date']}, load {m['loadavg_1m']:.2f}, "
          f"nproc {m['nproc']}; {data['launches']} launches: {what}")
    print(f"# client p50 {data['client_p50_ms']:.2f} ms; daemon process CPU "
          f"{data['daemon_cpu_ms']:.2f} ms per launch (all threads)")
    print(f"{'step':<48} {'calls':>6} {'p50 ms':>8} {'mean ms':>8} {'wall/l':>8} "
          f"{'cpu/l':>7}")
    for r in data["steps"]:
        print(f"{r['step'][:48]:<48} {r['calls']:>6.2f} {r['p50_ms']:>8.3f} "
              f"{r['mean_ms']:>8.3f} {r['wall_per_launch_ms']:>8.3f} "
              f"{r['cpu_per_launch_ms']:>7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--fleet", type=int, default=0, metavar="N",
                        help="N detached sessions with netns + proxy instead")
    parser.add_argument("--base", metavar="REV",
                        help="first the same with the daemon of this git revision")
    parser.add_argument("--interleave", action="store_true",
                        help="with --base: both daemons at once, launches alternated")
    parser.add_argument("--timeline", action="store_true",
                        help="also each step's start and end within a launch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _raise_nofile()  # a fleet's sessions hold descriptors of the daemon (it inherits this)
    data = run(args)
    data["timeline"] = args.timeline
    emit(data, as_json=args.json, table=print_table)


if __name__ == "__main__":
    main()
