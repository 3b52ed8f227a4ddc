"""Timestamps from inside the fork server and its launchers, for bench/engine_profile.py.

``install(path)`` runs in an instrumented fork server before ``_forkserver.main()``. It maps a
shared file and wraps the engine's step runner and a few functions (fork, spawn, mounts...) so
that every process the server forks writes ``(launch id, role, label, t0, t1)`` records into it.
The mapping survives fork, pivot_root and close_range (it is memory, not a descriptor), and the
clock is CLOCK_MONOTONIC through the vDSO, so a record costs a few microseconds and no syscall.

Each process writes only to its own region, so no locking is needed: the fork server (single
threaded) hands out two regions per child it forks, one for the child and one for the child's
own child (the session's init).

Launches are told apart by their argv: ``/bin/true nono-bench-<id>``. A process learns the id
from the plan it runs (cold path) or receives (a warm launcher's init); until then its records
carry id 0 (preparation ahead of any launch).
"""

from __future__ import annotations

import functools
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

REGIONS = 4096
SLOTS = 256
SLOT = struct.Struct("<IBxxxqq32s")  # launch id, role, t0, t1, label
HEADER = struct.Struct("<IBxxxi")  # records used, role, pid
REGION_SIZE = 64 + SLOTS * SLOT.size
SIZE = REGIONS * REGION_SIZE
ROLES = ("parent", "server", "outer", "warm-outer", "init", "other")
TAG = b"nono-bench-"

_map: mmap.mmap | None = None
_region = 0  # this process's region
_child_region = -1  # region reserved for this process's child (outer -> init)
_next_region = 1  # fork server only
_role = ROLES.index("server")
_launch = 0
_count = 0
_fork_t0 = 0
_fork_t1 = 0


def now() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def stamp(label: str, t0: int, t1: int | None = None) -> None:
    global _count
    if _map is None or _region < 0 or _count >= SLOTS:
        return
    off = _region * REGION_SIZE
    SLOT.pack_into(_map, off + 64 + _count * SLOT.size, _launch, _role, t0,
                   t0 if t1 is None else t1, label.encode()[:32])
    _count += 1
    HEADER.pack_into(_map, off, _count, _role, os.getpid())


def _launch_id(data: bytes) -> int:
    i = data.find(TAG)
    if i < 0:
        return 0
    j = i + len(TAG)
    k = j
    while k < len(data) and 48 <= data[k] <= 57:
        k += 1
    return int(data[j:k]) if k > j else 0


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = now()
        try:
            return fn(*args, **kwargs)
        finally:
            stamp(label, t0, now())
    return wrapper


def _fork_wrapper(real: Callable[[], int]) -> Callable[[], int]:
    def fork() -> int:
        global _region, _child_region, _next_region, _role, _count, _fork_t0, _fork_t1
        t0 = now()
        reserved = -1
        if _role == ROLES.index("server"):
            reserved = _next_region
            _next_region += 2
        pid = real()
        if pid == 0:
            _fork_t0, _fork_t1, _count = t0, now(), 0
            if reserved >= 0:
                # stamped once run_outer/run_warm tells which launch this child is for
                _region, _child_region = reserved % REGIONS, (reserved + 1) % REGIONS
                _role = ROLES.index("outer")
            elif _child_region >= 0:
                _region, _child_region = _child_region, -1
                _role = ROLES.index("init")
                stamp("fork: child running", t0, _fork_t1)
            else:
                _region = -1  # a third generation (tty program fork): not recorded
        else:
            stamp("fork (parent side)", t0, now())
        return pid
    return fork


def _recv_wrapper(real: Callable[..., Any]) -> Callable[..., Any]:
    def recv_fds(*args: Any, **kwargs: Any) -> Any:
        global _launch
        result = real(*args, **kwargs)
        t = now()
        launch = _launch_id(result[0]) if result and result[0] else 0
        if launch:
            _launch = launch
        stamp("plan received", t)
        return result
    return recv_fds


