"""Run ``nonod`` with its launch path's steps timed (bench/daemon_steps.py starts it).

    python bench/_daemon_trace.py OUT.json [nonod's arguments]

Wraps the daemon's launch steps (by module and qualified name, see ``STEPS``) to time each
call: wall time, and the main thread's CPU time over it (``time.thread_time``: with one
launch at a time the event loop runs little else meanwhile). Also counts every
``trio.to_thread.run_sync`` (a hop to a worker thread; by the function it runs, with its
wall time) and every ``os.fsync`` (by the function that called it). At exit (SIGTERM ends
the daemon normally) the samples go to OUT.json: ``{"step name": [[wall_ms, cpu_ms], ...]}``,
and every call's start and end (``time.perf_counter``: CLOCK_MONOTONIC, the clock a client
on the same host reads too) to OUT.json.events: ``[[name, start_s, end_s], ...]``, for
bench/daemon_steps.py's ``--timeline``.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: (module, qualified name, label): the label orders the table (the launch's order).
STEPS = (
    ("nonod.control._conversation", "Conversation.receive", "00 control: receive request"),
    ("nonod._profile_source", "ProfilePolicies.resolve_launch", "01 resolution"),
    ("nonod._profile_source", "ProfilePolicies.resolve_launch_early", "01 resolution"),
    ("nonod._profile_source", "ProfilePolicies._launch_policy", "01a profile loaded, resolved"),
    ("nonod.profiles._fslook", "FsLook.unchanged", "01b kept resolution checked"),
    ("nonod.sessions._caller_reads", "CallerReads.read", "01c caller's other files"),
    ("nonod.sessions._registry", "Registry.launch", "02 registry.launch (all below)"),
    ("nonod.sessions._registry", "Registry._check_launch", "03 checks"),
    ("nonod.sessions._start", "ProgramStarter._prepare", "04 prepare (with the audit file)"),
    ("nonod._session_services", "prepare", "05 services"),
    ("nonod.sessions._registry", "Registry._create_audit", "07 audit file create"),
    ("nonod.sessions._records", "make_private_dirs", "07a private directory"),
    ("nonod.sessions._start", "ProgramStarter._hide_secrets", "07b secret masks"),
    ("nonod.audit._writer", "_create_file", "07c audit file made"),
    ("nonod.sessions._audit", "SessionAudit.open", "08 first records + fsync"),
    ("nonod.sessions._limits", "SessionCgroups.create", "09 cgroup create"),
    ("nonod.sandbox._api", "Launcher.launch", "10 engine: Launcher.launch"),
    ("nonod.sandbox._plan", "build_plan", "11 engine: build_plan"),
    ("nonod._profile_source", "KeptCheck.wait_passed", "11a gate: kept resolution's check"),
    ("nonod.sandbox._api", "Launcher._take_place", "11b engine: the gate passed, a place"),
    # (daemon9's GO gate, not merged: the plan goes out before the gate, a place taken
    # before it; the gate has passed once the init is told so)
    ("nonod.sandbox._api", "_go", "11c engine: the gate passed, GO sent"),
    ("nonod.sessions._limits", "SessionCgroups.adopt", "12 cgroup adopt"),
    ("nonod.sessions._registry", "Registry._save", "13 session record"),
    ("nonod.sessions._start", "ProgramStarter._watch_fs_denied", "13a fs_denied watch"),
    ("nonod.sessions._audit", "SessionAudit.started", "13b enforcement record"),
    ("nonod.sessions._records", "enforcement_of", "13c enforcement for the record"),
    ("nonod.control._convert", "session_detail", "13e reply's session detail"),
    ("nonod.sessions._oomwatch", "OomWatches.watch", "13f OOM watch begun"),
    ("nonod.sessions._registry", "Registry._started", "13g started: log line, event"),
    ("nonod.control._conversation", "Conversation.send", "14 control: send reply"),
    ("nonod.sandbox._api", "Sandboxed.wait_exited", "15 engine: wait for the exit"),
    ("nonod.sessions._oomwatch", "OomWatches._end", "19 OOM watch ended"),
    ("nonod.sessions._registry", "Registry._finish", "20 finish (all below)"),
    ("nonod.cgroups._v1", "V1Group.usage", "20a cgroup usage (v1)"),
    ("nonod.cgroups._v2", "V2Group.usage", "20a cgroup usage (v2)"),
    ("nonod.sessions._session", "Session.close_terminal", "20b close terminal"),
    ("nonod.sessions._audit", "SessionAudit.close", "21 audit close + seal"),
    ("nonod.audit._writer", "Ledger.record", "22 ledger append"),
    ("nonod.sessions._registry", "Registry.reseal_truncated", "23 reseal_truncated"),
    ("nonod.sessions._registry", "Registry.apply_retention", "24 retention"),
    ("nonod.sessions._limits", "remove_group", "25 cgroup remove"),
    ("nonod.sessions._start", "ProgramStarter.release", "26 fs_denied release"),
    ("nonod.sessions._start", "ProgramStarter.release_started", "26 fs_denied flush begun"),
)

_SESSION_ID = re.compile(r"[0-9a-f]{8}")
SAMPLES: dict[str, list[tuple[float, float]]] = {}
#: Every call's (name, start, end), in perf_counter seconds.
EVENTS: list[tuple[str, float, float]] = []


def _record(label: str, t0: float, c0: float) -> None:
    t1 = time.perf_counter()
    SAMPLES.setdefault(label, []).append(((t1 - t0) * 1000,
                                          (time.thread_time() - c0) * 1000))
    EVENTS.append((label, t0, t1))


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return await fn(*args, **kwargs)
            finally:
                _record(label, t0, c0)
        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(label, t0, c0)
    return wrapper


def _name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", repr(fn))


def install() -> None:
    import trio

    for module_name, qualname, label in STEPS:
        module = importlib.import_module(module_name)
        owner: Any = module
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if not hasattr(owner, attr):  # another revision's daemon: not there
            continue
        setattr(owner, attr, _timed(label, getattr(owner, attr)))
        if not path:  # a module function other modules imported by name: theirs too
            for other in list(sys.modules.values()):
                if (other is not None and other is not module
                        and getattr(other, attr, None) is getattr(module, attr).__wrapped__):
                    setattr(other, attr, getattr(module, attr))

    run_sync = trio.to_thread.run_sync

    async def hop(fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        cpu = [0.0]  # the worker thread's CPU time over ``fn``, ms
        try:
            return await run_sync(_thread_timed(fn, cpu), *args, **kwargs)
        finally:
            t1 = time.perf_counter()
            SAMPLES.setdefault("hop " + _name(fn), []).append(((t1 - t0) * 1000, cpu[0]))
            EVENTS.append(("hop " + _name(fn), t0, t1))

    trio.to_thread.run_sync = hop  # type: ignore[assignment]
    _trace_goes_on()
    _trace_started()
    _trace_replies()
    real_fsync = os.fsync

    def fsync(fd: Any) -> None:
        t0 = time.perf_counter()
        try:
            real_fsync(fd)
        finally:
            t1 = time.perf_counter()
            caller = sys._getframe(1).f_code.co_qualname
            SAMPLES.setdefault("fsync " + caller, []).append(((t1 - t0) * 1000, 0.0))
            EVENTS.append(("fsync " + caller, t0, t1))

    os.fsync = fsync


def _thread_timed(fn: Callable[..., Any], cpu: list[float]) -> Callable[..., Any]:
    """``fn``, its thread's CPU time over each call put in ``cpu[0]`` (ms)."""
    def timed(*args: Any, **kwargs: Any) -> Any:
        c0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            cpu[0] = (time.thread_time() - c0) * 1000

    return timed


