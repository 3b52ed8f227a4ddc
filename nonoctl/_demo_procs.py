"""Processes the demo starts: ``nonoctl`` commands, and ``nonod`` in the foreground.

Commands are argument lists, never shell strings. ``nonod`` runs in its own process group
with systemd's readiness protocol (``NOTIFY_SOCKET``): the demo waits for ``READY=1``
instead of polling its socket, and ends the whole group on the way out, whatever happened.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import final

import trio

from ._demo_report import DemoError


@dataclass(frozen=True)
class Done:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


async def run(argv: Sequence[str], *, env: dict[str, str], cwd: Path | None = None,
              timeout: float = 60) -> Done:
    """Run a command to its end and capture its output."""
    with trio.fail_after(timeout):
        done = await trio.run_process(list(argv), env=env, cwd=cwd, check=False,
                                      capture_stdout=True, capture_stderr=True,
                                      stdin=subprocess.DEVNULL)
    return Done(tuple(argv), done.returncode, done.stdout.decode(errors="replace"),
                done.stderr.decode(errors="replace"))


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args``, with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


@final
class Daemon:
    """A ``nonod`` (in the foreground, its default) that said READY=1."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self._process.pid

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM (the daemon stops its sessions first), then wait; SIGKILL the group after
        ``grace``. Returns the daemon's exit status, or None if it had to be killed."""
        if self.exit_code is None:
            self.exit_code = await _end_group(self._process, grace)
        return self.exit_code


@asynccontextmanager
async def open_daemon(argv: Sequence[str], *, env: dict[str, str], notify_path: Path,
                      log: Path, ready_timeout: float = 30) -> AsyncIterator[Daemon]:
    """Start ``argv`` (a ``nonod``, in the foreground), wait for READY=1, stop it on exit."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as raw:
        raw.bind(str(notify_path))
        notify = trio.socket.from_stdlib_socket(raw.dup())
    with notify, open(log, "ab") as sink:
        process = await trio.lowlevel.open_process(
            list(argv), env={**env, "NOTIFY_SOCKET": str(notify_path)},
            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True)
        daemon = Daemon(process)
        try:
            await _wait_ready(notify, process, log, ready_timeout)
            yield daemon
        finally:
            with trio.CancelScope(shield=True):
                await daemon.stop()


async def _wait_ready(notify: trio.socket.SocketType, process: trio.Process, log: Path,
                      timeout: float) -> None:
    """READY=1 on the notify socket; DemoError if the daemon exits first or takes too long."""
    exited = False

    async def watch(cancel: trio.CancelScope) -> None:
        nonlocal exited
        await process.wait()
        exited = True
        cancel.cancel()

    with trio.move_on_after(timeout) as waited:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            while b"READY=1" not in (await notify.recv(4096)).split(b"\n"):
                pass
            nursery.cancel_scope.cancel()
    if exited:
        raise DemoError(f"nonod exited with status {process.returncode} before it was ready; "
                        f"the end of its log:\n{log_tail(log)}")
    if waited.cancelled_caught:
        raise DemoError(f"nonod did not say READY=1 within {timeout:.0f} s; the end of its "
                        f"log:\n{log_tail(log)}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


async def _end_group(process: trio.Process, grace: float) -> int | None:
    """SIGTERM the process, wait ``grace``; then SIGKILL its whole group and wait."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything it left behind in its group
    except ProcessLookupError:
        pass  # nothing left in the group
    with trio.move_on_after(5):
        await process.wait()
    code = process.returncode
    return code if code is not None and code >= 0 else None
