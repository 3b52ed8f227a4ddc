"""The engine's launch latency, this tree against another, in alternating blocks of one run.

Two fork servers run side by side: this tree's and one started from the source tree
``--before DIR`` (another commit's, exported, with its ``nono-reaper`` built there; the
plans come from this tree's ``build_plan`` for both, so only the fork server and what it
forks differ). ``/bin/true`` is launched ``--block`` times back to back on one, then on the
next contender, round after round, with bubblewrap and nono-py as blocks of their own: the
machine's drift (other work on a shared host) lands on every contender alike, while each
block keeps the back-to-back pattern of ``bench/launch.py`` (each server's refill runs
between its own launches only). The first ``--warmup`` runs of each block are not
recorded.

Per launch, for each engine: ``cpu ms`` and ``faults`` (minor page faults), of the fork server's
whole process tree (the server, the processes it keeps, the launchers, the inits, the programs:
the live ones' own counts plus what each has reaped), read from ``/proc`` around each block
(warm-up runs included), and the p50 of those blocks. The benchmark process's own share (trio,
``build_plan``) is the same for both engines and not counted. ``/proc`` counts CPU in clock
ticks (10 ms), a coarse step for a block of launches of a few ms each: as root, where cgroup
v1's ``cpuacct`` is mounted, each fork server runs in a ``cpuacct`` group of its own and the
CPU column is that group's (nanoseconds, every process of the tree, ended ones included).

    git worktree add --detach /tmp/base main && make -C /tmp/base nonod/sandbox/nono-reaper
    .venv/bin/python bench/engine_ab.py --before /tmp/base [--rounds 8] [--block 25]
                                        [--audit-tag]

``--audit-tag``: the launches carry an audit tag, as the root daemon's do when kernel-audit
``fs_denied`` is on (root only: the loginuid is written from the initial user namespace).
``--daemon-policy``: the daemon's default profile with ``--allow-cwd --block-net``, resolved
for this user in ``/tmp`` (bench/daemon.py's launches; its view has masks to guard) instead
of the bench's two read-only grants.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any

import msgspec
import trio
from _common import POLICY, emit, fork_server, machine, median, percentile
from launch import REQUEST, BenchFailure, Runner, bwrap, nono_py, nonod

from nonod.policy import ResolvedPolicy
from nonod.sandbox import LaunchRequest

AUDIT_TAG = 0x80000000 + 4242  # the daemon draws its tag from 0x80000000 up


def _daemon_policy() -> tuple[ResolvedPolicy, LaunchRequest]:
    """The daemon's default profile with bench/daemon.py's options, for this user in /tmp."""
    from daemon import OPTIONS

    from nonod import protocol as p
    from nonod._profile_source import ProfilePolicies
    from nonod.sessions import Caller

    env = (("PATH", "/usr/bin:/bin"), ("HOME", os.path.expanduser("~")))
    launch = p.Launch(argv=REQUEST.argv, cwd="/tmp", env=dict(env), options=OPTIONS,
                      detach=False, stdio="null")
    policies = ProfilePolicies(system=False, profile_dir=lambda: None)
    policy, _ = policies._resolve_launch(launch, Caller(uid=os.getuid(), gid=os.getgid(),
                                                        pid=os.getpid()), None)
    return policy, LaunchRequest(argv=REQUEST.argv, cwd="/tmp", env=env)


def tree_usage(root: int) -> tuple[float, int]:
    """CPU seconds and minor page faults so far of ``root``'s process tree: for each live
    process, its own and those of the children it has reaped (a reaped process's move to its
    parent's count, a live one's are read where it is, so nothing is counted twice)."""
    cpu, faults = 0.0, 0
    todo = [root]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue  # it ended meanwhile: its counts went to its parent
        faults += int(fields[7]) + int(fields[8])
        cpu += sum(int(x) for x in fields[11:15]) / tick
    return cpu, faults


CPUACCT = "/sys/fs/cgroup/cpuacct"


class CpuGroup:
    """A cgroup v1 ``cpuacct`` group holding one fork server (its children are born there):
    the CPU of its whole tree in nanoseconds."""

    def __init__(self, name: str, pid: int) -> None:
        self.path = os.path.join(CPUACCT, f"nono-engine-ab-{os.getpid()}-{name}")
        os.mkdir(self.path)
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    @staticmethod
    def make(name: str, pid: int) -> CpuGroup | None:
        try:
            return CpuGroup(name, pid)
        except OSError:
            return None  # no cpuacct hierarchy, or not root: /proc's ticks then

    def seconds(self) -> float:
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9

    def remove(self) -> None:
        """Once its processes have ended (the fork server's tree goes with it)."""
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)


def cpu_and_faults(root: int, group: CpuGroup | None) -> tuple[float, int]:
    cpu, faults = tree_usage(root)
    return (group.seconds() if group is not None else cpu), faults


