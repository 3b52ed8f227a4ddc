"""What another local user's refused calls cost the daemon's fs_denied reader (root only).

The daemon's monitor (``open_fs_denied_monitor``, real kernel audit) runs in a process of
its own; another user (``--user``, made with ``useradd``; its processes need an unset
loginuid) floods for ``--seconds``, and the monitor's process reports its CPU meanwhile (the
share of a core its event loop spent reading records), for each kind of flood:

- ``random``: one process looping on a refused open, with a loginuid no rule matches;
- ``tag``: the same with the daemon's tag as its loginuid (any session process shows it);
- ``fresh``: a fresh process (a fresh audit session) with the tag every 64 refused opens;
- ``landlock``: one landlocked process looping on an open Landlock refuses (no tag).

With ``--before DIR`` the same runs with that checkout too, alternating ``--rounds`` times
(medians).

    .venv/bin/python bench/fs_denied_outsider.py --user NAME [--seconds 2] [--rounds 3]
        [--before /tmp/redteam26-base]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

#: argv: the loginuid to write ("-": none), seconds, "fresh" for a fresh process (a fresh
#: audit session) every 64 refused opens, else one process throughout, and the file to open.
FLOOD = r"""
import os, sys, time
loginuid, end, fresh = sys.argv[1], time.monotonic() + float(sys.argv[2]), sys.argv[3] == "fresh"

def refuse_64():
    for _ in range(64):
        try:
            os.open(sys.argv[4], os.O_RDONLY)
        except PermissionError:
            pass

if loginuid != "-" and not fresh:
    open("/proc/self/loginuid", "w").write(loginuid)
while time.monotonic() < end:
    if not fresh:
        refuse_64()
    elif (pid := os.fork()) == 0:
        open("/proc/self/loginuid", "w").write(loginuid)
        refuse_64()
        os._exit(0)
    else:
        os.waitpid(pid, 0)
"""

#: The same, landlocked first (no rule: every read refused by Landlock, after the file's
#: own permissions allowed it).
LANDLOCK = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
handled = ctypes.c_uint64(1 << 2)  # LANDLOCK_ACCESS_FS_READ_FILE
fd = libc.syscall(444, ctypes.byref(handled), 8, 0)
assert fd >= 0 and libc.prctl(38, 1, 0, 0, 0) == 0 and libc.syscall(446, fd, 0) == 0
""" + FLOOD

#: Run in the checkout under test: the monitor, each flood as the user, the CPU per flood.
MONITOR = r"""
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import trio
from nonod.audit import _kernel

user, seconds, floods = sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])

async def main():
    async with _kernel.open_fs_denied_monitor("auto") as monitor:
        out = {}
        for name, (code, loginuid, how, path) in floods.items():
            value = {"tag": str(monitor.tag), "random": str(monitor.tag + 12345)}.get(loginuid, "-")
            flood = subprocess.Popen(["setpriv", f"--reuid={user}", f"--regid={user}",
                                      "--clear-groups", sys.executable, "-S", "-c", code,
                                      value, str(seconds + 1), how, path])
            await trio.sleep(0.5)
            cpu, wall = time.process_time(), time.monotonic()
            await trio.sleep(seconds)
            out[name] = (time.process_time() - cpu) / (time.monotonic() - wall)
            flood.wait()
        print(json.dumps(out))

trio.run(main)
"""

FLOODS = {"random": (FLOOD, "random", "one", "/etc/shadow"),
          "tag": (FLOOD, "tag", "one", "/etc/shadow"),
          "fresh": (FLOOD, "tag", "fresh", "/etc/shadow"),
          "landlock": (LANDLOCK, "-", "one", "/etc/passwd")}


def run(tree: str, user: str, seconds: float) -> dict[str, float]:
    import json

    done = subprocess.run([sys.executable, "-c", MONITOR, tree, user, str(seconds),
                           json.dumps(FLOODS)], capture_output=True, text=True, check=True)
    [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]  # not logs
    result: dict[str, float] = json.loads(line)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", required=True, help="the other local user (useradd)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="DIR", help="another checkout to compare with")
    args = parser.parse_args()
    trees = [("before", args.before)] if args.before else []
    trees.append(("after", str(HERE)))
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for _ in range(args.rounds):
        for label, tree in trees:
            runs[label].append(run(tree, args.user, args.seconds))
    print("flood      " + "".join(f"{label:>10}" for label, _ in trees)
          + "   (the monitor's CPU, share of a core, median)")
    for name in FLOODS:
        print(f"{name:<11}" + "".join(
            f"{statistics.median(r[name] for r in runs[label]):>10.0%}" for label, _ in trees))


if __name__ == "__main__":
    main()
