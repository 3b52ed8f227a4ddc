"""How long a path the host creates stays readable in a session before the view guard masks it.

A denied path that does not exist at launch cannot be mounted over; the view guard watches its
parent and mounts the mask when the host makes it (docs/security-model.md, "absent paths").
This measures that window from inside a session: the program spins on ``listdir`` of the path
while the host makes it; the host notes the time just before its ``mkdir``, the program the
first time it saw the directory's contents (if it ever did) and the first time it got EACCES.
Both read CLOCK_MONOTONIC (no time namespace), so the differences are comparable.

The session first runs ``--settle`` seconds (0.2 by default), so that the paths are made once
the guard is what it stays for the session (the fork server's repairs, since the outer
launcher hands it over after 50 ms; before that, the outer launcher in Python).

Run as root (the launcher's runner is started like the tests'):

    .venv/bin/python bench/guard_window.py [--trials 30] [--settle 0.2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench._common import percentile  # noqa: E402
from nonod.policy import Access, Denial, Grant, ResolvedPolicy  # noqa: E402
from nonod.sandbox import LaunchRequest  # noqa: E402

RUNNER = BENCH.parent / "tests" / "sandbox_runner.py"
PROGRAM = """
import os, sys, time
home, n = sys.argv[1], int(sys.argv[2])
time.sleep(float(sys.argv[3]))
for k in range(n):
    path = f"{home}/.d{k}"
    open(f"{home}/w/ready{k}", "w").close()
    seen = 0.0
    while True:
        try:
            os.listdir(path)
            seen = seen or time.monotonic()
        except FileNotFoundError:
            continue
        except PermissionError:
            print(k, seen, time.monotonic(), flush=True)
            break
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds the session runs before the first path (default 0.2: past "
                         "the 50 ms after which the guard is what it stays; 0: from launch)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="nono-bench-"))
    home = base / "home"
    (home / "w").mkdir(parents=True)
    n = args.trials
    policy = ResolvedPolicy(
        name="guard-window",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(home), access=Access.READWRITE)),
        denials=tuple(Denial(path=f"{home}/.d{k}") for k in range(n)),
    )
    request = LaunchRequest(argv=("/usr/bin/python3", "-S", "-c", PROGRAM, str(home), str(n),
                                  str(args.settle)), cwd=str(home / "w"))
    made: dict[int, float] = {}

    def host() -> None:
        for k in range(n):
            deadline = time.monotonic() + 60
            while not (home / "w" / f"ready{k}").exists() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.01)  # the program is spinning on the path by now
            made[k] = time.monotonic()
            (home / f".d{k}").mkdir()
            (home / f".d{k}" / "secret").write_text("x")

    thread = threading.Thread(target=host)
    thread.start()
    try:
        line = msgspec.json.encode({"policy": policy, "request": request}) + b"\n"
        proc = subprocess.run([sys.executable, str(RUNNER)], input=line, capture_output=True,
                              timeout=300, check=False)
    finally:
        thread.join()
        shutil.rmtree(base, ignore_errors=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        print(proc.stdout.decode(errors="replace"), file=sys.stderr)
        print(proc.stderr.decode(errors="replace"), file=sys.stderr)
        return 1
    windows, seen = [], 0
    for row in proc.stdout.decode().split("\n"):
        if not row.strip():
            continue
        k, first, masked = row.split()
        windows.append((float(masked) - made[int(k)]) * 1e6)
        seen += float(first) > 0
    out = {"trials": n, "readable_before_masked": seen,
           "us_p50": percentile(windows, 0.5), "us_p90": percentile(windows, 0.9),
           "us_max": max(windows)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{n} paths made on the host while a session spun on them: contents listed "
              f"before the mask in {seen}; host mkdir -> EACCES in the session: "
              f"p50 {out['us_p50']:.0f} us, p90 {out['us_p90']:.0f} us, "
              f"max {out['us_max']:.0f} us")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
