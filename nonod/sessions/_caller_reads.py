"""A launch's reads of its caller's files besides the profile, done in the profile's thread.

Each read the daemon makes for a caller runs in a worker thread of that caller's, bounded in
time (``nonod._callerfs``): a caller's file system may hang. Each such thread is a hop: a
wake-up of the event loop and a wait for the GIL, about 1 ms of a launch's path on a busy
host. The profile's resolution is one; the trust policies' read was another, right after it.
:class:`CallerReads` is what the connection handler hands the resolution to run in the same
thread, as the caller, once the profile is resolved (``PolicySource.resolve_launch(also=)``),
and what the session's preparation later takes the answers from (``SessionPlan``): the
user-level and the project trust policy files (``nonod.trust.read_policy_files``).

A read's failure is kept and raised where the read used to be made, so a launch is refused
with the same error, in the same order, as before. Nothing read here decides anything on its
own: the policies are verified, and the instruction files read, where they were.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, final

from .. import _xdg
from ._contracts import Caller

if TYPE_CHECKING:
    from ..trust import PolicyFiles


@final
class CallerReads:
    """The trust policy files of one launch, read by :meth:`read` (blocking, as the caller,
    in the resolution's worker thread), taken by :meth:`trust_files`."""

    def __init__(self, *, workdir: str, env: Mapping[str, str], owner: Caller,
                 system: bool) -> None:
        self._workdir = workdir
        self._env = dict(env)
        self._owner = owner
        self._system = system
        self._read = False
        self._files: PolicyFiles | None = None
        self._failed: Exception | None = None

    def read(self) -> None:
        """Blocking, as the caller: read the trust policy files. Never raises: a failure is
        kept for :meth:`trust_files`."""
        from .. import trust

        try:
            config = user_config_dir(self._env, self._owner, system=self._system)
            self._files = trust.read_policy_files(
                trust.user_policy_path(config) if config is not None else None, self._workdir)
        except Exception as exc:  # noqa: BLE001 - raised again where the read used to be
            self._failed = exc
        self._read = True

    def trust_files(self) -> PolicyFiles | None:
        """The files :meth:`read` found (what their read raised, raised again); None if it
        did not run (the preparation reads them itself then)."""
        if self._failed is not None:
            raise self._failed
        return self._files if self._read else None


def user_config_dir(env: Mapping[str, str], owner: Caller, *, system: bool) -> Path | None:
    """The caller's nono config dir (its user-level trust policy lives there), or None.

    From its uid (``nonod._xdg``): a system daemon's caller's password-database home, a user
    daemon's own user; an absolute ``XDG_CONFIG_HOME`` in ``env`` is honoured, a relative or
    empty one means ``$HOME/.config`` (XDG spec)."""
    uid = owner.uid if system else os.geteuid()
    return _xdg.nono_config_dir(uid, dict(env), env_home=not system)
