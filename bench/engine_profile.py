"""Where does one launch of `/bin/true` through our engine spend its time?

Measured from outside the engine, with the policy of bench/launch.py (/usr and /etc read,
network blocked, every layer on), in four parts:

1. ``build_plan`` in the parent, alone, and what it calls (mount compilation, Landlock ABI
   probe and ruleset, seccomp program), plus the msgpack encoding of the plan.
2. End-to-end p50 through the normal (uninstrumented) fork server, and ablations: the same
   launch with one layer taken out of the plan (seccomp, Landlock, the network namespace, and
   all three), to price each layer including costs no timestamp shows (namespace teardown);
   variants run interleaved, one launch each per round.
3. The critical path of a launch, from timestamps taken inside an instrumented fork server and
   its children (bench/_probe.py: wraps the engine's ``_step`` runner, fork, mount, unshare,
   posix_spawn...; a record costs a few microseconds, no syscall).
4. Every recorded step with its median duration, and what a warm launcher (when the engine has
   one) did ahead of time, off the critical path.

    .venv/bin/python bench/engine_profile.py [--runs 100] [--warmup 10] [--cold] [--json]

``--cold`` asks a fork server that keeps warm launchers not to (if it has that switch), to see
the full cold path. The probe follows the engine's internals by name; a step it does not know
still shows up through ``_step``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import _probe
import msgspec
import trio
from _common import ENV, POLICY, TRUE, fork_server, machine, median, percentile

from nonod.sandbox import LaunchRequest, _api, _landlock, _libc, _plan, _seccomp
from nonod.sandbox._launcher import LaunchPlan
from nonod.sandbox._plan import build_plan

pct = percentile
med = median


def request(i: int = 0) -> LaunchRequest:
    argv = (TRUE, f"{_probe.TAG.decode()}{i}") if i else (TRUE,)
    return LaunchRequest(argv=argv, cwd="/", env=tuple(ENV.items()))


def ms(ns: int) -> float:
    return ns / 1e6


# --- 1. build_plan -------------------------------------------------------------------------


def profile_build_plan(n: int) -> dict[str, Any]:
    """Time build_plan and the functions it calls, by wrapping them where _plan finds them."""
    acc: dict[str, list[float]] = defaultdict(list)
    targets: list[tuple[Any, str, str]] = [
        (_plan, "sanitize_env", "sanitize_env"),
        (_plan, "compile_mounts", "compile_mounts"),
        (_landlock, "probe_abi", "landlock probe_abi"),
        (_landlock, "compile_plan", "landlock compile_plan"),
        (_seccomp, "build_filter", "seccomp build_filter"),
        (_plan, "find_executable", "find_executable"),
    ]
    saved: list[tuple[Any, str, Any]] = []

    def timer(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[label].append(ms(time.perf_counter_ns() - t0))
        return wrapper

    for mod, name, label in targets:
        real = getattr(mod, name, None)
        if real is not None:
            saved.append((mod, name, real))
            setattr(mod, name, timer(real, label))
    encoder = msgspec.msgpack.Encoder()
    try:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            plan, _report = build_plan(POLICY, request())
            t1 = time.perf_counter_ns()
            data = encoder.encode(plan)
            t2 = time.perf_counter_ns()
            acc["build_plan (total)"].append(ms(t1 - t0))
            acc["msgpack encode"].append(ms(t2 - t1))
    finally:
        for mod, name, real in saved:
            setattr(mod, name, real)
    return {"calls": n, "plan_bytes": len(data), "mounts": len(plan.mounts),
            "seccomp_bytes": len(plan.seccomp),
            "median_ms": {k: med(v) for k, v in acc.items()}}


# --- 2. ablations --------------------------------------------------------------------------

NO_NET = ~_libc.CLONE_NEWNET

PAUSE = 0.03
# (name, change to the plan, idle seconds before each launch, outside the timing)
VARIANTS: list[tuple[str, Callable[[LaunchPlan], LaunchPlan], float]] = [
    ("all layers (as bench/launch.py)", lambda p: p, 0.0),
    ("without the seccomp filter", lambda p: msgspec.structs.replace(p, seccomp=b""), 0.0),
    ("without Landlock", lambda p: msgspec.structs.replace(p, landlock=None), 0.0),
    ("without the network namespace",
     lambda p: msgspec.structs.replace(p, ns_flags=p.ns_flags & NO_NET, loopback=False), 0.0),
    ("without all three", lambda p: msgspec.structs.replace(
        p, seccomp=b"", landlock=None, ns_flags=p.ns_flags & NO_NET, loopback=False), 0.0),
    (f"all layers, {PAUSE * 1000:.0f} ms idle before each launch (a warm launcher's refill "
     "has finished; the CPUs have gone idle)", lambda p: p, PAUSE),
]


@contextmanager
def patched(obj: object, name: str, value: object) -> Iterator[None]:
    """Replace ``obj.name`` for the duration (the engine looks these up at call time)."""
    real = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, real)


async def ablations(runs: int, warmup: int, cold: bool) -> list[dict[str, Any]]:
    """Each variant ``runs`` times, interleaved round by round (rotating order), so that drift
    on a shared machine lands on every variant alike."""
    samples: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}

    def planner(change: Callable[[LaunchPlan], LaunchPlan]) -> Callable[..., Any]:
        def variant(*args: Any, **kwargs: Any) -> Any:
            plan, report = build_plan(*args, **kwargs)
            return change(plan), report
        return variant

    planners = [(name, planner(change), pause) for name, change, pause in VARIANTS]
    async with fork_server(cold=cold) as launcher:
        gc.collect()
        gc.disable()
        try:
            for i in range(warmup + runs):
                k = i % len(planners)
                for name, plan_fn, pause in planners[k:] + planners[:k]:
                    if pause:
                        time.sleep(pause)
                    with patched(_api, "build_plan", plan_fn):
                        t0 = time.perf_counter_ns()
                        proc = await launcher.launch(POLICY, request())
                        status = await proc.wait_exited()
                        t1 = time.perf_counter_ns()
                    if status.code != 0:
                        raise SystemExit(f"{name}: /bin/true ended with {status}")
                    if i >= warmup:
                        samples[name].append(ms(t1 - t0))
                if i % 20 == 19:
                    gc.collect()
        finally:
            gc.enable()
    return [{"variant": name, "p50": med(v), "p95": pct(v, 0.95), "mean": sum(v) / len(v)}
            for name, v in samples.items()]


# --- 3. instrumented launches --------------------------------------------------------------


Record = tuple[str, str, int, int]  # role, label, t0, t1


async def instrumented(runs: int, warmup: int, cold: bool
                       ) -> tuple[dict[int, list[Record]], list[float]]:
    fd, probe_file = tempfile.mkstemp(prefix="nono-bench-probe-", dir="/dev/shm")
    os.ftruncate(fd, _probe.SIZE)
    os.close(fd)
    parent: dict[int, list[Record]] = defaultdict(list)
    totals: list[float] = []
    try:
        async with fork_server(probe_file=probe_file, cold=cold) as launcher:
            current: list[int] = [0]
            encoder = launcher._encoder

            class TimedEncoder:
                def encode(self, obj: Any) -> bytes:
                    t0 = _probe.now()
                    data = encoder.encode(obj)
                    parent[current[0]].append(("parent", "encode plan", t0, _probe.now()))
                    return data

            def timed_build(*args: Any, **kwargs: Any) -> Any:
                t0 = _probe.now()
                result = build_plan(*args, **kwargs)
                parent[current[0]].append(("parent", "build_plan", t0, _probe.now()))
                return result

            pipes: list[int] = [0]  # _read_records calls in this launch: launch pipe, exit pipe
            real_read: Callable[[Any], Awaitable[Any]] = _api._read_records

            class StampedStream:
                """Notes when the first bytes and the EOF of a result pipe reach us."""

                def __init__(self, stream: Any, pipe: str) -> None:
                    self.stream, self.pipe, self.seen = stream, pipe, False

                async def receive_some(self, max_bytes: int) -> bytes:
                    chunk: bytes = await self.stream.receive_some(max_bytes)
                    t = _probe.now()
                    if chunk and not self.seen:
                        self.seen = True
                        parent[current[0]].append(("parent", f"{self.pipe}: first record", t, t))
                    elif not chunk:
                        parent[current[0]].append(("parent", f"{self.pipe}: EOF", t, t))
                    return chunk

            async def stamped_read(stream: Any, **kwargs: Any) -> Any:
                pipes[0] += 1
                name = "launch pipe" if pipes[0] == 1 else "exit pipe"
                return await real_read(StampedStream(stream, name), **kwargs)

            gc.collect()
            gc.disable()
            try:
                with (patched(launcher, "_encoder", TimedEncoder()),
                      patched(_api, "build_plan", timed_build),
                      patched(_api, "_read_records", stamped_read)):
                    for i in range(1, warmup + runs + 1):
                        current[0] = i
                        pipes[0] = 0
                        rec = parent[i]
                        t0 = _probe.now()
                        rec.append(("parent", "launch() called", t0, t0))
                        proc = await launcher.launch(POLICY, request(i))
                        t1 = _probe.now()
                        rec.append(("parent", "launch() returned", t1, t1))
                        status = await proc.wait_exited()
                        t2 = _probe.now()
                        rec.append(("parent", "wait_exited() returned", t2, t2))
                        if status.code != 0:
                            raise SystemExit(f"instrumented launch {i}: {status}")
                        if i > warmup:
                            totals.append(ms(t2 - t0))
            finally:
                gc.enable()
        records = _probe.read_records(probe_file)
    finally:
        os.unlink(probe_file)
    by_launch: dict[int, list[Record]] = defaultdict(list)
    for launch, role, label, t0, t1 in records:
        by_launch[launch].append((role, label, t0, t1))
    for launch, recs in parent.items():
        by_launch[launch].extend(recs)
    kept = {k: v for k, v in by_launch.items() if k == 0 or k > warmup}
    return kept, totals


def timeline(by_launch: dict[int, list[Record]]) -> list[dict[str, Any]]:
    """Median start/end (ms after launch() was called) and summed duration of every
    (role, label), over the launches."""
    starts: dict[tuple[str, str], list[float]] = defaultdict(list)
    ends: dict[tuple[str, str], list[float]] = defaultdict(list)
    durs: dict[tuple[str, str], list[float]] = defaultdict(list)
    counts: dict[tuple[str, str], list[int]] = defaultdict(list)
    for launch, recs in by_launch.items():
        if launch == 0:
            continue
        origin = next((t0 for role, label, t0, _ in recs
                       if role == "parent" and label == "launch() called"), None)
        if origin is None:
            continue
        grouped: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for role, label, t0, t1 in recs:
            grouped[(role, label)].append((t0, t1))
        for key, spans in grouped.items():
            starts[key].append(ms(min(s for s, _ in spans) - origin))
            ends[key].append(ms(max(e for _, e in spans) - origin))
            durs[key].append(ms(sum(e - s for s, e in spans)))
            counts[key].append(len(spans))
    keys = sorted(starts, key=lambda k: (med(starts[k]), -med(ends[k])))
    return [{"role": k[0], "label": k[1], "start": med(starts[k]), "end": med(ends[k]),
             "dur": med(durs[k]), "n": round(med([float(c) for c in counts[k]]))}
            for k in keys]


# Milestones on the critical path, in order; a bucket is the time from the previous milestone
# present in a launch to this one.
MILESTONES: list[tuple[str, str, bool, str]] = [
    # role, label (or prefix ending in ':'), at end?, what the bucket before it is
    ("parent", "build_plan", True, "build_plan in the parent"),
    ("parent", "encode plan", True, "encode the plan"),
    ("server", "plan received", True, "sendmsg -> fork server wakes up with the plan"),
    ("server", "server hand_over", True, "hand the plan to a warm launcher"),
    ("outer", "fork: child running", True, "server decodes the plan, forks (Python fork)"),
    ("outer", "unshare:unshare", False, "outer: close fds, pdeathsig, reset signals"),
    ("outer", "unshare:unshare", True, "unshare(user, mnt, pid, ipc, uts, cgroup, net)"),
    ("outer", "idmap:idmap", True, "uid/gid maps"),
    ("init", "fork: child running", True, "fork the init (pid 1 of the new pid ns)"),
    ("init", "plan received", True, "warm init wakes up with the plan"),
    ("init", "mounts:", True, "init: pdeathsig, setsid, mounts (new root, binds, /proc, /dev); "
     "loopback, keyring when the engine does them before the last mount step (a launcher "
     "prepared for the view: none)"),
    ("init", "guard:", True, "view guard set up: init -> outer -> guard hub -> outer -> init"),
    ("init", "landlock:", False,
     "init: chdir, rlimits, stdio, close_fds, no_new_privs (loopback, keyring if not above)"),
    ("init", "landlock:", True, "Landlock (prepared for the view: restrict_self only)"),
    ("init", "seccomp:install_filter", False, "drop capabilities"),
    ("init", "seccomp:install_filter", True, "seccomp filter"),
    ("init", "posix_spawn (exec done)", True, "posix_spawn + execve of /bin/true"),
    ("init", "waitpid", True, "/bin/true runs and exits; init reaps it"),
    ("parent", "exit pipe: first record", True, "init writes the exit record, parent reads it"),
    ("parent", "exit pipe: EOF", True,
     "parent waits for EOF on the exit pipe (until the init has exited)"),
    ("parent", "wait_exited() returned", True, "wait_exited() returns"),
]


def _milestone(recs: list[Record], role: str, label: str, at_end: bool) -> int | None:
    if label.endswith(":"):
        spans = [(t0, t1) for r, lab, t0, t1 in recs if r == role and lab.startswith(label)]
        if not spans:
            return None
        return max(t1 for _, t1 in spans) if at_end else min(t0 for t0, _ in spans)
    for r, lab, t0, t1 in recs:
        if r == role and lab == label:
            return t1 if at_end else t0
    return None


def buckets(by_launch: dict[int, list[Record]]) -> list[dict[str, Any]]:
    per: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []
    for launch, recs in by_launch.items():
        if launch == 0:
            continue
        prev = next((t0 for r, lab, t0, _ in recs
                     if r == "parent" and lab == "launch() called"), None)
        if prev is None:
            continue
        for role, label, at_end, what in MILESTONES:
            t = _milestone(recs, role, label, at_end)
            if t is None:
                continue
            if what not in order:
                order.append(what)
            per[what].append(ms(t - prev))
            prev = t
    total = sum(med(per[w]) for w in order) or 1.0
    return [{"what": w, "p50": med(per[w]), "share": med(per[w]) / total} for w in order]


def off_path(by_launch: dict[int, list[Record]]) -> list[dict[str, Any]]:
    """Records of launch 0: a warm launcher's preparation before it had a plan."""
    durs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for role, label, t0, t1 in by_launch.get(0, []):
        if role in ("server",):
            continue
        durs[(role, label)].append(ms(t1 - t0))
    return [{"role": k[0], "label": k[1], "p50": med(v), "n": len(v)}
            for k, v in sorted(durs.items(), key=lambda kv: -med(kv[1]))]


