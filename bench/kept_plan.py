"""The CPU a launch spends finding its kept mount plan (``_mounts.compile_mounts`` when the
host still answers every question as it did: ``_Look.unchanged``), for a built-in profile in
the caller's home. ``--before DIR``: the same in another checkout (a worktree of main),
alternating, so the two share the machine's load.

    .venv/bin/python bench/kept_plan.py [--profile python-dev] [--rounds 6] [--before DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import _ab

ONE = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from nonod.profiles import ResolveContext, load_profile, resolve
from nonod.sandbox._mounts import compile_mounts
home = os.path.expanduser("~")
ctx = ResolveContext.for_user(home=home, workdir="/tmp", uid=os.getuid(), environ={"HOME": home})
pol = resolve(load_profile(sys.argv[2], user_dir=None), ctx)
compile_mounts(pol, home=home)
t = time.process_time()
for _ in range(300):
    compile_mounts(pol, home=home)
print((time.process_time() - t) / 300 * 1e6)
"""


def _one(tree: str, profile: str) -> float:
    out = subprocess.run([sys.executable, "-c", ONE, tree, profile], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    _ab.arguments(parser)
    args = parser.parse_args()
    trees = _ab.checkouts(args.before)
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            times[name].append(_one(tree, args.profile))
    _ab.report(times, lambda _: "kept-plan lookup")


if __name__ == "__main__":
    main()