def _trace_goes_on() -> None:
    """``nonod._callerfs.in_thread_then`` (a later revision's): a hop that answers before its
    thread is done, as ``hop NAME (answer)``."""
    from nonod import _callerfs

    then = getattr(_callerfs, "in_thread_then", None)
    if then is None:
        return

    async def hop(caller: Any, fn: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await then(caller, fn, **kwargs)
        finally:
            t1 = time.perf_counter()
            label = "hop " + _name(fn) + " (answer)"
            SAMPLES.setdefault(label, []).append(((t1 - t0) * 1000, 0.0))
            EVENTS.append((label, t0, t1))

    _callerfs.in_thread_then = hop


def _trace_started() -> None:
    """``nonod._soon.Started`` work (started at once, awaited later): its time in the worker
    thread, as ``soon NAME`` (the name without its session id)."""
    from nonod import _soon

    init = _soon.Started.__init__

    def started_init(self: Any, fn: Callable[[], Any], *, name: str = "nonod worker",
                     **more: Any) -> None:
        label = "soon " + " ".join(w for w in name.split() if not _SESSION_ID.fullmatch(w))

        def timed() -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn()
            finally:
                t1 = time.perf_counter()
                SAMPLES.setdefault(label, []).append(((t1 - t0) * 1000,
                                                      (time.thread_time() - c0) * 1000))
                EVENTS.append((label, t0, t1))

        init(self, timed, name=name, **more)  # (``start``: a later revision's)

    _soon.Started.__init__ = started_init  # type: ignore[method-assign]


def _trace_replies() -> None:
    """Each reply sent, by its type (``send Launched``, ``send Exited``): the timeline's
    marks."""
    from nonod.control import _conversation

    send = _conversation.Conversation.send

    async def traced(self: Any, reply: Any) -> None:
        t0 = time.perf_counter()
        try:
            await send(self, reply)
        finally:
            EVENTS.append(("send " + type(reply).__name__, t0, time.perf_counter()))

    _conversation.Conversation.send = traced  # type: ignore[method-assign]


def main() -> int:
    out = Path(sys.argv[1])
    # The nonod of PYTHONPATH (bench/daemon.py's ``Daemon(tree=...)``), else this venv's.
    from nonod import _lean

    _lean.keep_out_rich()
    _lean.import_structlog()
    _lean.import_msgspec()
    _lean.import_trio_websocket()
    from nonod import _daemon  # noqa: F401 - the modules STEPS names, loaded first
    from nonod._main import main as run

    for module_name, _, _ in STEPS:
        importlib.import_module(module_name)
    if os.environ.get("NONO_TRACE_STEPS", "1") != "0":  # "0": the profile alone, unwrapped
        install()
    atexit.register(lambda: (out.write_text(json.dumps(SAMPLES)),
                             out.with_name(out.name + ".events").write_text(json.dumps(EVENTS))))
    if os.environ.get("NONO_TRACE_PROFILE"):  # the main thread under cProfile too
        import cProfile

        # NONO_TRACE_PROFILE_CPU: the main thread's CPU time, not the wall clock (which a
        # loaded host stretches wherever the thread waits for a CPU)
        profile = (cProfile.Profile(time.thread_time)
                   if os.environ.get("NONO_TRACE_PROFILE_CPU") else cProfile.Profile())
        atexit.register(lambda: profile.dump_stats(os.environ["NONO_TRACE_PROFILE"]))
        if os.environ.get("NONO_TRACE_PROFILE_WINDOW"):
            # only between SIGUSR1 and SIGUSR2 (a window the bench chooses: bench/ps_live.py)
            import signal

            signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
            signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
        else:
            profile.enable()
    return run(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
