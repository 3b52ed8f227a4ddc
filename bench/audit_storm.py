"""The daemon's cost of one session's refused calls, through the real kernel audit (root).

A tagged process (as a session's, loginuid = the monitor's tag) loops on a refused open for
``--seconds`` (``--procs`` of them, at nice 19 when more than one); the daemon's
``fs_denied`` monitor runs in this process beside a 1 ms ticker, whose lateness is the event
loop's lag (what every session's proxy would wait). Prints the calls made, the monitor's CPU
per call (the ticker's own CPU, measured first without a storm, subtracted) and the lag.
With ``--tree DIR`` the code under test is that checkout's ``nonod`` (an A/B against main):

    .venv/bin/python bench/audit_storm.py [--seconds 3] [--procs 1] [--tree /tmp/base]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench._tree import use_tree  # noqa: E402

use_tree()

import trio  # noqa: E402

import nonod  # noqa: E402
from bench._common import percentile  # noqa: E402
from nonod.audit import _kernel  # noqa: E402

DENIER = r"""
import os, sys, time
open("/proc/self/loginuid", "w").write(sys.argv[1])
os.write(int(sys.argv[4]), open("/proc/self/sessionid").read().encode() + b"\n")
time.sleep(0.1)  # the watch is set meanwhile
procs = int(sys.argv[3])
if procs > 1:
    os.nice(19)
os.setgid(65534); os.setuid(65534)
for _ in range(procs - 1):
    if os.fork() == 0:
        break
end, n = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    try:
        os.open("/etc/shadow", os.O_RDONLY)
    except PermissionError:
        n += 1
os.write(int(sys.argv[4]), f"{n}\n".encode())
"""


async def _ticking(seconds: float, during: bool, monitor: _kernel.FsDeniedMonitor,
                   args: argparse.Namespace) -> tuple[float, list[float], int]:
    lags: list[float] = []
    done = trio.Event()

    async def tick() -> None:
        while not done.is_set():
            start = trio.current_time()
            await trio.sleep(0.001)
            lags.append(trio.current_time() - start - 0.001)

    calls = 0
    cpu = time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        if during:
            r, w = os.pipe()
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-S", "-c", DENIER, str(monitor.tag), str(seconds),
                 str(args.procs), str(w)], pass_fds=(w,))
            os.close(w)
            stream = trio.lowlevel.FdStream(r)
            out = b""
            while b"\n" not in out:
                out += await stream.receive_some()
            watch = monitor.watch(int(out.split(b"\n")[0]), lambda _e: None)
            await proc.wait()
            await monitor.release(watch)
            while chunk := await stream.receive_some():
                out += chunk
            await stream.aclose()
            calls = sum(int(line) for line in out.split()[1:])
        else:
            await trio.sleep(seconds)
        done.set()
    return time.process_time() - cpu, lags, calls


async def _run(args: argparse.Namespace) -> dict[str, object]:
    async with _kernel.open_fs_denied_monitor("auto") as monitor:
        if not monitor.active:
            raise SystemExit(f"kernel audit unavailable: {monitor.status}")
        admit = getattr(monitor, "admit", None)  # (a tree from before the uid rules: none)
        if admit is not None and not await admit(65534):  # the flood's user has a session
            raise SystemExit("the kernel refused the audit rules of uid 65534")
        idle_cpu, _, _ = await _ticking(args.seconds, False, monitor, args)
        cpu, lags, calls = await _ticking(args.seconds, True, monitor, args)
    return {"tree": os.path.dirname(os.path.dirname(nonod.__file__)), "procs": args.procs,
            "calls": calls, "us_per_call": (cpu - idle_cpu) / max(calls, 1) * 1e6,
            "lag_ms_p99": percentile(lags, 0.99) * 1000, "lag_ms_max": max(lags) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--tree", default=str(BENCH.parent))
    args = ap.parse_args()
    print(json.dumps(trio.run(_run, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
