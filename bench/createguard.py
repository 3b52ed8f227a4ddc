"""What the creation guard costs a program: per-call latency of creating files, in one session
with the guard and one without, side by side.

Inside each session a Python program times ``--ops`` rounds of ``open(O_CREAT|O_EXCL)`` +
``close`` (then unlinks, untimed), round-robin over:

  guarded dir     the workdir W itself, where .envrc etc. are refused: the init emulates
  existing subdir W/src, which layer 2 rules: notified, then continued into the kernel
  new subdir      W/new, made in the session: emulated after a walk up to W
  /dev/shm        outside W: notified, then continued
  open, no O_CREAT  an existing file: never notified (the BPF filter checks the flags)

The session without the guard opts every refused name out (``writable_persistence``), so it
has the same mounts and layers but no second Landlock layer and no notifying filter.

With ``--nested``, a third session with the guard first runs a child that confines itself
further (``landlock_restrict_self``, as an agent's tool sandbox does) and exits: from then
on the init reads each emulated caller's ancestry (``_createserve.Domains``), which here is
the program itself.

    .venv/bin/python bench/createguard.py [--ops 2000] [--nested] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import trio
from _common import ENV, machine, median

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, launch_and_wait

PROGRAM = r"""
import os, sys, time, json
ops = int(sys.argv[1])
if sys.argv[2] == "nested":  # a tool sandbox ran: the init now checks each caller's ancestry
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pid = os.fork()
    if pid == 0:
        attr = ctypes.create_string_buffer((1 << 1).to_bytes(8, "little"), 8)
        fd = libc.syscall(444, attr, 8, 0)
        os._exit(0 if fd >= 0 and libc.syscall(446, fd, 0) == 0 else 1)
    if os.waitpid(pid, 0)[1] != 0:
        raise SystemExit("the tool could not confine itself")
os.mkdir("new")
open("existing", "w").close()
creat = os.O_CREAT | os.O_EXCL | os.O_WRONLY
cases = {"guarded dir": ("f", creat), "existing subdir": ("src/f", creat),
         "new subdir": ("new/f", creat), "/dev/shm": ("/dev/shm/f", creat),
         "open, no O_CREAT": ("existing", os.O_RDONLY)}
samples = {label: [] for label in cases}
for i in range(ops + ops // 10):  # round-robin, so that noise hits every case alike
    for label, (path, flags) in cases.items():
        t0 = time.perf_counter_ns()
        os.close(os.open(path, flags, 0o644))
        if i >= ops // 10:  # the first tenth warms up
            samples[label].append(time.perf_counter_ns() - t0)
        if flags & os.O_CREAT:
            os.unlink(path)
print(json.dumps({k: sorted(v)[len(v) // 2] / 1000 for k, v in samples.items()}))
"""


def _policy(work: Path, *, guard: bool) -> ResolvedPolicy:
    # Listing a directory opts every persistence path below it out (``_mounts``).
    opt_out = () if guard else (str(work),)
    return ResolvedPolicy(
        name="bench-createguard",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(work), access=Access.READWRITE)),
        denials=(), writable_persistence=opt_out)


async def _session(work: Path, ops: int, guard: bool, nested: bool = False
                   ) -> dict[str, float]:
    out_r, out_w = os.pipe()
    request = LaunchRequest(argv=("/usr/bin/python3", "-S", "-c", PROGRAM, str(ops),
                                  "nested" if nested else "flat"),
                            cwd=str(work), env=tuple(ENV.items()))
    status, report = await launch_and_wait(_policy(work, guard=guard), request,
                                           stdio=(0, out_w, 2))
    os.close(out_w)
    with os.fdopen(out_r, "rb") as f:
        data = f.read()
    layers = {layer.name for layer in report.layers}
    if status.code != 0 or ("creation_guard" in layers) != guard:
        raise SystemExit(f"session failed: {status} {report.summary()}")
    result: dict[str, float] = json.loads(data)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None,
                        help="where to make the workdirs (default: the system's temp dir)")
    parser.add_argument("--nested", action="store_true",
                        help="also a guarded session in which a tool sandbox ran first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = [("guard", True, False), ("no guard", False, False)]
    if args.nested:
        kinds.append(("guard, nested", True, True))
    results: dict[str, dict[str, list[float]]] = {label: {} for label, _, _ in kinds}
    for _ in range(args.rounds):
        for label, guard, nested in kinds:
            work = Path(tempfile.mkdtemp(prefix="nono-bench-", dir=args.dir))
            (work / "src").mkdir()
            try:
                for k, v in trio.run(_session, work, args.ops, guard, nested).items():
                    results[label].setdefault(k, []).append(v)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    summary = {label: {k: round(median(v), 1) for k, v in rows.items()}
               for label, rows in results.items()}
    if args.json:
        json.dump({"machine": machine(), "ops": args.ops, "rounds": args.rounds,
                   "p50_us": summary}, sys.stdout, indent=2)
        print()
        return
    print(f"p50 per call in microseconds, median of {args.rounds} sessions x {args.ops} calls")
    labels = [label for label, _, _ in kinds]
    print(f"{'':20}" + "".join(f" {label:>14}" for label in labels))
    for k in summary["guard"]:
        print(f"{k:20}" + "".join(f" {summary[label][k]:>14}" for label in labels))


if __name__ == "__main__":
    main()
