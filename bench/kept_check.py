"""The CPU a kept profile resolution's check spends (``FsLook.unchanged``: the native pass
and ``_same_owners``), for a built-in profile in a home made with umask ``002`` (every
directory its group's: a user-private-group system's default), where known1's rule also
looks again at the names in group-writable directories. ``--before DIR``: the same in
another checkout (``git archive main | tar -x -C DIR``, then ``make -C DIR
nonod/profiles/libnonolooks.so``), alternating, so the two share the machine's load.

    .venv/bin/python bench/kept_check.py [--profile python-dev] [--rounds 6] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import _ab

ONE = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from nonod.profiles import FsLook, ResolveContext, load_profile, resolve
home, work = sys.argv[3], sys.argv[3] + "/projects/app"
ctx = ResolveContext.for_user(home=home, workdir=work, uid=os.getuid(), environ={"HOME": home})
look = FsLook()
resolve(load_profile(sys.argv[2], user_dir=None), ctx, look=look)
assert look.unchanged()
t = time.process_time()
for _ in range(300):
    look.unchanged()
print((time.process_time() - t) / 300 * 1e6, look.looks())
"""

#: A home's usual directories, made with umask 002 (group-writable).
DIRS = (".config", ".config/git", ".local/share", ".local/bin", ".local/state", ".cache",
        ".cache/pip", ".npm", ".cargo", ".rustup", "projects/app", "projects/app/src",
        ".ssh", ".gnupg", ".aws", ".docker")


def _home() -> str:
    home = tempfile.mkdtemp(prefix="kc-", dir="/tmp")
    old = os.umask(0o002)
    try:
        for name in DIRS:
            os.makedirs(os.path.join(home, name), mode=0o775, exist_ok=True)
    finally:
        os.umask(old)
    os.chmod(home, 0o775)  # noqa: S103 - the point: a home its group may write
    return home


def _one(tree: str, profile: str, home: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", ONE, tree, profile, home], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    _ab.arguments(parser)
    args = parser.parse_args()
    trees = _ab.checkouts(args.before)
    times: dict[str, list[float]] = {name: [] for name in trees}
    looks: dict[str, int] = {}
    home = _home()
    try:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                took, looks[name] = _one(tree, args.profile, home)
                times[name].append(took)
    finally:
        shutil.rmtree(home)
    _ab.report(times, lambda name: f"check of {looks[name]} looks")


if __name__ == "__main__":
    main()