async def _blocks(runners: dict[str, Runner], rounds: int, block: int, warmup: int,
                  pause: float, servers: dict[str, int], groups: dict[str, CpuGroup | None]
                  ) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    samples: dict[str, list[float]] = {name: [] for name in runners}
    usage: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    names = list(runners)
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                start = cpu_and_faults(servers[name], groups[name]) if name in servers else None
                for i in range(block):
                    if pause:
                        await trio.sleep(pause)
                    t0 = time.perf_counter()
                    await runners[name]()
                    if i >= warmup:
                        samples[name].append((time.perf_counter() - t0) * 1000.0)
                if start is not None:
                    end = cpu_and_faults(servers[name], groups[name])
                    usage[name].append(((end[0] - start[0]) * 1000.0 / block,
                                        (end[1] - start[1]) / block))
            gc.collect()
    finally:
        gc.enable()
    return samples, usage


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    groups: dict[str, CpuGroup | None] = {}
    try:
        async with fork_server() as ours, fork_server(tree=args.before) as before:
            policy, request = _daemon_policy() if args.daemon_policy else (POLICY, REQUEST)
            if args.audit_tag:
                request = msgspec.structs.replace(request, audit_tag=AUDIT_TAG)
            runners: dict[str, Runner] = {"nonod": nonod(ours, policy, request),
                                          "nonod@before": nonod(before, policy, request)}
            for name, make in (("bwrap", bwrap), ("nono-py", lambda: nono_py("auto"))):
                try:
                    runners[name] = make()
                except BenchFailure as exc:
                    print(f"# {name} skipped: {exc}")
            servers = {"nonod": ours._proc.pid, "nonod@before": before._proc.pid}
            groups = {name: CpuGroup.make(name, pid) for name, pid in servers.items()}
            first = await ours.launch(policy, request)
            await first.wait_exited()
            samples, used = await _blocks(runners, args.rounds, args.block, args.warmup,
                                          args.pause / 1000, servers, groups)
    finally:
        for group in groups.values():
            if group is not None:
                group.remove()
    rows: dict[str, dict[str, Any]] = {
        name: {"p50": median(v), "p90": percentile(v, 0.9), "n": len(v)}
        for name, v in samples.items()}
    for name, blocks in used.items():
        rows[name]["cpu_ms"] = median([b[0] for b in blocks])
        rows[name]["faults"] = median([b[1] for b in blocks])
    return {"machine": machine(), "before": args.before, "rounds": args.rounds,
            "block": args.block, "warmup": args.warmup, "pause_ms": args.pause,
            "enforcement": first.enforcement.summary(), "rows": rows,
            "audit_tag": args.audit_tag, "daemon_policy": args.daemon_policy,
            "cpu_from": "cpuacct" if all(groups.values()) else "/proc ticks"}


def table(data: dict[str, Any]) -> None:
    m = data["machine"]
    print(f"# engine A/B, /bin/true -- {m['date']}, engine {m['engine']} vs {data['before']}, "
          f"load {m['loadavg_1m']:.2f}, nproc {m['nproc']}")
    print(f"# {data['rounds']} rounds of blocks of {data['block']} back-to-back runs "
          f"({data['warmup']} unrecorded), pause {data['pause_ms']:g} ms; "
          f"nonod: {data['enforcement']}; cpu from {data.get('cpu_from', '/proc ticks')}"
          f"{'; audit-tagged' if data.get('audit_tag') else ''}"
          f"{'; the daemon default profile' if data.get('daemon_policy') else ''}")
    rows = data["rows"]
    print(f"{'contender':<14} {'p50 ms':>8} {'p90 ms':>8} {'n':>5} {'cpu ms':>7} {'faults':>7}")
    for name, row in rows.items():
        cpu = f"{row['cpu_ms']:7.2f} {row['faults']:7.0f}" if "cpu_ms" in row else ""
        print(f"{name:<14} {row['p50']:8.2f} {row['p90']:8.2f} {row['n']:5d} {cpu}")
    p50 = {name: row["p50"] for name, row in rows.items()}
    if p50.get("nonod@before"):
        print(f"nonod / nonod@before: {p50['nonod'] / p50['nonod@before']:.2f}x p50, "
              f"{rows['nonod']['cpu_ms'] / rows['nonod@before']['cpu_ms']:.2f}x cpu, "
              f"{rows['nonod']['faults'] / rows['nonod@before']['faults']:.2f}x faults")
    for peer in ("bwrap", "nono-py"):
        if p50.get(peer):
            print(f"nonod / {peer}: {p50['nonod'] / p50[peer]:.2f}x "
                  f"(before: {p50['nonod@before'] / p50[peer]:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--before", required=True, metavar="DIR",
                        help="source tree of the other fork server (its nono-reaper built)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block", type=int, default=25, help="runs per block")
    parser.add_argument("--warmup", type=int, default=5, help="unrecorded runs per block")
    parser.add_argument("--pause", type=float, default=0.0, metavar="MS",
                        help="idle time before each run (0: back to back)")
    parser.add_argument("--audit-tag", action="store_true",
                        help="tag the launches for kernel audit, as the root daemon does")
    parser.add_argument("--daemon-policy", action="store_true",
                        help="the daemon's default profile (a view with masks) instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not os.path.isdir(args.before) or args.block <= args.warmup or args.rounds < 1:
        parser.error("--before must be a directory, --block > --warmup, --rounds >= 1")
    emit(trio.run(bench, args), as_json=args.json, table=table)


if __name__ == "__main__":
    main()
