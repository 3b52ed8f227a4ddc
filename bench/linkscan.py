"""What the launch-time walk for hard-linked files costs (``nonod/sandbox/_linkscan.py``).

Builds pnpm-like working directories (``node_modules/.pnpm/pkgN@1.0.0/node_modules/pkgN``
with 50 files in four directories per package, a symbolic link per package, pnpm's
``.modules.yaml`` and ``lock.yaml``) of ``--packages`` sizes, each twice: ``plain`` (the
project's own files) and ``linked`` (every file a hard link of a store outside it, as
``pnpm install`` leaves them). Then:

- the walk's CPU time (``time.process_time``: the machine's load hardly moves it) and what it
  found, per tree; with ``--before DIR``, also the walk's CPU in that checkout and in this
  one, each in a process of its own, alternating three times (medians);
- with ``--launch``: a session (``/bin/true``, the tree writable) launched ``--rounds`` times
  per tree through one fork server, median wall time; ``--before DIR`` does the same with
  another checkout (a worktree of main), alternating with this one run by run, so the two
  share the machine's load.

    .venv/bin/python bench/linkscan.py [--packages 20 100 2000] [--rounds 6]
        [--launch] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

LAUNCH = """
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
import trio
from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher

def policy(proj):
    grants = [Grant(path=p, access=Access.READ) for p in ("/usr", "/etc", "/lib", "/lib64",
                                                          "/bin")]
    return ResolvedPolicy(name="bench", denials=(), allow_degraded=("linked_files",),
                          grants=(*grants, Grant(path=proj, access=Access.READWRITE)))

async def main():
    rounds, projects = int(sys.argv[2]), sys.argv[3:]
    took = {p: [] for p in projects}
    async with open_launcher() as launcher:
        for r in range(rounds + 1):
            for proj in projects:
                t = time.perf_counter()
                proc = await launcher.launch(policy(proj), LaunchRequest(argv=("/bin/true",),
                                                                         cwd=proj))
                await proc.wait_exited()
                if r:  # the first round warms up
                    took[proj].append(time.perf_counter() - t)
    print(" ".join(f"{statistics.median(took[p]) * 1000:.1f}" for p in projects))

trio.run(main)
"""


def build(root: Path, packages: int, linked: bool) -> Path:
    proj, store = root / "proj", root / "store"
    for p in range(packages):
        for sub, count in (("", 14), ("lib", 12), ("lib/util", 12), ("dist", 12)):
            d = proj / "node_modules/.pnpm" / f"pkg{p}@1.0.0/node_modules/pkg{p}" / sub
            d.mkdir(parents=True, exist_ok=True)
            s = store / f"{p:04x}" / sub
            s.mkdir(parents=True, exist_ok=True)
            for f in range(count):
                (s if linked else d).joinpath(f"f{f}.js").write_text("x")
                if linked:
                    os.link(s / f"f{f}.js", d / f"f{f}.js")
        nxt = (p + 1) % packages
        os.symlink(f"../../pkg{nxt}@1.0.0/node_modules/pkg{nxt}",
                   proj / "node_modules/.pnpm" / f"pkg{p}@1.0.0/node_modules/pkg{nxt}")
        os.symlink(f".pnpm/pkg{p}@1.0.0/node_modules/pkg{p}", proj / "node_modules" / f"pkg{p}")
    (proj / "node_modules/.modules.yaml").write_text("layoutVersion: 5\n")
    (proj / "node_modules/.pnpm/lock.yaml").write_text("lockfileVersion: 9\n")
    return proj


#: The walk's CPU in another checkout (``--before``): medians in ms, one per tree.
WALK = """
import sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from linkscan import walk_cpu
print(" ".join(f"{walk_cpu(Path(p), int(sys.argv[3]), sys.argv[1])[0] * 1000:.1f}"
               for p in sys.argv[4:]))
"""


def walk_cpu(proj: Path, rounds: int, tree: str = str(HERE)) -> tuple[float, str]:
    sys.path.insert(0, tree)
    from nonod.sandbox._linkscan import Budget, scan
    from nonod.sandbox._mounts import BIND_DIR, MountOp

    unbounded = Budget(entries=10**8, seconds=3600, mounts=10**8)
    ops = (MountOp(BIND_DIR, str(proj), str(proj), True),)
    took = []
    for _ in range(rounds):
        start = time.process_time()
        found = scan(ops, unbounded)
        took.append(time.process_time() - start)
    return statistics.median(took), found.describe().split(";")[0] + f"; {found.entries} entries"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", type=int, nargs="+", default=[20, 100, 2000])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--launch", action="store_true")
    parser.add_argument("--before", metavar="DIR", help="another checkout to compare with")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nono-linkscan-"))
    root.chmod(0o755)
    try:
        trees: list[tuple[str, Path]] = []
        for n in args.packages:
            for linked in (False, True):
                name = f"{n * 50} files, {'linked' if linked else 'plain'}"
                trees.append((name, build(root / f"{n}-{linked}", n, linked)))
        if args.before:  # each checkout's walk in a process of its own, alternating
            walks: dict[str, list[list[float]]] = {"after": [], "before": []}
            for _ in range(3):
                for label, tree in (("before", args.before), ("after", str(HERE))):
                    out = subprocess.run(
                        [sys.executable, "-c", WALK, tree, str(HERE / "bench"),
                         str(args.rounds), *(str(p) for _, p in trees)],
                        check=True, capture_output=True, text=True).stdout
                    walks[label].append([float(x) for x in out.split()])
            for i, (name, _) in enumerate(trees):
                after, before = (statistics.median(run[i] for run in walks[label])
                                 for label in ("after", "before"))
                print(f"walk {name}: before {before:.1f} ms CPU, after {after:.1f} ms CPU, "
                      f"after/before {after / before:.2f}")
        for name, proj in trees:
            cpu, found = walk_cpu(proj, args.rounds)
            print(f"walk {name}: {cpu * 1000:.1f} ms CPU (median of {args.rounds}); {found}")
        if not args.launch:
            return
        checkouts = {"after": str(HERE), **({"before": args.before} if args.before else {})}
        medians: dict[str, list[list[float]]] = {c: [] for c in checkouts}
        for _ in range(3):  # alternate the checkouts, so that they share the load
            for label, tree in checkouts.items():
                out = subprocess.run(
                    [sys.executable, "-c", LAUNCH, tree, str(args.rounds),
                     *(str(p) for _, p in trees)], check=True, capture_output=True, text=True,
                    env={**os.environ, "PYTHONPATH": tree}).stdout
                medians[label].append([float(x) for x in out.split()])
        for i, (name, _) in enumerate(trees):
            got = {label: statistics.median(run[i] for run in runs)
                   for label, runs in medians.items()}
            line = ", ".join(f"{label} {ms:.1f} ms" for label, ms in got.items())
            if "before" in got:
                line += f", after/before {got['after'] / got['before']:.2f}"
            print(f"launch {name}: {line}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
