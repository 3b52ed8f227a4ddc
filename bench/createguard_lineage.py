"""What the creation guard's init reads per emulated call once a process of the session has
confined itself further (``_createserve.Domains.known``): the caller's thread group, then each
parent, read twice around the parent's own record, up to the program.

In this process (standing for the program), a chain of ``depth`` forked processes waits on a
pipe; one unrelated child is marked confined, so every call walks. ``known`` is timed for the
deepest process, and for the same with nothing marked (the state of every session until a
tool sandbox runs: one test, no read). CPU time of this process per call, median of
``--rounds`` runs of ``--calls`` calls, the depths interleaved.

    .venv/bin/python bench/createguard_lineage.py [--calls 2000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _common import emit, machine, median

from nonod.sandbox._createserve import Domains

DEPTHS = (0, 1, 3, 10)


@contextmanager
def _chain(depth: int) -> Iterator[int]:
    """The pid of the last of ``depth`` processes, each the child of the one before (this
    process for 0), all waiting until the block ends."""
    if depth == 0:
        yield os.getpid()
        return
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(w)
        os.close(ready_r)
        last = True
        for _ in range(1, depth):
            if os.fork() != 0:
                last = False  # this level waits; its child goes on down
                break
        if last:
            os.write(ready_w, str(os.getpid()).encode())
        os.close(ready_w)
        os.read(r, 1)  # until the parent closes w
        os._exit(0)
    os.close(r)
    os.close(ready_w)
    last = int(os.read(ready_r, 32))
    os.close(ready_r)
    try:
        yield last
    finally:
        os.close(w)
        os.waitpid(first, 0)


def _per_call(domains: Domains, tid: int, calls: int) -> float:
    t0 = time.process_time_ns()
    for _ in range(calls):
        domains.known(tid)
    return (time.process_time_ns() - t0) / calls / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with _chain(1) as marked:
        flat = Domains(os.getpid())
        nested = Domains(os.getpid())
        nested.mark(marked, nested.confined, lambda: True)
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            samples.setdefault("nothing marked", []).append(
                _per_call(flat, os.getpid(), args.calls))
            for depth in DEPTHS:
                with _chain(depth) as tid:
                    if not nested.known(tid) or not flat.known(tid):
                        raise SystemExit(f"depth {depth}: not known")
                    samples.setdefault(f"marked, depth {depth}", []).append(
                        _per_call(nested, tid, args.calls))
    result = {k: round(median(v), 2) for k, v in samples.items()}
    emit({"machine": machine(), "calls": args.calls, "rounds": args.rounds,
          "us_cpu_per_call": result}, as_json=args.json, table=_table)


def _table(data: dict[str, Any]) -> None:
    print(f"µs of CPU per known() call, median of {data['rounds']} x {data['calls']} calls")
    for k, v in data["us_cpu_per_call"].items():
        print(f"{k:20} {v:>8}")


if __name__ == "__main__":
    main()
