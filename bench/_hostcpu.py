"""Where the host's CPU went during a timed window, beyond the processes we can name.

``snapshot()`` reads ``/proc/stat``'s first line (time by category: user, system, irq,
softirq...), ``/proc/softirqs`` (counts by kind, all CPUs) and every process's own and
reaped CPU (``/proc/<pid>/stat``); ``split(before, after, ours)`` says, in ms over the
window, how much went to each category, to kernel threads by name (``kworker/0:1-events``
-> ``kworker events``: the workqueue the worker last served, when the kernel says it), to
the processes of ``ours`` (pids: the daemon's tree, read live), and to every other process
(``other: <comm>``), plus the softirq counts by kind. A process that started and ended
inside the window counts where its parent reaps it (``cutime``): ours when the daemon's
tree reaped it, the host's otherwise (``other: <comm of the reaper>``).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
_PF_KTHREAD = 0x00200000
_STAT_NAMES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass
class Snapshot:
    stat: dict[str, float] = field(default_factory=dict)       # category -> ms
    softirqs: dict[str, int] = field(default_factory=dict)     # kind -> count, all CPUs
    procs: dict[int, tuple[str, bool, float, float]] = field(default_factory=dict)
    # pid -> (comm, kernel thread?, own ms, reaped ms)


def _stat() -> dict[str, float]:
    values = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return {name: int(v) * _TICK_MS for name, v in zip(_STAT_NAMES, values, strict=False)}


def _softirqs() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/softirqs").read_text().splitlines()[1:]:
        name, _, counts = line.partition(":")
        out[name.strip()] = sum(int(c) for c in counts.split())
    return out


def _runtime_ms(pid: int) -> float:
    """The CPU time of ``pid``'s live threads, ns-exact (``schedstat``)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6


def process_cpu(pid: int) -> tuple[str, bool, float, float]:
    """(comm, kernel thread?, own ms, reaped children's ms) of ``pid``. ``/proc/<pid>/stat``
    gives the own time in whole clock ticks (10 ms), cut down per process: summed over the
    hundreds of small processes of a fleet (a session's init, its ``sleep``, each a few ms)
    that loses ms per session. The own time is the larger of that and the live threads'
    exact ``schedstat`` (which misses ended threads); the reaped time is exact but for one
    cut per process. OSError once the process is gone."""
    head, tail = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    f = tail.split()
    own = (int(f[11]) + int(f[12])) * _TICK_MS
    return (head.split("(", 1)[1], bool(int(f[6]) & _PF_KTHREAD),
            max(own, _runtime_ms(pid)), (int(f[13]) + int(f[14])) * _TICK_MS)


def _procs() -> dict[int, tuple[str, bool, float, float]]:
    out: dict[int, tuple[str, bool, float, float]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                out[int(entry.name)] = process_cpu(int(entry.name))
    return out


def snapshot() -> Snapshot:
    return Snapshot(_stat(), _softirqs(), _procs())


def _kthread_name(comm: str) -> str:
    """``kworker/1:2H-kblockd`` -> ``kworker kblockd``; ``ksoftirqd/0`` -> ``ksoftirqd``."""
    if comm.startswith("kworker"):
        _, _, wq = comm.partition("-")
        return f"kworker {wq or '(idle)'}"
    return re.sub(r"/\d+$", "", comm)


def split(before: Snapshot, after: Snapshot, ours: set[int]) -> dict[str, dict[str, float]]:
    """``{"stat": category -> ms, "kernel threads": name -> ms, "others": comm -> ms,
    "ours": {"processes": ms}, "softirqs": kind -> count}`` over the window."""
    stat = {k: after.stat[k] - before.stat.get(k, 0.0) for k in after.stat}
    kthreads: dict[str, float] = {}
    others: dict[str, float] = {}
    ours_ms = 0.0
    for pid, (comm, kthread, own, reaped) in after.procs.items():
        _, _, own0, reaped0 = before.procs.get(pid, (comm, kthread, 0.0, 0.0))
        own_d, reaped_d = own - own0, reaped - reaped0
        if pid in ours:
            ours_ms += own_d + reaped_d
        elif kthread:
            name = _kthread_name(comm)
            kthreads[name] = kthreads.get(name, 0.0) + own_d
        else:
            others[comm] = others.get(comm, 0.0) + own_d + reaped_d
    soft = {k: float(after.softirqs[k] - before.softirqs.get(k, 0)) for k in after.softirqs}
    return {"stat": stat, "kernel threads": _top(kthreads), "others": _top(others),
            "ours": {"processes": ours_ms}, "softirqs": soft}


def _top(d: dict[str, float]) -> dict[str, float]:
    return dict(sorted(((k, v) for k, v in d.items() if v > 0), key=lambda kv: -kv[1]))


def describe(parts: dict[str, dict[str, float]], per: int) -> list[str]:
    """Lines for a report, ms per ``per`` (sessions)."""
    n = max(1, per)
    stat = parts["stat"]
    busy = sum(v for k, v in stat.items() if k not in ("idle", "iowait"))
    lines = [f"host CPU ms per session by category: busy {busy / n:.2f} = "
             + ", ".join(f"{k} {v / n:.2f}" for k, v in stat.items()
                         if k not in ("idle", "iowait") and v > 0)]
    kt = parts["kernel threads"]
    lines.append(f"  kernel threads {sum(kt.values()) / n:.2f}: "
                 + ", ".join(f"{k} {v / n:.2f}" for k, v in list(kt.items())[:10]))
    ot = parts["others"]
    lines.append(f"  ours {parts['ours']['processes'] / n:.2f}; other processes "
                 f"{sum(ot.values()) / n:.2f}: "
                 + ", ".join(f"{k} {v / n:.2f}" for k, v in list(ot.items())[:8]))
    lines.append("  softirqs per session: " + ", ".join(
        f"{k} {v / n:.1f}" for k, v in parts["softirqs"].items() if v > 0))
    return lines


#: ``perf record --control fifo:CTL,ACK --delay=-1 ...`` started beside the benchmark, with
#: this variable set to ``CTL,ACK``: the timed window alone is recorded.
PERF_CONTROL_ENV = "BENCH_PERF_CONTROL"


def perf_control(command: str) -> None:
    """Say ``enable`` or ``disable`` to a ``perf record`` waiting on its control fifo
    (``$BENCH_PERF_CONTROL``: ``CTL,ACK``); nothing without the variable."""
    spec = os.environ.get(PERF_CONTROL_ENV)
    if not spec:
        return
    ctl, _, ack = spec.partition(",")
    with open(ctl, "w") as f:
        f.write(command + "\n")
    if ack:
        with open(ack) as f:
            f.readline()
