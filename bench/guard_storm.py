"""Another session's view guard and launches, while one session storms its watched directory.

Session A makes and removes files at full speed (``--workers`` processes) in its working
directory, which the fork server's guard hub watches for it (an absent denied path lives
there). Session B, launched by the same fork server, spins on paths the host then creates
(as ``guard_window.py``): the time from the host's ``mkdir`` to ``EACCES`` in B is B's guard
window. Meanwhile a third, trivial session is launched a few times: its launch time. With
``--tree DIR`` the code under test is that checkout's ``nonod`` (an A/B against main):

    .venv/bin/python bench/guard_storm.py [--trials 20] [--workers 2] [--compiled]
                                          [--tree /tmp/base]

``--queue`` measures the hub alone (no sandbox, real inotify): the CPU it spends per event of
a queued storm of 14,000 events that wakes nobody, the median of five rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench._tree import use_tree  # noqa: E402

use_tree()

import trio  # noqa: E402

import nonod  # noqa: E402
from bench._common import percentile  # noqa: E402
from nonod.policy import Access, Denial, Grant, ResolvedPolicy  # noqa: E402
from nonod.sandbox import LaunchRequest, open_launcher  # noqa: E402

STORM = """
import os, sys
home, workers = sys.argv[1], int(sys.argv[2])
for w in range(workers - 1):
    if os.fork() == 0:
        break
else:
    w = workers - 1
open(f"{home}/storming{w}", "w").close()
n = 0
while True:
    for i in range(64):
        p = f"{home}/s{w}-{i}"
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
        os.unlink(p)
    n += 1
    if n % 16 == 0 and os.path.exists(f"{home}/stop"):
        break
"""

# The same loop in C, when a compiler is there (``--compiled``): what a program can do.
STORM_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char p[4096];
    int w = 0;
    for (int k = 1; k < atoi(argv[2]); k++)
        if (fork() == 0) { w = k; break; }
    snprintf(p, sizeof p, "%s/storming%d", argv[1], w);
    close(open(p, O_CREAT | O_WRONLY, 0600));
    for (long n = 1;; n++) {
        for (int i = 0; i < 64; i++) {
            snprintf(p, sizeof p, "%s/s%d-%d", argv[1], w, i);
            close(open(p, O_CREAT | O_WRONLY, 0600));
            unlink(p);
        }
        snprintf(p, sizeof p, "%s/stop", argv[1]);
        if (n % 64 == 0 && access(p, F_OK) == 0)
            return 0;
    }
}
"""

SPIN = """
import os, sys, time
home, n = sys.argv[1], int(sys.argv[2])
for k in range(n):
    path = f"{home}/.d{k}"
    open(f"{home}/w/ready{k}", "w").close()
    while True:
        try:
            os.listdir(path)
        except FileNotFoundError:
            continue
        except PermissionError:
            print(k, time.monotonic(), flush=True)
            break
"""


def _policy(name: str, home: Path, denials: list[str]) -> ResolvedPolicy:
    return ResolvedPolicy(
        name=name,
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(home), access=Access.READWRITE)),
        denials=tuple(Denial(path=str(home / d)) for d in denials))


