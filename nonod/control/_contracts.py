"""What the control server is given: the daemon's description, its settings, and the services
its handlers call (profiles, secrets, trust keys) as small protocols, implemented outside
``control`` (``nonod._profile_source``, ``nonod._keyservices``) and injected by the daemon."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .. import protocol as p
from .. import sessions
from .._config import DaemonSection
from ..policy import ResolvedPolicy

if TYPE_CHECKING:
    from .._callerfs import Identity


class PolicySource(Protocol):
    """Profiles, as the control server needs them (implemented over ``nonod.profiles``)."""

    async def resolve_launch(
        self, request: p.Launch, caller: sessions.Caller, *,
        also: Callable[[ResolvedPolicy, Identity | None], None] | None = None
    ) -> tuple[ResolvedPolicy, str | None]:
        """The policy for a launch, and the profile's name for records (None: no profile).
        ``also`` (blocking, never raises): the launch's other reads of the caller's files,
        run in the resolution's worker thread once the policy is resolved, given it and the
        identity to read the caller's files with (None: the daemon's own)."""
        ...

    async def resolve_launch_early(
        self, request: p.Launch, caller: sessions.Caller, *,
        also: Callable[[ResolvedPolicy, Identity | None], None] | None = None
    ) -> tuple[ResolvedPolicy, str | None, sessions.ResolutionCheck | None]:
        """:meth:`resolve_launch`, answered before a kept (cached) resolution's check is
        done: that check comes third (None: nothing left to check), still running; the
        launch's gate must wait for it to pass (``SessionPlan.resolution_check``), or the
        caller close it."""
        ...

    async def list_profiles(
        self, request: p.ProfileList, caller: sessions.Caller
    ) -> tuple[p.ProfileEntry, ...]: ...

    async def show_profile(
        self, request: p.ProfileShow, caller: sessions.Caller
    ) -> p.ProfileDocument: ...

    async def validate_profile(
        self, request: p.ProfileValidate, caller: sessions.Caller
    ) -> p.ProfileValid: ...


#: The ``[daemon]`` settings the server reads for each new connection, declared once in
#: ``nonod._config`` (they reload on SIGHUP). The stop grace is the sessions' own
#: (``Registry.limits()``).
ServerSettings = DaemonSection


@dataclass(frozen=True)
class DaemonInfo:
    version: str
    pid: int
    uid: int
    system: bool
    socket: str
    state_dir: str
    config: str | None
    started_at: dt.datetime


class SecretStore(Protocol):
    """The daemon's keychain, as ``nonoctl secret`` manages it. Values go in, never out."""

    async def store(self, name: str, value: str) -> p.SecretStored: ...

    async def delete(self, name: str) -> p.SecretStored: ...

    async def test(self, name: str) -> p.SecretState: ...

    async def list(self) -> p.Secrets: ...


class TrustService(Protocol):
    """The daemon's trust keys, as ``nonoctl trust`` uses them. Private keys never leave it."""

    async def keygen(self, name: str, *, force: bool) -> p.TrustKey: ...

    async def export_key(self, name: str, *, pem: bool) -> p.TrustKey: ...

    async def sign(self, request: p.TrustSign) -> p.TrustSigned: ...

    async def init_policy(self, name: str, includes: tuple[str, ...]) -> p.TrustPolicyDocument:
        ...
