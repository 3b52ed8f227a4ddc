"""The compressed request body watch alone (``DecodedBodyWatch``): time per body.

Four bodies, each fed in --piece byte pieces through ``steps`` (what the proxy runs, a
checkpoint between steps), --runs times; the median time and the number of steps (each a
trio checkpoint in the proxy) are printed:

  empty   64 KiB of empty gzip members (20 bytes each, nothing decoded)
  form    a gzip form of 8 MiB of one letter
  bytes   a gzip body of 4 MiB of a repeated byte ramp
  deflate the form as a zlib stream (``Content-Encoding: deflate``: read two ways now)

With --before DIR, the watch of the tree in DIR (its ``nonod/proxy/_bodyoverride.py``) is
timed too, in the same process, the two taking turns run by run. A body the watch refuses
shows ``refused``.

    .venv/bin/python bench/bodywatch.py [--piece BYTES] [--runs N] [--before DIR]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import inspect
import statistics
import time
import zlib
from types import ModuleType
from typing import Any


def _load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one(module: ModuleType, data: bytes, piece: int, deflate: bool) -> tuple[float, str]:
    watch_type: Any = module.DecodedBodyWatch
    takes = "deflate" in inspect.signature(watch_type).parameters
    watch = watch_type(1 << 25, deflate=deflate) if takes else watch_type(1 << 25)
    steps = 0
    start = time.perf_counter()
    try:
        for at in range(0, len(data), piece):
            steps += sum(1 for _ in watch.steps(data[at:at + piece]))
        watch.end()
    except module.UnreadableBody:
        return time.perf_counter() - start, "refused"
    return time.perf_counter() - start, f"{steps} steps"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--piece", type=int, default=1 << 16)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", default=None)
    args = parser.parse_args()
    from nonod.proxy import _bodyoverride as after
    modules = {"after": after}
    if args.before:
        modules = {"before": _load(f"{args.before}/nonod/proxy/_bodyoverride.py", "before"),
                   "after": after}
    form = b"a=1&" + b"x" * (8 << 20)
    bodies = {
        "empty": (gzip.compress(b"", mtime=0) * 3276, False),
        "form": (gzip.compress(form, mtime=0), False),
        "bytes": (gzip.compress(bytes(range(256)) * 16384, mtime=0), False),
        "deflate": (zlib.compress(form), True),
    }
    for name, (data, deflate) in bodies.items():
        times: dict[str, list[float]] = {key: [] for key in modules}
        said: dict[str, str] = {}
        for _ in range(args.runs):
            for key, module in modules.items():
                seconds, said[key] = _one(module, data, args.piece, deflate)
                times[key].append(seconds)
        line = [f"{name:8}"]
        for key in modules:
            line.append(f"{key} {statistics.median(times[key]) * 1e3:8.2f} ms ({said[key]})")
        if len(modules) == 2:
            ratio = statistics.median(times["after"]) / statistics.median(times["before"])
            line.append(f"after/before {ratio:.2f}")
        print("  ".join(line))


if __name__ == "__main__":
    main()