async def _run(args: argparse.Namespace, base: Path) -> dict[str, object]:
    storm, spin = base / "storm", base / "spin"
    (spin / "w").mkdir(parents=True)
    storm.mkdir()
    n = args.trials
    made: dict[int, float] = {}
    launches: list[float] = []

    def host() -> None:
        for w in range(args.workers if args.workers else 0):
            while not (storm / f"storming{w}").exists():
                time.sleep(0.005)
        time.sleep(0.3)  # the hub has the storm's measure by now
        for k in range(n):
            deadline = time.monotonic() + 60
            while not (spin / "w" / f"ready{k}").exists() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.02)
            made[k] = time.monotonic()
            (spin / f".d{k}").mkdir()

    async with open_launcher() as launcher:
        stormer = None
        if args.workers:
            argv: tuple[str, ...] = ("/usr/bin/python3", "-S", "-c", STORM)
            if args.compiled:
                (base / "storm.c").write_text(STORM_C)
                subprocess.run(["cc", "-O2", "-o", str(storm / "storm"), str(base / "storm.c")],
                               check=True)
                argv = (str(storm / "storm"),)
            stormer = await launcher.launch(
                _policy("storm", storm, [".absent"]),
                LaunchRequest(argv=(*argv, str(storm), str(args.workers)), cwd=str(storm)),
                stdio=(0, 2, 2))
        r, w = os.pipe()
        spinner = await launcher.launch(
            _policy("spin", spin, [f".d{k}" for k in range(n)]),
            LaunchRequest(argv=("/usr/bin/python3", "-S", "-c", SPIN, str(spin), str(n)),
                          cwd=str(spin / "w")),
            stdio=(0, w, 2))
        os.close(w)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, host)
            for _ in range(args.launches):
                await trio.sleep(0.2)
                start = time.monotonic()
                small = await launcher.launch(
                    _policy("small", spin / "w", []),
                    LaunchRequest(argv=("/usr/bin/true",), cwd=str(spin / "w")))
                launches.append((time.monotonic() - start) * 1000)
                await small.wait_exited()
            await spinner.wait_exited()
        output = b""
        while chunk := os.read(r, 65536):
            output += chunk
        os.close(r)
        (storm / "stop").touch()
        if stormer is not None:
            await stormer.wait_exited()
    windows = []
    for row in output.decode().split("\n"):
        if row.strip():
            k, masked = row.split()
            windows.append((float(masked) - made[int(k)]) * 1000)
    return {"tree": os.path.dirname(os.path.dirname(nonod.__file__)), "workers": args.workers,
            "compiled": args.compiled,
            "trials": n, "window_ms_p50": percentile(windows, 0.5),
            "window_ms_p90": percentile(windows, 0.9), "window_ms_max": max(windows),
            "launch_ms_p50": percentile(launches, 0.5) if launches else 0.0,
            "launch_ms_max": max(launches, default=0.0)}


def _queue() -> dict[str, object]:
    import select
    import socket

    import msgspec

    from nonod.sandbox._guardhub import GuardHub

    base = Path(tempfile.mkdtemp(prefix="nono-bench-"))
    try:
        poller = select.poll()
        hub = GuardHub(poller)
        client = hub.new_client()
        client.send(b"O" + msgspec.msgpack.encode([str(base), f"{base}/.envrc"]))
        fd = os.open(base, os.O_PATH | os.O_DIRECTORY)
        socket.send_fds(client, [b"W" + msgspec.msgpack.encode([str(base)])], [fd])
        os.close(fd)
        client.setblocking(False)
        costs = []
        for _ in range(6):
            for k in range(7000):
                path = base / f"storm-file-{k % 64}"
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
                os.unlink(path)
            start = time.process_time()
            while ready := poller.poll(20):
                for fd, _ in ready:
                    hub.handle(fd)
                while True:
                    try:
                        client.recv(16)
                    except BlockingIOError:
                        break
            costs.append((time.process_time() - start) / 14000 * 1e6)
        costs = costs[1:]  # the first round also takes the watch request
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"tree": os.path.dirname(os.path.dirname(nonod.__file__)),
            "us_per_event_p50": percentile(costs, 0.5)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="storming processes (0: no storm)")
    ap.add_argument("--launches", type=int, default=5)
    ap.add_argument("--compiled", action="store_true", help="the storm in C (needs cc)")
    ap.add_argument("--tree", default=str(BENCH.parent))
    ap.add_argument("--queue", action="store_true", help="the hub alone: CPU per event")
    args = ap.parse_args()
    if args.queue:
        print(json.dumps(_queue()))
        return 0
    base = Path(tempfile.mkdtemp(prefix="nono-bench-"))
    try:
        out = trio.run(_run, args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
