"""What a copy-on-write cache costs (branch ``cachecow``): the same session with its writable
``~/.cache/go-build`` grant as an overlay (the default) and as the host's directory
(``shared_caches``), side by side, alternating, through one engine (warm launchers on).

Two numbers per variant: the launch of ``/bin/true`` (wall time from the launch call to its
exit), and a program that writes ``--files`` new 64 KiB files in the cache and rewrites
``--files`` existing ones (its own clock, inside the session: what copy-up and the tmpfs
upper layer cost against the host's file system).

    .venv/bin/python bench/cachecow.py [--rounds 5] [--launches 20] [--files 200] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
from _common import POLICY, emit, machine, median

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import Launcher, LaunchRequest, open_launcher

PY = "/usr/bin/python3"
WRITE = r"""
import os, sys, time
cache, n = sys.argv[1], int(sys.argv[2])
blob = b"x" * 65536
t = time.perf_counter()
for i in range(n):
    with open(f"{cache}/new{i}", "wb") as f:
        f.write(blob)
    with open(f"{cache}/old{i}", "r+b") as f:
        f.write(blob)
print((time.perf_counter() - t) * 1000)
"""


def _policies(cache: Path) -> dict[str, ResolvedPolicy]:
    base = msgspec.structs.replace(POLICY, grants=(
        *POLICY.grants, Grant(path=str(cache), access=Access.READWRITE)),
        cache_home=str(cache.parent))
    return {"overlay": base,
            "shared": msgspec.structs.replace(base, shared_caches=(str(cache),))}


async def _run(launcher: Launcher, policy: ResolvedPolicy, argv: tuple[str, ...]
               ) -> tuple[float, str]:
    out_r, out_w = os.pipe()
    start = time.perf_counter()
    try:
        proc = await launcher.launch(policy, LaunchRequest(argv=argv, cwd="/"),
                                     stdio=(0, out_w, 2))
    finally:
        os.close(out_w)
    status = await proc.wait_exited()
    wall = (time.perf_counter() - start) * 1000
    with os.fdopen(out_r) as out:
        text = out.read()
    assert status.code == 0, status
    return wall, text


async def measure(cache: Path, rounds: int, launches: int, files: int) -> dict[str, Any]:
    policies = _policies(cache)
    launch: dict[str, list[float]] = {name: [] for name in policies}
    write: dict[str, list[float]] = {name: [] for name in policies}
    async with open_launcher("namespaces") as launcher:
        for policy in policies.values():  # warm up both
            await _run(launcher, policy, ("/bin/true",))
        for index in range(rounds):
            order = list(policies.items())
            for name, policy in order[::-1] if index % 2 else order:  # neither always first
                for _ in range(launches):
                    launch[name].append((await _run(launcher, policy, ("/bin/true",)))[0])
                _, text = await _run(launcher, policy, (PY, "-S", "-c", WRITE, str(cache),
                                                        str(files)))
                write[name].append(float(text.strip()))
                for entry in cache.iterdir():  # the shared variant wrote the host's
                    if entry.name.startswith("new"):
                        entry.unlink()
    return {"machine": machine(), "rounds": rounds, "launches": launches, "files": files,
            "launch_ms": {k: median(v) for k, v in launch.items()},
            "write_ms": {k: median(v) for k, v in write.items()}}


def _table(data: dict[str, Any]) -> None:
    print(f"{data['rounds']} rounds x {data['launches']} launches, {data['files']} files")
    for key in ("launch_ms", "write_ms"):
        o, s = data[key]["overlay"], data[key]["shared"]
        print(f"{key:10} overlay {o:8.2f}  shared {s:8.2f}  ratio {o / s:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nono-cachecow-"))
    cache = root / ".cache" / "go-build"
    cache.mkdir(parents=True)
    for i in range(args.files):
        (cache / f"old{i}").write_bytes(b"o" * 65536)
    try:
        data = trio.run(measure, cache, args.rounds, args.launches, args.files)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    emit(data, as_json=args.json, table=_table)


if __name__ == "__main__":
    main()