# --- report --------------------------------------------------------------------------------


def print_report(data: dict[str, Any]) -> None:
    h = data["machine"]
    print(f"# engine profile, /bin/true -- {h['date']}, kernel {h['kernel']}, nproc {h['nproc']}, "
          f"Python {h['python']}, uid {h['uid']}, load {h['loadavg_1m']:.2f}")
    mode = "cold (warm launchers off)" if data["cold"] else "as the engine ships"
    print(f"# engine {h['engine']}; {data['runs']} runs per measurement after {data['warmup']} "
          f"warm-up runs; fork server {mode} (engine has warm launchers: {h['warm_launchers']})")
    bp = data["build_plan"]
    print(f"\n1. build_plan in the parent (median of {bp['calls']} calls; plan "
          f"{bp['plan_bytes']} bytes, {bp['mounts']} mount ops, seccomp {bp['seccomp_bytes']} B)")
    for name, value in sorted(bp["median_ms"].items(), key=lambda kv: -kv[1]):
        print(f"   {value:8.3f} ms  {name}")
    print("\n2. end to end, uninstrumented fork server (launch + wait_exited), with ablations")
    base = data["ablations"][0]["p50"] if data["ablations"] else float("nan")
    print(f"   {'p50 ms':>8} {'p95 ms':>8} {'vs all':>8}  variant")
    for row in data["ablations"]:
        print(f"   {row['p50']:8.2f} {row['p95']:8.2f} {row['p50'] - base:+8.2f}  {row['variant']}")
    inst = data["instrumented_p50"]
    print(f"\n3. critical path, instrumented fork server (its p50: {inst:.2f} ms; the probe's "
          "own cost is the difference with the first row above)")
    print(f"   {'p50 ms':>8} {'share':>6}  bucket (time since the previous milestone)")
    total = 0.0
    for row in data["buckets"]:
        total += row["p50"]
        print(f"   {row['p50']:8.3f} {row['share'] * 100:5.1f}%  {row['what']}")
    print(f"   {total:8.3f}         sum of bucket medians")
    print("\n4. every record (median over launches; ms after launch() was called; "
          "dur = summed over n calls)")
    print(f"   {'start':>7} {'end':>7} {'dur':>7} {'n':>3}  {'process':<10} what")
    for row in data["timeline"]:
        print(f"   {row['start']:7.3f} {row['end']:7.3f} {row['dur']:7.3f} {row['n']:>3}  "
              f"{row['role']:<10} {row['label']}")
    if data["off_path"]:
        print("\n   ahead of time (a warm launcher preparing, before a plan exists; p50 ms):")
        for row in data["off_path"]:
            print(f"   {row['p50']:7.3f} {row['n']:>4}x  {row['role']:<10} {row['label']}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bp = profile_build_plan(args.plan_calls)
    abl = await ablations(args.runs, args.warmup, args.cold)
    by_launch, totals = await instrumented(args.runs, args.warmup, args.cold)
    return {
        "machine": machine(),
        "runs": args.runs,
        "warmup": args.warmup,
        "cold": args.cold,
        "build_plan": bp,
        "ablations": abl,
        "instrumented_p50": med(totals),
        "buckets": buckets(by_launch),
        "timeline": timeline(by_launch),
        "off_path": off_path(by_launch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Where our launch time goes.")
    parser.add_argument("--runs", type=int, default=100, help="launches per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed launches first")
    parser.add_argument("--plan-calls", type=int, default=500, help="build_plan calls to time")
    parser.add_argument("--cold", action="store_true",
                        help="turn a fork server's warm launchers off (if it has them)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.runs + args.warmup > 900:
        parser.error("--runs must be >= 1, --warmup >= 0, and runs + warmup <= 900")
    data = trio.run(run, args)
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        print()
    else:
        print_report(data)


if __name__ == "__main__":
    main()
