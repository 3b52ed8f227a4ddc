"""A launch's reads of its caller's files besides the profile, done in the profile's thread.

Each read the daemon makes for a caller runs in a worker thread of that caller's, bounded in
time (``nonod._callerfs``): a caller's file system may hang. Each such thread is a hop: a
wake-up of the event loop and a wait for the GIL (about 0.1 ms of the daemon's CPU, and on a
busy host about 1 ms of a launch's path where nothing else runs beside it). The profile's
resolution is one; the trust policies' read was another, and on the system daemon the
caller's groups (for ``file://`` credentials) and, for a caller other than root, the
launch's own secret files and its program looked for as the caller, one each.
:class:`CallerReads` is what the connection handler hands the resolution to run in the same
thread once the profile is resolved (``PolicySource.resolve_launch(also=)``), and what the
session's start later takes the answers from (``SessionPlan``).

A read's failure is kept and raised where the read used to be made, so a launch is refused
with the same error, in the same order, as before. Nothing read here decides anything on its
own: the policies are verified, the instruction files read and the masks made where they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, final

import structlog

from .. import _callerfs, _xdg
from ._contracts import Caller

log = structlog.get_logger()

if TYPE_CHECKING:
    from ..policy import Denial, ResolvedPolicy
    from ..trust import PolicyFiles
    from ._start import SecretMasks

    #: Makes a launch's secret masks (``Registry.secret_masks``), given the policy and the
    #: masks of its own files made as the caller (None: made with the daemon's identity).
    MakeMasks = Callable[[ResolvedPolicy, tuple[Denial, ...] | None], SecretMasks]


@final
class CallerReads:
    """One launch's reads of its caller's files, made by :meth:`read` (blocking, in the
    resolution's worker thread), taken by :meth:`trust_files`, :meth:`secret_denials` and
    :attr:`identity`."""

    def __init__(self, *, workdir: str, env: Mapping[str, str], owner: Caller,
                 system: bool, trust: bool = True, audit_sign_key: str | None = None,
                 program: str | None = None, masks: MakeMasks | None = None) -> None:
        self._workdir = workdir
        self._trust = trust
        #: The program named by the launch (None: the profile's ``binary``), looked for as the
        #: caller on the system daemon for a caller other than root.
        self._program_named = program
        self._program: tuple[str, str] | None = None
        self._program_failed: tuple[str, Exception] | None = None
        self._env = dict(env)
        self._owner = owner
        self._system = system
        self._audit_sign_key = audit_sign_key
        self._read = False
        #: The caller's identity (its groups from the group database) on the system daemon.
        self.identity: _callerfs.Identity | None = None
        self._files: PolicyFiles | None = None
        self._failed: Exception | None = None
        self._secrets: tuple[Denial, ...] | None = None
        self._secrets_failed: Exception | None = None
        #: The launch's secret masks are made here too, with the daemon's identity: its
        #: start then wakes no worker thread for them (``ProgramStarter._premasked``).
        self._make_masks = masks
        self._masks: SecretMasks | None = None

    def read(self, policy: ResolvedPolicy, identity: _callerfs.Identity | None) -> None:
        """Blocking, with the daemon's own identity; the caller's files are read with
        ``identity`` (the caller's on the system daemon, None on a user daemon): the trust
        policy files; on the system daemon for a caller other than root also the launch's
        own secret files (``nonod._secretfiles``) of ``policy`` and where the caller finds
        the program (``nonod.control._program``); then, with the daemon's identity, the
        launch's secret masks (``masks``: ``ProgramStarter.secret_masks``). Never raises: a
        failure is kept for the method that gives that answer."""
        from .. import trust
        from .._secretfiles import launch_secret_paths, secret_denials

        self.identity = identity
        with _callerfs.acting_as(identity):
            try:
                if self._trust:  # not with --trust-override
                    config = user_config_dir(self._env, self._owner, system=self._system)
                    self._files = trust.read_policy_files(
                        trust.user_policy_path(config) if config is not None else None,
                        self._workdir)
                    self._read = True
            except Exception as exc:  # noqa: BLE001 - raised again where the read used to be
                self._failed = exc
            if self._system and not self._owner.is_root:
                try:
                    self._secrets = secret_denials(
                        launch_secret_paths(policy, audit_sign_key=self._audit_sign_key))
                except Exception as exc:  # noqa: BLE001 - raised again at the session's start
                    self._secrets_failed = exc
                name = self._program_named or policy.binary
                if name:
                    try:
                        self._program = (name, find_program(policy, name, self._env,
                                                            self._workdir))
                    except Exception as exc:  # noqa: BLE001 - raised again where it was
                        self._program_failed = (name, exc)
        caller_masked = self._system and not self._owner.is_root
        if self._make_masks is not None and not (caller_masked and self._secrets is None):
            try:  # with the daemon's identity again (its own files, earlier launches')
                self._masks = self._make_masks(policy,
                                               self._secrets if caller_masked else None)
            except Exception:  # not made here: the session's start makes them
                log.exception("could not make the launch's secret masks ahead")
        self._env = {}  # the plan, and so this, lives as long as the session: not its copy

    def trust_files(self) -> PolicyFiles | None:
        """The files :meth:`read` found (what their read raised, raised again); None if it
        did not run (the preparation reads them itself then)."""
        if self._failed is not None:
            raise self._failed
        return self._files if self._read else None

    def program(self, name: str) -> str | None:
        """Where the caller finds ``name`` (what looking raised, raised again); None if
        :meth:`read` did not look for that name (the caller looks itself then)."""
        if self._program_failed is not None and self._program_failed[0] == name:
            raise self._program_failed[1]
        if self._program is not None and self._program[0] == name:
            return self._program[1]
        return None

    def masks(self) -> SecretMasks | None:
        """The launch's secret masks made by :meth:`read` (None: not made there)."""
        return self._masks

    def secret_denials(self) -> tuple[Denial, ...] | None:
        """The masks of the launch's own secret files, as the caller saw them (what looking
        raised, raised again); None if :meth:`read` did not look (the start looks itself)."""
        if self._secrets_failed is not None:
            raise self._secrets_failed
        return self._secrets


def find_program(policy: ResolvedPolicy, name: str, env: Mapping[str, str], cwd: str) -> str:
    """Blocking, with this thread's identity: ``name``'s path as the session's ``PATH`` finds
    it; the engine's ``LaunchError`` (``launch.failed``, step ``exec``) when it finds none."""
    from ..sandbox import find_executable, sanitize_env

    return find_executable(name, sanitize_env(policy.env, env.items(), ()), cwd)


def user_config_dir(env: Mapping[str, str], owner: Caller, *, system: bool) -> Path | None:
    """The caller's nono config dir (its user-level trust policy lives there), or None.

    From its uid (``nonod._xdg``): a system daemon's caller's password-database home, a user
    daemon's own user; an absolute ``XDG_CONFIG_HOME`` in ``env`` is honoured, a relative or
    empty one means ``$HOME/.config`` (XDG spec)."""
    uid = owner.uid if system else os.geteuid()
    return _xdg.nono_config_dir(uid, dict(env), env_home=not system)
