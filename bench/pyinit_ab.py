"""Launches down the Python init, this tree against another, in alternating blocks: both
fork servers started with ``NONO_PYTHON_INIT=1`` (``bench/engine_ab.py`` starts its
contenders with a clean environment, so its Python-init figures would compare the Python
init with the C one). Blocks of 15 ``/bin/true`` launches, the first 5 not recorded.

    git archive REV | tar -x -C /tmp/base && make -C /tmp/base nonod/sandbox/nono-reaper
    .venv/bin/python bench/pyinit_ab.py /tmp/base [ROUNDS]
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)

from nonod.sandbox._api import Launcher  # noqa: E402
from tests.sandbox.test_cinit import POLICY, _request  # noqa: E402

BLOCK, WARMUP = 15, 5


@asynccontextmanager
async def server(tree: str) -> AsyncIterator[Launcher]:
    """A fork server run from ``tree``, every init the Python one."""
    path = [tree, *(p for p in sys.path if p)]
    boot = f"import sys; sys.path[:0] = {path!r}; from nonod.sandbox import _forkserver as F; " \
        "F.main()"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", boot, str(theirs.fileno()), str(os.getpid())],
        pass_fds=(theirs.fileno(),), env={"PATH": os.defpath, "NONO_PYTHON_INIT": "1"},
        stdin=subprocess.DEVNULL, close_fds=True)
    theirs.close()
    launcher = Launcher(proc, trio.socket.from_stdlib_socket(ours))
    try:
        yield launcher
    finally:
        with trio.CancelScope(shield=True):
            await launcher.aclose()


async def main() -> None:
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    times: dict[str, list[float]] = {"this": [], "before": []}
    async with server(REPO) as this, server(sys.argv[1]) as before:
        for n in range(rounds):
            order = [("this", this), ("before", before)]
            for name, launcher in order if n % 2 else order[::-1]:
                for i in range(BLOCK):
                    began = time.perf_counter()
                    await (await launcher.launch(POLICY, _request("/bin/true"))).wait_exited()
                    if i >= WARMUP:
                        times[name].append(time.perf_counter() - began)
    for name, values in times.items():
        print(f"{name}: p50 {statistics.median(values) * 1e3:.2f} ms (n {len(values)})")
    ratio = statistics.median(times["this"]) / statistics.median(times["before"])
    print(f"this/before: {ratio:.3f}")


if __name__ == "__main__":
    trio.run(main)