def _outer_wrapper(real: Callable[..., Any], role: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        global _launch, _role
        _role = ROLES.index(role)
        plan = args[0] if args else None
        argv = getattr(plan, "argv", ())
        _launch = _launch_id(" ".join(argv).encode()) if argv else 0
        stamp("fork: child running", _fork_t0, _fork_t1)
        return real(*args, **kwargs)
    return run


def _step_wrapper(real: Callable[..., Any]) -> Callable[..., Any]:
    def step(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        inner = getattr(fn, "__wrapped__", fn)  # don't record a wrapped function twice
        label = f"{name}:{getattr(inner, '__name__', '?').lstrip('_')}"
        t0 = now()
        try:
            return real(name, inner, *args, **kwargs)
        finally:
            stamp(label, t0, now())
    return step


def _mount_label(args: tuple[Any, ...]) -> str:
    from nonod.sandbox import _libc

    source, _target, fstype, flags = [*args, None, None, None, 0][:4]
    if fstype:
        return f"mount({fstype})"
    if flags and flags & _libc.MS_BIND:
        return "mount(bind)" if source != "/.nono-empty" else "mount(mask file)"
    return "mount(propagation)"


def _mount_wrapper(real: Callable[..., Any]) -> Callable[..., Any]:
    def mount(*args: Any, **kwargs: Any) -> Any:
        t0 = now()
        try:
            return real(*args, **kwargs)
        finally:
            stamp(_mount_label(args), t0, now())
    return mount


def _write_wrapper(real: Callable[..., Any]) -> Callable[..., Any]:
    kinds = {1: "pid", 2: "error", 3: "exit"}

    def write_all(fd: int, data: bytes) -> Any:
        t0 = now()
        try:
            return real(fd, data)
        finally:
            stamp(f"report {kinds.get(data[0], '?') if data else '?'}", t0, now())
    return write_all


def _wrap_with(obj: Any, name: str,
               make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    real = getattr(obj, name, None)
    if real is not None:
        setattr(obj, name, make(real))


def _wrap(obj: Any, name: str, label: str) -> None:
    real = getattr(obj, name, None)
    if real is not None:
        setattr(obj, name, _timed(label, real))


def install(path: str) -> None:
    """Map ``path`` and wrap the engine. Call in the fork server, before it serves."""
    global _map
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)

    from nonod.sandbox import _forkserver, _launcher, _libc, _mounts

    _wrap_with(os, "fork", _fork_wrapper)
    _wrap_with(socket, "recv_fds", _recv_wrapper)
    _wrap(os, "posix_spawn", "posix_spawn (exec done)")
    _wrap(os, "waitpid", "waitpid")
    _wrap_with(_forkserver, "run_outer", functools.partial(_outer_wrapper, role="outer"))
    _wrap_with(_forkserver, "run_warm", functools.partial(_outer_wrapper, role="warm-outer"))
    _wrap_with(_launcher, "_step", _step_wrapper)
    _wrap_with(_launcher, "_write_all", _write_wrapper)
    for name in ("_close_except", "_pdeathsig", "_reset_signals", "_idmap", "_idmap_ids",
                 "limit_inotify", "_stdio", "prepare_init", "confine_and_run"):
        _wrap(_launcher, name, name.lstrip("_"))
    _wrap(_forkserver, "_reap", "server reap")
    _wrap(getattr(_forkserver, "_Warm", None), "hand_over", "server hand_over")
    _wrap(_libc, "unshare", "unshare()")
    _wrap_with(_libc, "mount", _mount_wrapper)
    for name in ("mount_setattr", "pivot_root", "umount2"):
        _wrap(_libc, name, f"{name}()")
    for name in ("_setup_dev", "prepare_root"):
        _wrap(_mounts, name, name.lstrip("_"))


def read_records(path: str) -> list[tuple[int, str, str, int, int]]:
    """Every record: (launch id, role, label, t0 ns, t1 ns)."""
    out: list[tuple[int, str, str, int, int]] = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), SIZE, prot=mmap.PROT_READ) as m:
        for region in range(REGIONS):
            off = region * REGION_SIZE
            count, _, _ = HEADER.unpack_from(m, off)
            for i in range(min(count, SLOTS)):
                launch, role, t0, t1, label = SLOT.unpack_from(m, off + 64 + i * SLOT.size)
                out.append((launch, ROLES[role] if role < len(ROLES) else "?",
                            label.rstrip(b"\0").decode(errors="replace"), t0, t1))
    return out
