"""Launch latency: `/bin/true` from start to exit, side by side, in one process run.

Contenders (each measured ``--runs`` times after ``--warmup`` unrecorded runs):

  bare-spawn    os.posix_spawn + waitpid: the floor for starting a program from Python
  bare-subproc  subprocess.run(close_fds=True): the same floor through subprocess, as bwrap uses
  bwrap         Debian bubblewrap, a policy close to ours, started with subprocess.run
  nono-py       nono_py.sandboxed_exec (PyPI nono-py), default enforcement_mode="auto"
  nono-py+sc    the same with enforcement_mode="seccomp" (adds its seccomp filter)
  nonod         our engine through the Python API, all layers on, one open_launcher() kept open
  nonod-cold    the same with the fork server's warm launchers turned off (when it has them):
                every launch makes its namespaces, init and root on the critical path

By default the contenders run in sequence: all of one contender's runs back to back, then the
next one, so each contender only pays for itself (its own namespace teardowns included).
``--interleave`` runs each contender once per round instead, in an order that rotates from round
to round. On a small VM that inflates everyone, sandboxes or not (each run then follows another
program's exit and namespace teardown; see docs/benchmarks.md), so the sequential figures are
the fair ones.

``cpu ms`` (sequential order only): CPU time per run, warm-up included, of every process
involved: this one, the programs it waited for, and the fork servers with everything they
reaped (warm launchers made for later runs included, except those still waiting at the
end). The machine's other load inflates it less than it inflates the wall-clock figures.

``--pause MS`` waits before each run (outside the timing): launches as a daemon sees them, far
apart, so a warm launcher is always ready; but an idle CPU also wakes up more slowly.

    .venv/bin/python bench/launch.py [--runs 200] [--warmup 20] [--interleave] [--pause MS]
                                     [--json]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from _common import ENV, POLICY, TRUE, fork_server, has_warm_launchers, machine, percentile

from nonod.policy import ResolvedPolicy
from nonod.sandbox import Launcher, LaunchRequest
from nonod.sandbox._landlock import probe_abi

BWRAP = "/usr/bin/bwrap"
BWRAP_ARGS = (
    "--unshare-all", "--die-with-parent", "--new-session",
    "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
    "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
    "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
)
REQUEST = LaunchRequest(argv=(TRUE,), cwd="/", env=tuple(ENV.items()))

Runner = Callable[[], Awaitable[None]]


class BenchFailure(Exception):
    """A contender did not run /bin/true to a clean exit."""


@dataclass
class Contender:
    name: str
    what: str
    run: Runner
    samples: list[float] = field(default_factory=list)
    error: str = ""
    cpu_ms: float | None = None  # CPU per run, every process involved (sequential order only)


# --- statistics ----------------------------------------------------------------------------


def summarize(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50": percentile(s, 0.50),
        "p95": percentile(s, 0.95),
        "mean": sum(s) / len(s),
        "min": s[0],
        "max": s[-1],
    }


# --- contenders ----------------------------------------------------------------------------


def _check_exit(name: str, status: int) -> None:
    if status != 0:
        raise BenchFailure(f"{name}: /bin/true ended with status {status}")


def bare_spawn() -> Runner:
    async def run() -> None:
        pid = os.posix_spawn(TRUE, [TRUE], ENV)
        _, status = os.waitpid(pid, 0)
        _check_exit("bare-spawn", os.waitstatus_to_exitcode(status))
    return run


def bare_subprocess() -> Runner:
    async def run() -> None:
        proc = subprocess.run([TRUE], env=ENV, close_fds=True, check=False)
        _check_exit("bare-subproc", proc.returncode)
    return run


def bwrap() -> Runner:
    if not os.access(BWRAP, os.X_OK):
        raise BenchFailure(f"{BWRAP} not found (apt-get install bubblewrap)")
    argv = [BWRAP, *BWRAP_ARGS, TRUE]
    probe = subprocess.run(argv, env=ENV, close_fds=True, capture_output=True, check=False)
    if probe.returncode != 0:
        raise BenchFailure(f"bwrap failed (status {probe.returncode}): "
                           f"{probe.stderr.decode(errors='replace').strip()}")

    async def run() -> None:
        proc = subprocess.run(argv, env=ENV, close_fds=True, check=False)
        _check_exit("bwrap", proc.returncode)
    return run


def nono_py(mode: str) -> Runner:
    try:
        import nono_py as nono  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise BenchFailure(f"nono-py is not installed ({exc}); "
                           "`.venv/bin/pip install 'nono-py>=0.16,<0.20'`") from None
    caps = nono.CapabilitySet()
    caps.allow_path("/usr", nono.AccessMode.READ)
    caps.allow_path("/etc", nono.AccessMode.READ)
    caps.block_network()
    env = list(ENV.items())

    def once() -> None:
        result = nono.sandboxed_exec(caps, [TRUE], cwd="/", env=env, enforcement_mode=mode)
        if result.exit_code != 0:
            raise BenchFailure(f"nono-py ({mode}): exit {result.exit_code}: "
                               f"{result.stderr.decode(errors='replace').strip()}")

    try:
        once()
    except BenchFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - report why and go on without it
        raise BenchFailure(f"nono_py.sandboxed_exec failed: {type(exc).__name__}: {exc}") from None

    async def run() -> None:
        once()
    return run


def nonod(launcher: Launcher, policy: ResolvedPolicy = POLICY,
          request: LaunchRequest = REQUEST) -> Runner:
    async def run() -> None:
        proc = await launcher.launch(policy, request)
        status = await proc.wait_exited()
        if status.code != 0:
            raise BenchFailure(f"nonod: /bin/true ended with {status}")
    return run


# --- machine -------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "n/a"


def versions() -> dict[str, object]:
    try:
        import nono_py as nono  # type: ignore[import-not-found, unused-ignore]
        nono_version = str(getattr(nono, "__version__", "?"))
    except ImportError:
        nono_version = "not installed"
    return {
        "landlock_abi": probe_abi(),
        "bwrap": _first_line([BWRAP, "--version"]) if shutil.which(BWRAP) else "not installed",
        "nono_py": nono_version,
    }


# --- driver --------------------------------------------------------------------------------


def cpu_seconds(servers: tuple[int, ...]) -> float:
    """CPU time (user + system) used so far by this process, its waited-for children (the
    other contenders' programs) and each fork server in ``servers`` with everything it has
    reaped (launchers, their inits, the programs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    for pid in servers:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


async def measure(contenders: list[Contender], runs: int, warmup: int, interleave: bool,
                  pause: float = 0.0, cpu: Callable[[], float] | None = None) -> None:
    def live() -> list[Contender]:
        return [c for c in contenders if not c.error]

    async def once(c: Contender, record: bool) -> None:
        if pause:
            await trio.sleep(pause)  # outside the timing
        t0 = time.perf_counter()
        try:
            await c.run()
        except BenchFailure as exc:
            c.error = str(exc)
            return
        if record:
            c.samples.append((time.perf_counter() - t0) * 1000.0)

    gc.collect()
    gc.disable()  # a collection inside a timed run would land on whichever contender is unlucky
    try:
        if not interleave:
            for c in live():
                before = cpu() if cpu is not None else 0.0
                for i in range(warmup + runs):
                    await once(c, record=i >= warmup)
                    if c.error:
                        break
                if cpu is not None:
                    c.cpu_ms = (cpu() - before) * 1000.0 / (warmup + runs)
                gc.collect()
            return
        for i in range(warmup + runs):
            order = live()
            if not order:
                return
            k = i % len(order)
            for c in order[k:] + order[:k]:
                await once(c, record=i >= warmup)
            if i % 20 == 19:
                gc.collect()
    finally:
        gc.enable()


def make(name: str, what: str, factory: Callable[[], Runner]) -> Contender:
    try:
        return Contender(name, what, factory())
    except BenchFailure as exc:
        return Contender(name, what, _never, error=str(exc))


async def _never() -> None:
    raise BenchFailure("not available")


def _unavailable(reason: str) -> Runner:
    raise BenchFailure(reason)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    warm = has_warm_launchers()
    async with fork_server() as launcher, fork_server(cold=True) as cold_launcher:
        first = await launcher.launch(POLICY, REQUEST)
        status = await first.wait_exited()
        if status.code != 0:
            raise SystemExit(f"nonod cannot run /bin/true here: {status}")
        enforcement = first.enforcement
        contenders = [
            make("bare-spawn", "os.posix_spawn + waitpid", bare_spawn),
            make("bare-subproc", "subprocess.run(close_fds=True)", bare_subprocess),
            make("bwrap", "bubblewrap --unshare-all ..., via subprocess.run", bwrap),
            make("nono-py", 'nono_py.sandboxed_exec, enforcement_mode="auto"',
                 lambda: nono_py("auto")),
            make("nono-py+sc", 'nono_py.sandboxed_exec, enforcement_mode="seccomp"',
                 lambda: nono_py("seccomp")),
            make("nonod", "our engine: launcher.launch + wait_exited, all layers",
                 lambda: nonod(launcher)),
            make("nonod-cold", "the same, fork server's warm launchers off",
                 lambda: nonod(cold_launcher) if warm else _unavailable(
                     "the engine has no warm launchers: nonod is the cold path")),
        ]
        servers = (launcher._proc.pid, cold_launcher._proc.pid)
        await measure(contenders, args.runs, args.warmup, args.interleave, args.pause / 1000,
                      functools.partial(cpu_seconds, servers))
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for c in contenders:
        if c.error:
            skipped.append({"name": c.name, "reason": c.error})
            continue
        results.append({"name": c.name, "what": c.what, "n": len(c.samples),
                        **summarize(c.samples), "cpu_ms": c.cpu_ms,
                        "samples_ms": [round(s, 4) for s in c.samples]})
    for key, ref in (("p50_vs_bare", "bare-spawn"), ("p50_vs_nono_py", "nono-py")):
        base = _stat(results, ref, "p50")
        for r in results:
            r[key] = r["p50"] / base if base else None
    return {
        "machine": {**machine(), **versions()},
        "runs": args.runs,
        "warmup": args.warmup,
        "order": "interleaved" if args.interleave else "sequential",
        "pause_ms": args.pause,
        "nonod_enforcement": enforcement.summary(),
        "nonod_layers": [f"{lay.name}={lay.state}" for lay in enforcement.layers],
        "results": results,
        "skipped": skipped,
    }


def _stat(results: list[dict[str, Any]], name: str, key: str) -> float | None:
    for r in results:
        if r["name"] == name:
            return float(r[key])
    return None


def print_table(data: dict[str, Any]) -> None:
    m = data["machine"]
    print(f"# launch /bin/true to exit -- {m['date']}")
    print(f"# kernel {m['kernel']}, nproc {m['nproc']} (usable {m['nproc_usable']}), "
          f"{m['cpu']}, Python {m['python']}, uid {m['uid']}, load {m['loadavg_1m']:.2f}")
    print(f"# engine {m['engine']}, warm launchers: {m['warm_launchers']}")
    print(f"# landlock ABI {m['landlock_abi']}, {m['bwrap']}, nono-py {m['nono_py']}")
    pause = f", {data['pause_ms']:g} ms idle before each run" if data["pause_ms"] else ""
    print(f"# {data['runs']} runs per contender after {data['warmup']} warm-up runs, "
          f"{data['order']}{pause}")
    print(f"# nonod: {data['nonod_enforcement']} [{', '.join(data['nonod_layers'])}]")
    results: list[dict[str, Any]] = data["results"]
    bare = _stat(results, "bare-spawn", "p50")
    ref = _stat(results, "nono-py", "p50")
    print()
    print(f"{'contender':<13} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'min ms':>8} "
          f"{'max ms':>8} {'p50/bare':>9} {'p50/nono-py':>12} {'cpu ms':>7}")
    for r in results:
        p50 = float(r["p50"])
        vs_bare = f"{p50 / bare:.2f}x" if bare else "-"
        vs_ref = f"{p50 / ref:.2f}x" if ref else "-"
        cpu = f"{r['cpu_ms']:.2f}" if r.get("cpu_ms") is not None else "-"
        print(f"{r['name']:<13} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['mean']:>8.2f} "
              f"{r['min']:>8.2f} {r['max']:>8.2f} {vs_bare:>9} {vs_ref:>12} {cpu:>7}")
    for s in data["skipped"]:
        print(f"{s['name']:<13} SKIPPED: {s['reason']}")
    print()
    for r in results:
        print(f"  {r['name']:<13} {r['what']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per contender")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per contender first")
    parser.add_argument("--interleave", action="store_true",
                        help="one run of each contender per round instead of one after another")
    parser.add_argument("--pause", type=float, default=0.0, metavar="MS",
                        help="idle time before each run, outside the timing (sparse launches, "
                             "as a daemon sees them; 0: back to back)")
    parser.add_argument("--json", action="store_true", help="print JSON (with every sample)")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.pause < 0:
        parser.error("--runs must be >= 1, --warmup >= 0, --pause >= 0")
    data = trio.run(bench, args)
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        print()
    else:
        print_table(data)


if __name__ == "__main__":
    main()
