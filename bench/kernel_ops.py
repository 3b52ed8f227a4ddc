"""What the kernel charges for a session's namespaces and groups, each alone, per operation.

Each kind of operation runs ``--ops`` times in forked children of this (small) process, one
at a time; per operation: the children's CPU (``RUSAGE_CHILDREN``: the syscalls, their
exit), the kernel threads' CPU over the whole window (``kworker``s: a network namespace's
``cleanup_net``, a memory group's offline work; RCU; bench/_hostcpu.py) after a settle of
``--settle`` s for the deferred work, and the host's softirq time. ``fork`` (a child that
exits at once) is the floor the others include.

  fork        a child that exits
  netns       ``unshare(CLONE_NEWNET)``, then exit (the namespace torn down in a kworker)
  netns+lo    the same with ``lo`` brought up (``_libc.set_loopback_up``: what an init does)
  userns+mnt  ``unshare(CLONE_NEWUSER | CLONE_NEWNS)``: a copy of this process's mount table
              (``--mounts``: how many it has), then exit
  cgroup v1   ``mkdir`` of a group in each v1 hierarchy a session gets (memory, pids,
              cpuacct), then ``rmdir`` (root, v1 only)

    .venv/bin/python bench/kernel_ops.py [--ops 300] [--settle 3] [--json]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _hostcpu
from _common import emit, machine

from nonod.sandbox import _libc

V1 = ("memory", "pids", "cpuacct")


def _in_child(op: Callable[[], None]) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            op()
            os._exit(0)
        except BaseException:  # noqa: BLE001 - the exit status tells
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"operation failed in its child (status {status})")


def _netns(lo: bool) -> Callable[[], None]:
    def op() -> None:
        _libc.unshare(_libc.CLONE_NEWNET)
        if lo:
            _libc.set_loopback_up()
    return lambda: _in_child(op)


def _usermnt() -> None:
    _in_child(lambda: _libc.unshare(_libc.CLONE_NEWUSER | _libc.CLONE_NEWNS))


def _cgroup_v1(tag: str) -> Callable[[], None]:
    dirs = [f"/sys/fs/cgroup/{c}" for c in V1 if os.path.isdir(f"/sys/fs/cgroup/{c}/")]
    count = [0]

    def op() -> None:
        count[0] += 1
        made = [os.path.join(d, f"{tag}-{count[0]}") for d in dirs]
        for path in made:
            os.mkdir(path)
        for path in made:
            os.rmdir(path)
    return op


def measure(name: str, op: Callable[[], None], ops: int, settle: float) -> dict[str, Any]:
    before = _hostcpu.snapshot()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(ops):
        op()
    wall = time.perf_counter() - t0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(settle)
    parts = _hostcpu.split(before, _hostcpu.snapshot(), {os.getpid()})
    kthreads = parts["kernel threads"]
    per = 1000 / ops
    return {
        "op": name, "ops": ops, "wall_ms": wall * per,
        "children_ms": ((kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime))
        * per,
        "self_ms": ((self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)) * per,
        "kthreads_ms": sum(kthreads.values()) / ops,
        "kthreads_top": {k: v / ops for k, v in list(kthreads.items())[:4]},
        "softirq_ms": parts["stat"].get("softirq", 0.0) / ops,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    mounts = len(Path("/proc/self/mountinfo").read_text().splitlines())
    kinds: list[tuple[str, Callable[[], None]]] = [
        ("fork", lambda: _in_child(lambda: None)),
        ("netns", _netns(False)),
        ("netns+lo", _netns(True)),
        (f"userns+mnt ({mounts} mounts)", _usermnt),
    ]
    if os.geteuid() == 0 and os.path.isdir("/sys/fs/cgroup/memory"):
        kinds.append(("cgroup v1 mkdir+rmdir x3", _cgroup_v1(f"kops-{os.getpid()}")))
    rows = [measure(name, op, args.ops, args.settle) for name, op in kinds]
    return {"machine": machine(), "rows": rows}


def _table(data: dict[str, Any]) -> None:
    print(f"# kernel cost per operation -- {data['machine']['date']}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'operation':<30} {'wall':>7} {'children':>9} {'self':>7} {'kthreads':>9} "
          f"{'softirq':>8}  (ms per op)  kernel threads")
    for r in data["rows"]:
        top = ", ".join(f"{k} {v:.3f}" for k, v in r["kthreads_top"].items())
        print(f"{r['op']:<30} {r['wall_ms']:7.3f} {r['children_ms']:9.3f} {r['self_ms']:7.3f} "
              f"{r['kthreads_ms']:9.3f} {r['softirq_ms']:8.3f}  {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    emit(bench(args), as_json=args.json, table=_table)


if __name__ == "__main__":
    main()
