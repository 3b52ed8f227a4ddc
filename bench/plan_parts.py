"""Where ``build_plan``'s CPU goes at each launch of one kept policy: the policy and request
``bench/daemon.py`` gives the engine for its ``client`` contender (the default profile with
--allow-cwd --block-net, in a fresh working directory and home), planned ``--launches`` times
in one process, each part's thread CPU measured at each call (``time.thread_time_ns``): the
kept mount plan's host check (``compile_mounts``), the walk for hard-linked files
(``_linkscan.scan``), the view's grants, the environment, the executable's search, the
Landlock and seccomp programs (kept per arguments) and the rest. ``--before DIR``: the same
in another checkout (a worktree of main), in a process of its own, alternating round by
round so that both share the machine's load.

    .venv/bin/python bench/plan_parts.py [--launches 300] [--rounds 6] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import _ab

ONE = r"""
import json, os, shutil, statistics, sys, tempfile, time
from pathlib import Path
tree, launches = sys.argv[1], int(sys.argv[2])
sys.path[:0] = [tree, os.path.join(tree, "bench")]
from daemon import daemon_policy
from nonod.sandbox import _linkscan, _plan

class Where:
    def __init__(self):
        base = self.base = Path(tempfile.mkdtemp(prefix="ndp-", dir="/tmp"))
        base.chmod(0o755)
        self.home, self.work = Path(f"{base}-home"), base / "work"
        (self.home / "run").mkdir(parents=True, mode=0o700)
        self.work.mkdir()
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home),
                    "XDG_RUNTIME_DIR": str(self.home / "run"),
                    "XDG_STATE_HOME": str(self.home / "state"),
                    "XDG_CONFIG_HOME": str(self.home / "config")}

where = Where()
policy, request = daemon_policy(where)
spent = {}
clock = time.thread_time_ns

def timed(owner, name, label):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        began = clock()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0) + clock() - began
    setattr(owner, name, wrapper)

for owner, name, label in ((_plan, "compile_mounts", "kept mount plan (host check)"),
                           (_linkscan, "scan", "hard-link walk"),
                           (_plan, "_view_grants", "view grants"),
                           (_plan, "sanitize_env", "environment"),
                           (_plan, "find_executable", "executable search"),
                           (_plan, "_landlock_plan", "landlock plan (kept)"),
                           (_plan, "_filter_for", "seccomp program (kept)")):
    timed(owner, name, label)
_plan.build_plan(policy, request)
parts = {}
for _ in range(launches):
    spent.clear()
    began = clock()
    _plan.build_plan(policy, request)
    total = clock() - began
    for label, ns in spent.items():
        parts.setdefault(label, []).append(ns)
    parts.setdefault("rest", []).append(total - sum(spent.values()))
    parts.setdefault("build_plan", []).append(total)
for made in (where.base, where.home):
    shutil.rmtree(made, ignore_errors=True)
print(json.dumps({k: statistics.median(v) / 1e3 for k, v in parts.items()}))
"""


def _one(tree: str, launches: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", ONE, tree, str(launches)], check=True,
                         capture_output=True, text=True).stdout
    got: dict[str, float] = json.loads(out)
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    _ab.arguments(parser)
    parser.add_argument("--launches", type=int, default=300)
    args = parser.parse_args()
    trees = _ab.checkouts(args.before)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            rounds[name].append(_one(tree, args.launches))
    labels = list(rounds["after"][0])
    print(f"{'part (median us CPU per launch)':34}" + "".join(f"{n:>10}" for n in trees)
          + ("  after/before" if args.before else ""))
    for label in labels:
        cells = {n: statistics.median(r.get(label, 0.0) for r in got)
                 for n, got in rounds.items()}
        ratio = (f"  {cells['after'] / cells['before']:.2f}"
                 if args.before and cells["before"] else "")
        print(f"{label:34}" + "".join(f"{cells[n]:10.1f}" for n in trees) + ratio)


if __name__ == "__main__":
    main()
