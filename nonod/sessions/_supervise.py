"""One running session's supervision, from ``started()`` to the program's exit.

:func:`supervise` runs the session's tasks (exit watcher, audit fsync timer unless the
daemon's syncer does it, proxy and forwards, PTY pump and output-log writer) until the
program exits or a stop cancels the session's ``stop_scope``; then, shielded and bounded,
:func:`terminate` ends the program: SIGTERM, the grace period, SIGKILL, a bounded wait. The
registry records the end.
"""

from __future__ import annotations

import functools
import signal as _signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import structlog
import trio

from .. import _session_services
from ..audit import AuditError
from ._contracts import Process
from ._oomwatch import OomWatches
from ._output import SessionOutput
from ._session import Session

if TYPE_CHECKING:
    from ..approvals import SessionAsker

log = structlog.get_logger()

#: How long the PTY pump may keep reading after the program exited (grandchildren may hold it).
DRAIN_TIMEOUT: Final = 2.0
#: How long to wait for a process after SIGKILL before giving up on it (and saying so).
KILL_TIMEOUT: Final = 10.0


async def supervise(
    session: Session,
    proc: Process,
    *,
    on_started: Callable[[], None],
    shutdown_grace: Callable[[], float],
    stop_grace: Callable[[], float],
    oom: OomWatches,
    asker: SessionAsker | None = None,
    on_exit_read: Callable[[], None] | None = None,
    replied: trio.Event | None = None,
) -> None:
    """Serve ``session`` until its program has exited (or could not be made to).

    ``stop_grace`` is the grace of a wall-clock stop; ``oom`` watches for its first OOM kill
    (the daemon's one watch of every session's); ``asker`` answers the proxy's approval
    questions (None: the profile asks none).

    ``on_started`` runs once every task is up; ``shutdown_grace`` is the grace period when the
    session is cancelled from outside (the daemon shutting down) rather than stopped.
    ``on_exit_read`` runs as soon as the program's exit status is read (before this
    returns: the session's end can begin what waits on the kernel meanwhile). With
    ``replied``, the OOM watch and ``on_started`` wait for it (the launch's reply first);
    what serves the program (proxy, terminal, timers) does not."""
    watch_scope = trio.CancelScope(shield=True)
    exited = trio.Event()

    async def watch() -> None:
        # Shielded: waiting for the exit must survive the session's own cancellation,
        # or the exit status would be lost. Cleanup cancels it only when giving up.
        with watch_scope:
            status = await proc.wait_exited()
            session.record.exit_code = status.code
            session.record.signal = status.signal
            if on_exit_read is not None:
                on_exit_read()
        exited.set()

    end_oom: Callable[[], None] | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            told = False
            pump_done: trio.Event | None = None
            # From the watch's start on, whatever ends this (a service that fails to start,
            # a cancel from outside at one of these awaits) ends the program in ``finally``:
            # the shielded watch would otherwise hold the nursery until it exits itself.
            try:
                wall_clock = (session.record.limits.wall_clock if session.record.limits
                              else None)
                if wall_clock:
                    nursery.start_soon(enforce_wall_clock, session, wall_clock, stop_grace)
                if session.audit is not None and session.audit.timer:
                    await nursery.start(session.audit.run)
                if session.services is not None and not session.services.idle(proc):
                    await nursery.start(functools.partial(
                        _session_services.serve, session.services, proc, session.audit_event,
                        asker=asker))
                if session.output is not None:
                    nursery.start_soon(session.output.run_writer)
                    done = pump_done = trio.Event()

                    async def pump(output: SessionOutput) -> None:
                        try:
                            await session.pump_terminal(output)
                        finally:
                            done.set()

                    nursery.start_soon(pump, session.output)
                with session.stop_scope:
                    if replied is not None:
                        await replied.wait()
                    # Its OOM kills are watched with every other session's: no task of its
                    # own for them (one counted before the watch began is found by it).
                    if session.cgroup is not None:
                        end_oom = oom.watch(session.cgroup, functools.partial(
                            session.request_stop, reason="oom", grace=0))
                    told = True
                    on_started()
                    await exited.wait()
            except Exception:
                session.end_with("error")  # (a service that could not start): said so
                raise
            finally:
                if not told:  # stopped before the reply went out (or its services failed to
                    # start): it started all the same
                    on_started()
                with trio.CancelScope(shield=True):
                    if not exited.is_set():
                        await terminate(session, proc, exited, watch_scope, shutdown_grace)
                    if session.output is not None:
                        if pump_done is not None:
                            with trio.move_on_after(DRAIN_TIMEOUT):
                                await pump_done.wait()
                        session.output.end()
                nursery.cancel_scope.cancel()
    finally:
        if end_oom is not None:
            end_oom()


async def enforce_wall_clock(session: Session, wall_clock: float,
                             stop_grace: Callable[[], float]) -> None:
    """End the session when its wall-clock limit is up."""
    await trio.sleep(wall_clock)
    session.request_stop(reason="wall_clock", grace=stop_grace())


async def terminate(
    session: Session,
    proc: Process,
    exited: trio.Event,
    watch_scope: trio.CancelScope,
    shutdown_grace: Callable[[], float],
) -> None:
    """SIGTERM, the grace period, SIGKILL, a bounded wait: the ``_run_process`` shape."""
    grace = session.stop_grace
    if grace is None:  # cancelled from outside: the daemon is shutting down
        grace = shutdown_grace()
        session.end_with("daemon_shutdown")
    why = session.stop_reason or "stopped"
    if grace > 0:
        proc.send_signal(_signal.SIGTERM)
        _audit_signal(session, _signal.SIGTERM, why)
        with trio.move_on_after(grace):
            await exited.wait()
    if not exited.is_set():
        proc.kill()
        _audit_signal(session, _signal.SIGKILL, f"{why}: grace period over" if grace > 0 else why)
        with trio.move_on_after(KILL_TIMEOUT):
            await exited.wait()
    if not exited.is_set():
        log.error("program did not exit after SIGKILL; no longer waiting for it", pid=proc.pid)
        watch_scope.cancel()


def _audit_signal(session: Session, sig: int, reason: str) -> None:
    try:
        session.audit_signal(sig, reason=reason)
    except AuditError:
        log.exception("could not record a signal in the audit stream", signal=sig)
