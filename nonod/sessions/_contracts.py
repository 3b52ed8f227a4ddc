"""What the sessions need of others (the engine, the program) and the values a launch carries.

``Process`` and ``LauncherLike`` are what ``nonod.sandbox`` provides; a fake launcher that
satisfies them is enough to drive a :class:`~nonod.sessions.Registry` in tests. ``Caller`` is
a peer of the control socket; ``SessionPlan`` is one launch, decided by the control server.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from .. import protocol as p
from ..policy import ResolvedPolicy
from ..sandbox import EnforcementReport, ExitStatus, GuardReport, LaunchRequest

if TYPE_CHECKING:
    from ._caller_reads import CallerReads
    from ._session import Session


class Process(Protocol):
    """What the registry needs of a launched program (``nonod.sandbox.Sandboxed``): its exit,
    signals, the proxy socket made inside its network namespace, connections into it (for
    ``--listen-port``), its kernel audit session and the view guard's reports."""

    pid: int
    enforcement: EnforcementReport
    proxy_listener: socket.socket | None
    #: The kernel audit session of the session's processes (0: none; see ``audit._kernel``)
    #: and, when 0, why the kernel refused the tag.
    audit_session: int
    audit_session_error: int
    on_guard: Callable[[GuardReport], None] | None

    async def wait_exited(self) -> ExitStatus: ...

    def send_signal(self, sig: int) -> bool: ...

    def kill(self) -> None: ...

    async def connect_inside(self, port: int) -> trio.SocketStream: ...


class LauncherLike(Protocol):
    """What the registry needs of the engine (``nonod.sandbox.Launcher``)."""

    @property
    def mode(self) -> str:
        """``namespaces`` or ``landlock-only`` (``nonod.sandbox._mode``)."""
        ...

    @property
    def pid(self) -> int:
        """The fork server's pid, an ancestor of every session process."""
        ...

    async def launch(
        self,
        policy: ResolvedPolicy,
        request: LaunchRequest,
        *,
        stdio: tuple[int, int, int] = ...,
        controlling_tty: bool = ...,
        gate: Callable[[], Awaitable[None]] | None = ...,
    ) -> Process:
        """``gate`` is awaited before anything of the launch starts; what it raises
        refuses the launch."""
        ...


GetLauncher = Callable[[], Awaitable[LauncherLike]]


class ResolutionCheck(Protocol):
    """A kept profile resolution's check, running while the launch is prepared
    (``nonod._profile_source.KeptCheck``). The launch's gate waits for it: no program starts
    under a resolution whose check has not passed."""

    async def wait_passed(self) -> None:
        """Return once the check passed; raise (``ResolutionChanged``: the resolution is
        stale) otherwise."""
        ...

    def close(self) -> None:
        """Nobody will wait for it (the launch failed first)."""
        ...


@dataclass(frozen=True)
class Caller:
    """A peer of the control socket, from ``SO_PEERCRED``."""

    uid: int
    gid: int
    pid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def may_see(self, owner_uid: int) -> bool:
        return self.is_root or self.uid == owner_uid


@dataclass(frozen=True)
class SessionPlan:
    """Everything needed to start one session, decided by the connection handler."""

    policy: ResolvedPolicy
    request: LaunchRequest
    owner: Caller
    profile: str | None
    name: str | None
    detach: bool
    stdio: p.Stdio
    passed_fds: tuple[int, int, int] | None = None
    term: p.TermSize | None = None
    trust_override: bool = False
    #: ``launch --audit-sign-key``: overrides ``[audit] sign_key`` for this session.
    audit_sign_key: str | None = None
    #: The session this one runs a tool for (``nonod.toolsandbox``).
    parent: str | None = None
    #: What was read of the caller's files in the profile's worker thread (``_caller_reads``;
    #: None: the preparation reads them itself).
    caller_reads: CallerReads | None = None
    #: The check of a kept resolution of ``policy``, still running (None: the policy was
    #: checked or resolved before the plan was made): the launch's gate waits for it to pass.
    resolution_check: ResolutionCheck | None = None


class PreparedTools(Protocol):
    """A session's tool socket, made before its program starts (``nonod.toolsandbox``)."""

    #: The launch with the shims pinned over the tools and the socket bound into the view.
    plan: SessionPlan

    async def serve(self, session: Session) -> None:
        """Answer the session's tool calls until :meth:`end`."""
        ...

    async def end(self) -> None:
        """The program ended: stop its tool sessions and record their end."""
        ...

    def close(self) -> None:
        """The program did not start: remove the socket."""
        ...


class ToolHook(Protocol):
    def prepare(self, session: Session, plan: SessionPlan) -> PreparedTools: ...
