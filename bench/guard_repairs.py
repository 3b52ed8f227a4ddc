"""One host change on the way of every session, beside many: what its repairs cost.

``--sessions`` sessions (``sleep``, one masked directory each, the same one) from one fork
server; then ``--changes`` times the host renames a directory over the masked one (which takes
the mask from every session's view) and waits until every view shows the mask again. Per
change: the time from the rename until the last view is masked again, the fork server's own
CPU (its every thread, schedstat), and the repairs' CPU (the exec'd repairs are the fork
server's children, reaped by it: its children's CPU; a repair server's children are its own:
its CPU and its children's), from ``/proc/<pid>/stat`` in clock ticks.

Without ``--tree`` it runs the A/B itself: this checkout and ``--base-tree`` (a detached
worktree with its ``nono-reaper`` built) one after the other, ``--rounds`` times, the order
turned round each round, each in a fresh process, and prints the medians and ratios.

    .venv/bin/python bench/guard_repairs.py --base-tree /tmp/base [--sessions 200]
                                            [--changes 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench._tree import use_tree  # noqa: E402

TREE = use_tree()

import trio  # noqa: E402

from nonod.policy import Access, Denial, Grant, ResolvedPolicy  # noqa: E402
from nonod.sandbox import LaunchRequest, open_launcher  # noqa: E402

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _ppid(pid: int) -> int:
    return int(_stat(pid)[1])


def _own_ms(pid: int) -> float:
    """CPU of every thread of ``pid`` so far (schedstat: exact)."""
    return sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
               for t in os.listdir(f"/proc/{pid}/task")) / 1e6


def _ticks_ms(pid: int, own: bool) -> float:
    """The reaped children's CPU of ``pid`` (and its own, if ``own``), ms."""
    fields = _stat(pid)  # (from the state on: stat's 3rd field is fields[0])
    ticks = int(fields[11]) + int(fields[12]) if own else 0  # utime, stime
    return (ticks + int(fields[13]) + int(fields[14])) * TICK_MS  # cutime, cstime


def _repair_server(fork_server: int, spare: bool = False) -> int:
    """The fork server's repair server (``--serve``; ``spare``: or a spare repair, the
    base's), 0: none."""
    kinds = [[b"--serve"], [b"--spare"]] if spare else [[b"--serve"]]
    for entry in os.listdir("/proc"):
        try:
            if (entry.isdigit() and _ppid(int(entry)) == fork_server
                    and Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[3:4]
                    in kinds):
                return int(entry)
        except (OSError, IndexError, ValueError):
            continue
    return 0


def _masked(init: int, secret: Path) -> bool:
    return not os.listdir(f"/proc/{init}/root{secret}")


async def _one(sessions: int, changes: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="nono-repairs-", dir="/tmp"))
    secret = work / "secret"
    secret.mkdir()
    policy = ResolvedPolicy(
        name="repairs", grants=(Grant(path="/usr", access=Access.READ),
                                Grant(path="/etc", access=Access.READ),
                                Grant(path=str(work), access=Access.READ)),
        denials=(Denial(path=str(secret)),), allow_degraded=("host_proc", "host_metadata"))
    rounds: list[dict[str, float]] = []
    async with open_launcher("namespaces") as launcher:
        procs = [await launcher.launch(policy, LaunchRequest(argv=("/bin/sleep", "600"),
                                                             cwd=str(work)))
                 for _ in range(sessions)]
        try:
            with trio.fail_after(120):  # every outer launcher gone: the hub guards them all
                while True:
                    parents = {_ppid(p.pid) for p in procs}
                    if len(parents) == 1 and _repair_server(next(iter(parents)), True):
                        break
                    await trio.sleep(0.05)
            fork_server = parents.pop()
            await trio.sleep(1)
            for n in range(changes):
                server = _repair_server(fork_server)
                planted = work / f"planted{n}"
                planted.mkdir()
                (planted / "the-hosts-file").write_text("not for the session\n")
                cpu0, reaped0 = _own_ms(fork_server), _ticks_ms(fork_server, False)
                served0 = _ticks_ms(server, True) if server else 0.0
                began = time.perf_counter()
                os.rename(planted, secret)
                with trio.fail_after(120):
                    while not all(_masked(p.pid, secret) for p in procs):
                        await trio.sleep(0.005)
                wall = time.perf_counter() - began
                await trio.sleep(0.3)  # the repairs of the events that came late end too
                later = _repair_server(fork_server)
                rounds.append({
                    "wall_ms": wall * 1000,
                    "fork_server_ms": _own_ms(fork_server) - cpu0,
                    "repairs_ms": _ticks_ms(fork_server, False) - reaped0 + (
                        _ticks_ms(server, True) - served0 if server and later == server
                        else 0.0),
                })
                (secret / "the-hosts-file").unlink()  # (renamed over next: empty)
        finally:
            for p in procs:
                p.kill()
            with trio.move_on_after(60):
                for p in procs:
                    await p.wait_exited()
    for leftover in sorted(work.rglob("*"), reverse=True):
        leftover.rmdir() if leftover.is_dir() else leftover.unlink()
    work.rmdir()
    return {"tree": TREE, "rounds": rounds}


def _run(tree: str, args: argparse.Namespace) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, "--tree", tree, "--one",
                          "--sessions", str(args.sessions), "--changes", str(args.changes)],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tree")
    parser.add_argument("--base-tree")
    parser.add_argument("--one", action="store_true", help="one tree, JSON out")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(trio.run(_one, args.sessions, args.changes)))
        return
    if not args.base_tree:
        parser.error("--base-tree DIR (a detached worktree of the base, nono-reaper built)")
    this = str(BENCH.parent)
    got: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    for r in range(args.rounds):
        order = [("base", args.base_tree), ("this", this)]
        for name, tree in order if r % 2 == 0 else reversed(order):
            result = _run(tree, args)
            rounds = result["rounds"]
            assert isinstance(rounds, list)
            got[name] += rounds
            print(f"round {r} {name}: " + ", ".join(
                f"{k} {statistics.median(x[k] for x in rounds):.1f}" for k in rounds[0]),
                flush=True)
    print(f"{args.sessions} sessions, {args.changes} changes x {args.rounds} rounds; medians "
          "per change (ms)")
    for key in got["this"][0]:
        base = statistics.median(x[key] for x in got["base"])
        mine = statistics.median(x[key] for x in got["this"])
        print(f"  {key:16} base {base:9.1f}  this {mine:9.1f}  "
              f"{mine / base if base else float('nan'):.3f}x")


if __name__ == "__main__":
    main()
