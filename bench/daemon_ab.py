"""The daemon's own cost, before and after a change, measured in one interleaved run.

On a shared 2-vCPU machine two runs minutes apart differ by up to 2x for code neither
touched, so this starts two daemons side by side, one from a git revision (``--base``,
exported with ``git archive`` to a temporary directory) and one from this checkout, and
alternates launches between them (ABAB, then BABA: each sees the same load). The client (this
checkout's ``nonoctl.client``) is the same for both; the requests it sends exist in both.

Per daemon:

  launch     ``/bin/true`` through a kept ``Connection``: ``Launch(detach=False,
             stdio="null")`` to ``Exited`` (bench/daemon.py's ``client`` row), p50/p25/min
  engine     with ``--engine``: the engine in this process (``open_launcher()``: launch +
             wait_exited) with the policy the daemon resolves for that launch
             (bench/daemon.py's ``engine-prof`` row), a third contender in each round: each
             tree's added latency (its p50 less the engine's) read in one run, the row of
             issue 15's table (engine + <= 3 ms)
  cpu        the daemon process's user and system CPU time per launch (all its threads; the
             fork server and launchers are other processes), and its event loop's (the main
             thread's: what runs one piece at a time, the fleet's bound)
  idle       the daemon's PSS once the launches are over (both run, so shared pages split
             between them as between any two processes: compare the two, not with a lone
             daemon's figure)
  ps         with ``--sessions N`` detached ``sleep`` sessions in each, the ``ListSessions``
             round trip as ``nonoctl ps`` sends it (the base may not know ``brief``: then
             both get the full request)
  fleet      with ``--fleet N``: bench/daemon.py's fleet (N sessions with netns + proxy,
             ``--fleet-inflight K`` launches in flight) in each daemon, one daemon at a
             time, base / this / this / base: wall time, the daemon's CPU time per session,
             the launch p50 per 100 sessions, the CPU per session of every process of the
             daemon's tree by kind (bench/daemon.py's ``tree_cpu``); then stopped and pruned

    .venv/bin/python bench/daemon_ab.py [--base main] [--runs 150] [--engine] [--sessions 0]
                                        [--fleet N [--fleet-inflight K]] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import trio
from _common import emit, machine, percentile
from daemon import (
    FLEET_INFLIGHT,
    OPTIONS,
    BenchFailure,
    Daemon,
    _launch_fleet,
    _raise_nofile,
    daemon_policy,
    dropped_connections,
    init_kinds,
    mem,
    tree_cpu,
)
from launch import nonod

from nonoctl.client import Connection, RemoteError
from nonod import protocol as p

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def exported(rev: str) -> Iterator[Path]:
    """``git archive rev`` of this repository in a temporary directory, with its
    ``nono-reaper`` built as ``make`` builds it (the archive has the sources only: without
    the binary the base's fork server falls back to a forked Python init per session, and a
    fleet compares unlike engines), and its native helpers (``libnonolooks.so``,
    ``libnonorelay.so``) where it has their sources: without them the base's kept
    resolution check and the proxy's pump ran in Python while this checkout's did not (the
    base's ``01b kept resolution checked`` twice this tree's CPU: docs/benchmarks.md,
    ``daemon11``)."""
    with tempfile.TemporaryDirectory(prefix="nono-base-") as base:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                                 capture_output=True, timeout=120).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True, timeout=120)
        for source, target in (("nonod/sandbox/reaper.c", "nonod/sandbox/nono-reaper"),
                               ("nonod/profiles/looks.c", "nonod/profiles/libnonolooks.so"),
                               ("nonod/proxy/relay.c", "nonod/proxy/libnonorelay.so")):
            if not (Path(base) / source).exists():
                continue
            built = subprocess.run(["make", "-C", base, target],
                                   capture_output=True, timeout=300, check=False)
            if built.returncode != 0 or not (Path(base) / target).exists():
                raise BenchFailure(f"cannot build {rev}'s {target}: "
                                   + built.stderr.decode(errors="replace")[-500:])
        yield Path(base)


def _cpu_ms(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    return int(fields[11]) * tick, int(fields[12]) * tick


def _loop_cpu_ms(pid: int) -> float:
    """User + system CPU of the daemon's main thread, its event loop (ms): the part of its
    work that runs one piece at a time, whatever the cores (the worker threads' is not)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class Side:
    """One daemon and its kept connection."""

    def __init__(self, name: str, daemon: Daemon) -> None:
        self.name = name
        self.daemon = daemon
        self.conn = Connection.open(daemon.socket, timeout=60)
        self.request = p.Launch(argv=("/bin/true",), cwd=str(daemon.work), env=daemon.env,
                                options=OPTIONS, detach=False, stdio="null")
        self.samples: list[float] = []

    def launch(self) -> float:
        began = time.perf_counter()
        self.conn.send(self.request)
        while True:
            reply = self.conn.receive()
            if isinstance(reply, p.Exited):
                if reply.exit_code != 0:
                    raise BenchFailure(f"{self.name}: /bin/true ended with {reply}")
                return (time.perf_counter() - began) * 1000
            if isinstance(reply, p.ErrorReply):
                raise BenchFailure(f"{self.name}: {reply.message}")


def _list_ms(side: Side, brief: bool, runs: int = 15) -> float:
    request = p.ListSessions(brief=True) if brief else p.ListSessions()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        reply = side.conn.request(request)
        samples.append((time.perf_counter() - began) * 1000)
        if not isinstance(reply, p.SessionList):
            raise BenchFailure(f"{side.name}: ListSessions answered {reply!r}")
    return percentile(samples, 0.5)


def _sessions(side: Side, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        reply = side.conn.request(p.Launch(
            argv=("sleep", "600"), cwd=str(side.daemon.work), env=side.daemon.env,
            options=OPTIONS, detach=True, stdio="null"))
        if not isinstance(reply, p.Launched):
            raise BenchFailure(f"{side.name}: {reply!r}")
        ids.append(reply.session.id)
    return ids


def _stop(side: Side, ids: list[str]) -> None:
    for sid in ids:
        side.conn.request(p.Stop(session=sid, timeout=5, force=True))
    side.conn.request(p.Prune())


def _fleet(side: Side, count: int, inflight: int) -> dict[str, Any]:
    cpu0, loop0 = _cpu_ms(side.daemon.proc.pid), _loop_cpu_ms(side.daemon.proc.pid)
    tree0 = tree_cpu(side.daemon.proc.pid)
    began = time.perf_counter()
    ids, failures, latencies = _launch_fleet(side.daemon, count, inflight,
                                             time.monotonic() + 600)
    wall = time.perf_counter() - began
    cpu1, loop1 = _cpu_ms(side.daemon.proc.pid), _loop_cpu_ms(side.daemon.proc.pid)
    tree = {k: (v - tree0.get(k, 0.0)) / max(1, len(ids))
            for k, v in tree_cpu(side.daemon.proc.pid).items()}
    inits = init_kinds(side.daemon.proc.pid)
    _stop(side, ids)
    blocks = [latencies[i:i + 100] for i in range(0, len(latencies), 100)]
    failed = len(failures)
    if any("connection_lost" in why for why in failures):  # why, from the daemon's log
        failures = failures[:3] + [f"dropped on: {why}"
                                   for why in dropped_connections(side.daemon)[:3]]
    return {"side": side.name, "launched": len(ids), "failed": failed,
            "failures": failures[:6], "wall_s": wall,
            "cpu_ms_per_session": (cpu1[0] + cpu1[1] - cpu0[0] - cpu0[1]) / max(1, len(ids)),
            "loop_cpu_ms_per_session": (loop1 - loop0) / max(1, len(ids)),
            "p50_per_100_ms": [percentile(b, 0.5) for b in blocks],
            "tree_cpu_ms_per_session": tree, "init_kinds": inits}


async def _rounds_with_engine(sides: list[Side], args: argparse.Namespace,
                              engine: list[float]) -> None:
    """The timed rounds with the engine as a third contender: base, this, engine, then the
    order turned round at each round (each sees the same load). The daemons' launches block
    this loop: nothing else runs on it meanwhile."""
    from nonod.sandbox import open_launcher

    policy, request = daemon_policy(sides[1].daemon)
    async with open_launcher() as launcher:
        run_engine = nonod(launcher, policy, request)
        for _ in range(args.warmup):
            await run_engine()

        async def timed_engine() -> None:
            began = time.perf_counter()
            await run_engine()
            engine.append((time.perf_counter() - began) * 1000)

        for i in range(args.runs):
            order: list[Side | None] = [*sides, None]
            for each in (order if i % 2 == 0 else order[::-1]):
                if each is None:
                    await timed_engine()
                else:
                    each.samples.append(each.launch())


def run(args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        base_tree = stack.enter_context(exported(args.base))
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(base_tree / "nonod")],
                       check=True, stdout=subprocess.DEVNULL)
        sides = []
        for name, tree in ((f"base ({args.base})", base_tree), ("this checkout", REPO)):
            daemon = Daemon(tree=tree)
            stack.callback(daemon.close)
            sides.append(Side(name, daemon))
            stack.callback(sides[-1].conn.close)
        for _ in range(args.warmup):
            for side in sides:
                side.launch()
        before = [_cpu_ms(s.daemon.proc.pid) for s in sides]
        loop_before = [_loop_cpu_ms(s.daemon.proc.pid) for s in sides]
        engine: list[float] = []
        if args.engine:
            trio.run(_rounds_with_engine, sides, args, engine)
        else:
            for i in range(args.runs):
                for side in (sides if i % 2 == 0 else sides[::-1]):
                    side.samples.append(side.launch())
        after = [_cpu_ms(s.daemon.proc.pid) for s in sides]
        loop_after = [_loop_cpu_ms(s.daemon.proc.pid) for s in sides]
        for side in sides:
            side.conn.request(p.Prune())
        time.sleep(1.0)  # the warm launchers are ready again: the steady idle state
        out: dict[str, Any] = {"machine": machine(), "base": args.base, "runs": args.runs,
                               "sides": [],
                               "engine_p50": percentile(engine, 0.5) if engine else None}
        for side, b, a, lb, la in zip(sides, before, after, loop_before, loop_after,
                                      strict=True):
            out["sides"].append({
                "name": side.name,
                "p50": percentile(side.samples, 0.5), "p25": percentile(side.samples, 0.25),
                "min": min(side.samples),
                "cpu_user_ms": (a[0] - b[0]) / args.runs, "cpu_sys_ms": (a[1] - b[1]) / args.runs,
                "loop_cpu_ms": (la - lb) / args.runs,
                "idle_pss_mib": mem([side.daemon.proc.pid])["pss_mib"],
            })
        if args.sessions:
            ids = [_sessions(side, args.sessions) for side in sides]
            try:
                for side, entry in zip(sides, out["sides"], strict=True):
                    entry["list_full_ms"] = _list_ms(side, brief=False)
                    try:
                        entry["list_brief_ms"] = _list_ms(side, brief=True)
                    except RemoteError:
                        entry["list_brief_ms"] = None  # the base does not know `brief`
            finally:
                for side, sids in zip(sides, ids, strict=True):
                    _stop(side, sids)
        if args.fleet:
            out["fleet"] = {"count": args.fleet, "inflight": args.fleet_inflight,
                            "runs": [_fleet(side, args.fleet, args.fleet_inflight)
                                     for side in (*sides, *sides[::-1])]}
        return out


def print_table(data: dict[str, Any]) -> None:
    m = data["machine"]
    print(f"# nonod A/B, interleaved -- {m['date']}, load {m['loadavg_1m']:.2f}, "
          f"nproc {m['nproc']}; {data['runs']} launches each")
    print(f"{'daemon':<22} {'p50 ms':>7} {'p25 ms':>7} {'min ms':>7} {'user ms':>8} "
          f"{'sys ms':>7} {'loop ms':>8} {'idle PSS':>9} {'ps full':>8} {'ps brief':>9}")
    for s in data["sides"]:
        full = f"{s['list_full_ms']:.1f}" if s.get("list_full_ms") is not None else "-"
        brief = f"{s['list_brief_ms']:.1f}" if s.get("list_brief_ms") is not None else "-"
        print(f"{s['name']:<22} {s['p50']:>7.2f} {s['p25']:>7.2f} {s['min']:>7.2f} "
              f"{s['cpu_user_ms']:>8.2f} {s['cpu_sys_ms']:>7.2f} {s['loop_cpu_ms']:>8.2f} "
              f"{s['idle_pss_mib']:>8.1f}M "
              f"{full:>8} {brief:>9}")
    a, b = data["sides"]
    engine = data.get("engine_p50")
    if engine is not None:
        print(f"engine, the daemon's policy, in this process: p50 {engine:.2f} ms; added: "
              f"base {a['p50'] - engine:+.2f} ms, this {b['p50'] - engine:+.2f} ms")
    print(f"after/before: p50 {b['p50'] / a['p50']:.3f}, daemon CPU "
          f"{(b['cpu_user_ms'] + b['cpu_sys_ms']) / (a['cpu_user_ms'] + a['cpu_sys_ms']):.3f}, "
          f"event loop's CPU {b['loop_cpu_ms'] / a['loop_cpu_ms']:.3f}")
    fleet = data.get("fleet")
    if fleet:
        print(f"fleet: {fleet['count']} sessions (netns + proxy), {fleet['inflight']} in flight, "
              "one daemon at a time")
        for r in fleet["runs"]:
            print(f"  {r['side']:<22} {r['wall_s']:6.1f} s, {r['launched']} launched, "
                  f"{r['failed']} failed, daemon CPU {r['cpu_ms_per_session']:.2f} ms/session "
                  f"(event loop {r.get('loop_cpu_ms_per_session', 0.0):.2f}); "
                  "p50 per 100: " + " ".join(f"{ms:.0f}" for ms in r["p50_per_100_ms"]))
            tree = sorted(r.get("tree_cpu_ms_per_session", {}).items(), key=lambda kv: -kv[1])
            if tree:
                print("    CPU ms/session by process: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in tree if v >= 0.005))
            if r.get("init_kinds"):
                print("    the live sessions' inits: " + ", ".join(
                    f"{kind} {n}" for kind, n in r["init_kinds"].items()))
            for failure in r.get("failures", ()):
                print(f"    failed: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--runs", type=int, default=150, help="timed launches per daemon")
    parser.add_argument("--warmup", type=int, default=10, help="untimed launches first")
    parser.add_argument("--engine", action="store_true",
                        help="the engine with the daemon's policy as a third contender")
    parser.add_argument("--sessions", type=int, default=0,
                        help="then N idle sessions in each, for the ps round trip")
    parser.add_argument("--fleet", type=int, default=0, metavar="N",
                        help="then a fleet of N sessions in each daemon, one at a time")
    parser.add_argument("--fleet-inflight", type=int, default=FLEET_INFLIGHT, metavar="K")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.fleet:
        _raise_nofile()
    emit(run(args), as_json=args.json, table=print_table)


if __name__ == "__main__":
    main()
