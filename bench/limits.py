"""What resource limits cost: the cgroup step, launch latency with and without a cgroup per
session, and ``ps --json`` (which reads every live session's cgroup) with many sessions.

  step      the daemon's part alone, in this process: ``SessionCgroups.create`` (a group in
            each hierarchy, limits written) and ``remove_group`` (read the totals, rmdir)
  engine    ``/bin/true`` through the engine alone (one ``open_launcher``), one run with and
            one without a cgroup per round: with, the daemon's cgroup work is timed too
            (groups made and limits written, a warm launcher's group adopted, the launch,
            the exit) but not the removal, which the daemon does after reporting the end
  launch    ``/bin/true`` through two real daemons, one with ``[limits] cgroups = false``:
            ``Client.launch`` (detached, stdio null, with --memory 256M --max-processes 256
            where cgroups are on) + ``Client.wait``; one run of each per round (interleaved)
  ps        ``ListSessions`` over a kept-open connection with ``--sessions`` detached
            ``sleep 600`` sessions live, in each daemon

    .venv/bin/python bench/limits.py [--runs 200] [--warmup 20] [--sessions 500] [--pause MS]
                                     [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
from _common import POLICY, TRUE, machine, percentile
from daemon import Daemon

from nonod import protocol as p
from nonod.policy import Limits
from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sessions._limits import SessionCgroups, cgroup_limits, remove_group

LIMITED = p.LaunchOptions(allow_cwd=True, block_net=True, memory=256 << 20, max_processes=256)
PLAIN = p.LaunchOptions(allow_cwd=True, block_net=True)


def stats(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 0.5) * 1e3, "p95_ms": percentile(samples, 0.95) * 1e3,
            "n": len(samples)}


def step(runs: int) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="ndl-"))
    groups = SessionCgroups.open(state)
    if groups.backend is None:
        return {"unavailable": groups.why}
    policy = msgspec.structs.replace(POLICY, limits=Limits(memory=256 << 20, max_processes=256),
                                     max_processes=256)
    create: list[float] = []
    remove: list[float] = []
    for i in range(runs):
        t0 = time.perf_counter()
        group, _ = groups.create(f"s{i}", policy)
        t1 = time.perf_counter()
        assert group is not None
        trio.run(remove_group, group)
        create.append(t1 - t0)
        remove.append(time.perf_counter() - t1)
    groups.close()
    return {"backend": groups.backend.describe(), "create": stats(create),
            "remove": stats(remove)}


def engine(runs: int, warmup: int, pause: float) -> dict[str, Any]:
    async def run() -> dict[str, list[float]]:
        state = Path(tempfile.mkdtemp(prefix="ndl-"))
        groups = SessionCgroups.open(state)
        policy = msgspec.structs.replace(
            POLICY, limits=Limits(memory=256 << 20, max_processes=256), max_processes=256)
        wanted = cgroup_limits(policy)[0]
        samples: dict[str, list[float]] = {"cgroups": [], "no-cgroups": []}
        async with open_launcher() as launcher:
            for i in range(warmup + runs):
                await trio.sleep(pause)
                t0 = time.perf_counter()
                proc = await launcher.launch(POLICY, LaunchRequest(argv=(TRUE,), cwd="/"))
                await proc.wait_exited()
                await trio.sleep(pause)
                t1 = time.perf_counter()
                group, layers = groups.create(f"s{i}", policy)
                assert group is not None
                request = LaunchRequest(argv=(TRUE,), cwd="/", cgroup_procs=group.procs,
                                        cgroup_pool=groups.pool(), cgroup_limits=wanted)
                proc = await launcher.launch(POLICY, request)
                if proc.cgroup:
                    group, layers = groups.adopt(proc.cgroup, group, layers)
                await proc.wait_exited()
                t2 = time.perf_counter()
                await remove_group(group)
                if i >= warmup:
                    samples["no-cgroups"].append(t1 - t0 - pause)
                    samples["cgroups"].append(t2 - t1)
        groups.close()
        return samples

    return {name: stats(values) for name, values in trio.run(run).items()}


def launches(on: Daemon, off: Daemon, runs: int, warmup: int, pause: float
             ) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"cgroups": [], "no-cgroups": []}
    with on.client() as a, off.client() as b:
        for i in range(warmup + runs):
            for name, daemon, client, options in (("cgroups", on, a, LIMITED),
                                                  ("no-cgroups", off, b, PLAIN)):
                time.sleep(pause)
                t0 = time.perf_counter()
                session = client.launch(["/bin/true"], cwd=str(daemon.work), env=daemon.env,
                                        stdio="null", options=options)
                client.wait(session.id)
                if i >= warmup:
                    samples[name].append(time.perf_counter() - t0)
        a.prune()
        b.prune()
    return {name: stats(values) for name, values in samples.items()}


def listing(daemon: Daemon, sessions: int, options: p.LaunchOptions, runs: int
            ) -> dict[str, Any]:
    with daemon.client() as client:
        for _ in range(sessions):
            client.launch(["/bin/sleep", "600"], cwd=str(daemon.work), env=daemon.env,
                          stdio="null", options=options)
        conn = client._fresh()
        samples = []
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                reply = conn.request(p.ListSessions(all=False))
                samples.append(time.perf_counter() - t0)
                assert isinstance(reply, p.SessionList)
        finally:
            conn.close()
        with_usage = sum(1 for s in reply.sessions if s.usage is not None)
    return {**stats(samples), "sessions": len(reply.sessions), "with_usage": with_usage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--pause", type=float, default=0.0, metavar="MS",
                        help="idle time before each launch (sparse launches)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": machine(), "step": step(args.runs),
                           "engine": engine(args.runs, args.warmup, args.pause / 1e3)}
    on = Daemon()
    off = Daemon("[limits]\ncgroups = false\n")
    try:
        out["launch"] = launches(on, off, args.runs, args.warmup, args.pause / 1e3)
        if args.sessions:
            out["ps"] = {"cgroups": listing(on, args.sessions, LIMITED, 30)}
            on.close()
            out["ps"]["no-cgroups"] = listing(off, args.sessions, PLAIN, 30)
    finally:
        on.close()
        off.close()
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(json.dumps(out["machine"]))
    step_data = out["step"]
    if "create" in step_data:
        print(f"cgroup step ({step_data['backend']}): create p50 "
              f"{step_data['create']['p50_ms']:.3f} ms, remove p50 "
              f"{step_data['remove']['p50_ms']:.3f} ms")
    for name, data in out["engine"].items():
        print(f"engine launch+exit {name:11} p50 {data['p50_ms']:.2f} ms  "
              f"p95 {data['p95_ms']:.2f} ms")
    for name, data in out["launch"].items():
        print(f"launch+exit {name:11} p50 {data['p50_ms']:.2f} ms  p95 {data['p95_ms']:.2f} ms")
    for name, data in out.get("ps", {}).items():
        print(f"ps --json, {data['sessions']} sessions, {name:11} p50 {data['p50_ms']:.2f} ms  "
              f"p95 {data['p95_ms']:.2f} ms")


if __name__ == "__main__":
    main()
