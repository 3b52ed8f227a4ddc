"""How long ``profile show --resolved`` takes for a request naming many missing paths, in
this process, with the tree on ``PYTHONPATH`` (run it once per tree, alternating, to compare
a revision with this checkout):

    git worktree add --detach /tmp/base main
    for round in 1 2 3; do for tree in /tmp/base .; do
        PYTHONPATH=$tree .venv/bin/python bench/profile_resolve.py 20000; done; done

Prints the tree, the number of paths and the seconds the resolution took.
"""

from __future__ import annotations

import os
import sys
import time

import trio

import nonod
from nonod import protocol as p
from nonod._profile_source import ProfilePolicies
from nonod.sessions import Caller


async def main(count: int) -> None:
    request = p.ProfileShow(profile="default", resolved=True, cwd="/tmp",
                            options=p.LaunchOptions(read=tuple(f"/{i}" for i in range(count))))
    policies = ProfilePolicies(system=False, profile_dir=lambda: None)
    began = time.perf_counter()
    await policies.show_profile(request, Caller(uid=os.geteuid(), gid=os.getegid(),
                                                pid=os.getpid()))
    tree = os.path.dirname(os.path.dirname(nonod.__file__))
    print(f"{tree} {count} {time.perf_counter() - began:.2f}")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
