"""The session's init, A/B in one run: ``nono-reaper`` (the C init every session's init
becomes once its program runs) against the Python init it replaces (the same fork server
with ``serve(reaper=-1)``).

For each init and each policy (bench/launch.py's small one; the daemon's: the default
profile with --allow-cwd --block-net, which brings the creation guard, anchors, masks):

  launch   ``/bin/true`` start to exit through the engine, p50 and p95; the four variants
           run interleaved, one launch each per round, so the machine's noise hits all alike
  idle     ``--sessions`` sessions of ``sleep 600`` at once: processes and PSS below the
           fork server, minus the same before they started, per session; processes counted
           besides the program

    .venv/bin/python bench/engine_idle.py [--runs 100] [--warmup 10] [--sessions 50] [--json]
                                          [--before DIR]

``--before DIR`` adds a third contender, ``before``: the same fork server (with
``nono-reaper``) run from the source tree DIR, e.g. the base commit exported with
``git archive`` and its reaper built there (``make nonod/sandbox/nono-reaper``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio
from _common import ENV, POLICY, TRUE, fork_server, machine, percentile
from daemon import daemon_policy, mem

from nonod.policy import ResolvedPolicy
from nonod.sandbox import Launcher, LaunchRequest

SMALL = (POLICY, LaunchRequest(argv=(TRUE,), cwd="/", env=tuple(ENV.items())))


def _below(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out: list[int] = []
    todo = list(kids.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(kids.get(child, ()))
    return out


async def launch_p50(launchers: dict[str, Launcher], policies: dict[str, tuple[
        ResolvedPolicy, LaunchRequest]], runs: int, warmup: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {f"{i}/{p}": [] for i in launchers for p in policies}
    names = list(samples)
    for n in range(warmup + runs):
        k = n % len(names)
        for name in names[k:] + names[:k]:
            init, pol = name.split("/")
            policy, request = policies[pol]
            t0 = time.perf_counter()
            proc = await launchers[init].launch(policy, request)
            status = await proc.wait_exited()
            elapsed = (time.perf_counter() - t0) * 1000
            if status.code != 0:
                raise SystemExit(f"{name}: /bin/true failed: {status}")
            if n >= warmup:
                samples[name].append(elapsed)
        if n % 20 == 19:
            gc.collect()
    return {name: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95)}
            for name, v in samples.items()}


async def idle(launcher: Launcher, server_pid: int, policy: ResolvedPolicy,
               request: LaunchRequest, sessions: int) -> dict[str, Any]:
    await trio.sleep(1.0)  # warm launchers refilled: the steady state
    before = mem(_below(server_pid))
    sleeper = LaunchRequest(argv=("/bin/sleep", "600"), cwd=request.cwd, env=request.env)
    procs = [await launcher.launch(policy, sleeper) for _ in range(sessions)]
    await trio.sleep(2.0)  # every init has become what it stays as
    loaded = mem(_below(server_pid))
    for proc in procs:
        os.kill(proc.pid, 9)  # the init: its namespace ends with it
    for proc in procs:
        await proc.wait_exited()
    return {"sessions": sessions,
            "processes_besides_program": (loaded["processes"] - before["processes"])
            / sessions - 1,
            "pss_kib": (loaded["pss_mib"] - before["pss_mib"]) * 1024 / sessions,
            "rss_kib": (loaded["rss_mib"] - before["rss_mib"]) * 1024 / sessions}


def _server_pid(launcher: Launcher) -> int:
    return int(launcher._proc.pid)  # the bench looks at the process tree


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="nei-", dir="/tmp"))
    base.chmod(0o755)
    home, work = Path(f"{base}-home"), base / "work"
    work.mkdir()
    (home / "run").mkdir(parents=True, mode=0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run")}
    daemon_like = daemon_policy(SimpleNamespace(work=work, env=env))  # type: ignore[arg-type]
    policies = {"small": SMALL, "daemon": daemon_like}
    try:
        async with contextlib.AsyncExitStack() as stack:
            reaper = await stack.enter_async_context(fork_server())
            launchers = {"reaper": reaper,
                         "python": await stack.enter_async_context(fork_server(pyinit=True))}
            if args.before:
                launchers["before"] = await stack.enter_async_context(
                    fork_server(tree=args.before))
            latency = await launch_p50(launchers, policies, args.runs, args.warmup)
            memory = {f"{i}/{p}": await idle(launchers[i], _server_pid(launchers[i]),
                                             *policies[p], args.sessions)
                      for i in launchers for p in policies}
            enforcement = {}
            for pol, (policy, request) in policies.items():
                proc = await reaper.launch(policy, request)
                await proc.wait_exited()
                enforcement[pol] = proc.enforcement.summary()
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return {"machine": machine(), "runs": args.runs, "warmup": args.warmup,
            "enforcement": enforcement, "launch_ms": latency, "idle": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--before", metavar="DIR", help="also a fork server from this tree")
    args = parser.parse_args()
    data = trio.run(bench, args)
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        print()
        return
    m = data["machine"]
    print(f"# nono-reaper vs the Python init -- engine {m.get('engine', '?')}, "
          f"load {m.get('loadavg_1m', 0):.2f}; {args.runs} interleaved launches each")
    for pol, summary in data["enforcement"].items():
        print(f"# {pol} policy: {summary}")
    print(f"{'variant':<16} {'p50 ms':>7} {'p95 ms':>7} {'procs':>6} {'PSS KiB':>8} {'RSS KiB':>8}")
    for name, lat in data["launch_ms"].items():
        idle_ = data["idle"][name]
        print(f"{name:<16} {lat['p50']:>7.2f} {lat['p95']:>7.2f} "
              f"{idle_['processes_besides_program']:>6.2f} {idle_['pss_kib']:>8.0f} "
              f"{idle_['rss_kib']:>8.0f}")


if __name__ == "__main__":
    main()
