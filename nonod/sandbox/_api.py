"""Async face of the engine: a fork-server handle that launches confined processes."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

from ..policy import ResolvedPolicy
from ._types import EnforcementReport, ExitStatus, LaunchRequest


@final
class Sandboxed:
    """A running confined program. ``pid`` is its pid in the daemon's pid namespace."""

    pid: int
    enforcement: EnforcementReport

    async def wait_exited(self) -> ExitStatus:
        raise NotImplementedError

    @property
    def exit_status(self) -> ExitStatus | None:
        """The status once the program has ended, else None."""
        raise NotImplementedError

    def send_signal(self, sig: int) -> None:
        """Signal the program (a no-op once it has exited)."""
        raise NotImplementedError

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@final
class Launcher:
    """Handle on the fork server: a single-threaded helper that forks launchers."""

    async def launch(
        self,
        policy: ResolvedPolicy,
        request: LaunchRequest,
        *,
        stdio: tuple[int, int, int] = (0, 1, 2),
        controlling_tty: bool = False,
    ) -> Sandboxed:
        """Start ``request.argv`` confined by ``policy``; raise LaunchError if it cannot be."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


@asynccontextmanager
async def open_launcher() -> AsyncIterator[Launcher]:
    """Start the fork server; stop it (and every session it started) on exit."""
    raise NotImplementedError
    yield Launcher()  # pragma: no cover


async def launch_and_wait(
    policy: ResolvedPolicy,
    request: LaunchRequest,
    *,
    stdio: tuple[int, int, int] = (0, 1, 2),
) -> tuple[ExitStatus, EnforcementReport]:
    async with open_launcher() as launcher:
        proc = await launcher.launch(policy, request, stdio=stdio)
        return await proc.wait_exited(), proc.enforcement
