"""What bench/launch.py and bench/engine_profile.py share: the policy, statistics, the machine
header, and a way to start the engine's fork server with tweaks (warm launchers off, a probe)."""

from __future__ import annotations

import datetime
import inspect
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

BENCH = Path(__file__).resolve().parent
for _p in (str(BENCH), str(BENCH.parent)):  # this checkout's nonod, even when not installed
    if _p not in sys.path:
        sys.path.insert(0, _p)

from nonod.policy import Access, Grant, NetworkPolicy, ResolvedPolicy  # noqa: E402
from nonod.sandbox import Launcher, open_launcher  # noqa: E402

TRUE = "/bin/true"
ENV = {"PATH": "/usr/bin:/bin"}
# What every contender is asked for: read /usr and /etc, no network, everything else on.
POLICY = ResolvedPolicy(
    name="bench",
    grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ)),
    denials=(),
    network=NetworkPolicy(restricted=True, block=True),
)


def emit(data: dict[str, Any], *, as_json: bool,
         table: Callable[[dict[str, Any]], None]) -> None:
    """A script's results: JSON (``--json``), else its table."""
    if as_json:
        json.dump(data, sys.stdout, indent=1)
        print()
    else:
        table(data)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    return percentile(values, 0.5)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "n/a"


def _git_head() -> str:
    """The engine's revision: ``git describe`` of this checkout, or $BENCH_ENGINE_REV for an
    exported tree (``git archive``)."""
    if os.environ.get("BENCH_ENGINE_REV"):
        return os.environ["BENCH_ENGINE_REV"]
    try:
        out = subprocess.run(["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    return out.stdout.strip() or "not a git checkout"


def machine() -> dict[str, object]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "nproc": os.cpu_count() or 0,
        "nproc_usable": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "uid": os.getuid(),
        "loadavg_1m": os.getloadavg()[0],
        "engine": _git_head(),
        "warm_launchers": has_warm_launchers(),
    }


def has_warm_launchers() -> bool:
    """True when the engine's fork server keeps launchers ready (``serve(..., warm=...)``)."""
    from nonod.sandbox import _forkserver

    return "warm" in inspect.signature(_forkserver.serve).parameters


@asynccontextmanager
async def fork_server(*, probe_file: str | None = None, cold: bool = False,
                      pyinit: bool = False, tree: str | None = None) -> AsyncIterator[Launcher]:
    """``open_launcher()``; or the same fork server started the same way but with
    bench/_probe.py installed before it serves (``probe_file``), with its warm launchers
    turned off (``cold``), without ``nono-reaper``: every session's init stays the Python
    interpreter it was before (``pyinit``), or run from the source tree ``tree`` (another
    commit's, its ``nono-reaper`` built there) instead of ours: a before/after in one run.
    Follows ``nonod.sandbox._api.open_launcher``."""
    if probe_file is None and not cold and not pyinit and tree is None:
        async with open_launcher() as launcher:
            yield launcher
        return
    path = [tree] if tree is not None else []
    boot = f"import sys; sys.path[:0] = {[*path, *(p for p in sys.path if p)]!r}; "
    if probe_file is not None:
        boot += f"import _probe; _probe.install({probe_file!r}); "
    boot += "from nonod.sandbox import _forkserver as F; "
    if cold:
        boot += ("import functools, inspect; "
                 "F.serve = functools.partial(F.serve, warm=False) "
                 "if 'warm' in inspect.signature(F.serve).parameters else F.serve; ")
    if pyinit:
        boot += ("import functools, inspect; "
                 "F.serve = functools.partial(F.serve, reaper=-1) "
                 "if 'reaper' in inspect.signature(F.serve).parameters else F.serve; ")
    boot += "F.main()"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", boot, str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),), env={"PATH": os.defpath},
            stdin=subprocess.DEVNULL, close_fds=True)
    finally:
        theirs.close()
    launcher = Launcher(proc, trio.socket.from_stdlib_socket(ours))
    try:
        yield launcher
    finally:
        with trio.CancelScope(shield=True):
            await launcher.aclose()
