"""Profiles for the control server: find, load and resolve them on behalf of a caller.

This is the daemon's only door to ``nonod.profiles``. Loading and resolving read files, so
each call runs in a worker thread.

Whose files? A user daemon runs as its caller, so it reads what the caller could read: the
caller's profile directory and any profile path the caller names. A system daemon runs as root
and must not read files for a caller that the caller could not read itself: it takes named
profiles from its own ``profile_dir`` and the built-ins only, and accepts a profile *path* only
when the file belongs to the caller (or is root's and world-readable). The caller's home
directory comes from the password database there, not from the caller's environment. A
profile is *resolved* (grant paths looked up, symlinks followed) with the caller's filesystem
identity (``_ascaller``), so a dry run tells a caller nothing about paths it could not reach
itself.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import final

import msgspec
import trio

from ._sessions import Caller
from .control import protocol as p
from .errors import PolicyError, ProfileError, ProfileNotFound
from .policy import ResolvedPolicy
from .profiles import (
    CliOverrides,
    Profile,
    ResolveContext,
    list_profiles,
    load_profile,
    resolve,
    user_profiles_dir,
)

DEFAULT_PROFILE = "default"


def _is_path(value: str) -> bool:
    return "/" in value or value.endswith(".json")


def overrides_from(options: p.LaunchOptions) -> CliOverrides:
    """nono's ``run`` flags, as the profile resolver takes them."""
    pairs: list[tuple[str, str]] = []
    for item in options.env_credential_map:
        reference, _, variable = item.rpartition("=")
        pairs.append((reference, variable))
    return CliOverrides(
        allow=options.allow,
        read=options.read,
        write=options.write,
        allow_file=options.allow_file,
        read_file=options.read_file,
        write_file=options.write_file,
        allow_cwd=options.allow_cwd,
        workdir=options.workdir,
        block_net=options.block_net,
        allow_domain=options.allow_domain,
        listen_port=options.listen_ports,
        credentials=options.credentials,
        env_credential_map=tuple(pairs),
    )


@final
class ProfilePolicies:
    """``PolicySource`` over ``nonod.profiles``."""

    def __init__(self, *, system: bool, profile_dir: Callable[[], Path | None]) -> None:
        self._system = system
        self._profile_dir = profile_dir

    # -- PolicySource
    async def resolve_launch(
        self, request: p.Launch, caller: Caller
    ) -> tuple[ResolvedPolicy, str | None]:
        return await trio.to_thread.run_sync(self._resolve_launch, request, caller)

    async def list_profiles(self, caller: Caller) -> tuple[p.ProfileEntry, ...]:
        return await trio.to_thread.run_sync(self._list, caller)

    async def show_profile(self, request: p.ProfileShow, caller: Caller) -> p.ProfileDocument:
        return await trio.to_thread.run_sync(self._show, request, caller)

    async def validate_profile(
        self, request: p.ProfileValidate, caller: Caller
    ) -> p.ProfileValid:
        return await trio.to_thread.run_sync(self._validate, request, caller)

    # -- in a worker thread
    def _user_dir(self, caller: Caller, env: dict[str, str]) -> Path | None:
        configured = self._profile_dir()
        if self._system:
            return configured
        if configured is not None:
            return configured
        return user_profiles_dir(self._home(caller, env), env.get("XDG_CONFIG_HOME"))

    def _home(self, caller: Caller, env: dict[str, str]) -> str:
        if not self._system:
            home = env.get("HOME") or os.environ.get("HOME", "")
            if home.startswith("/"):
                return home
        try:
            return pwd.getpwuid(caller.uid).pw_dir
        except KeyError as exc:
            raise PolicyError(f"uid {caller.uid} has no home directory entry") from exc

    def _context(self, caller: Caller, env: dict[str, str], workdir: str) -> ResolveContext:
        uid = caller.uid if self._system else os.geteuid()
        try:
            return ResolveContext.for_user(
                home=self._home(caller, env), workdir=workdir, uid=uid, environ=env
            )
        except ValueError as exc:
            raise PolicyError(f"cannot resolve the profile for this caller: {exc}") from exc

    def _check_path(self, path: str, caller: Caller) -> None:
        if not path.startswith("/"):
            raise ProfileError("a profile path must be absolute", source=path)
        if not self._system:
            return
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ProfileNotFound("no such profile file", source=path) from exc
        mine = st.st_uid == caller.uid
        public = st.st_uid == 0 and st.st_mode & stat.S_IROTH
        if not stat.S_ISREG(st.st_mode) or not (mine or public or caller.is_root):
            raise ProfileError(
                "the system daemon reads a profile file only if it belongs to you "
                "(or to root and is world-readable)",
                source=path,
            )

    def _load(self, name: str | None, caller: Caller, env: dict[str, str]) -> Profile:
        target = name or DEFAULT_PROFILE
        if _is_path(target):
            self._check_path(target, caller)
        return load_profile(target, user_dir=self._user_dir(caller, env))

    def _resolve_launch(
        self, request: p.Launch, caller: Caller
    ) -> tuple[ResolvedPolicy, str | None]:
        profile = self._load(request.profile, caller, request.env)
        ctx = self._context(caller, request.env, request.cwd)
        policy = self._resolve(profile, ctx, caller, overrides_from(request.options))
        return policy, request.profile

    def _resolve(self, profile: Profile, ctx: ResolveContext, caller: Caller,
                 overrides: CliOverrides | None = None) -> ResolvedPolicy:
        """``resolve``, looking at the filesystem as the caller (system daemon)."""
        if not self._system or caller.is_root:
            return resolve(profile, ctx, overrides=overrides)
        from ._ascaller import caller_identity

        with caller_identity(caller.uid, caller.gid):
            return resolve(profile, ctx, overrides=overrides)

    def _list(self, caller: Caller) -> tuple[p.ProfileEntry, ...]:
        found = list_profiles(self._user_dir(caller, {}))
        return tuple(
            p.ProfileEntry(
                name=info.name,
                source=info.origin + (" (shadows built-in)" if info.shadows_builtin else ""),
                description=info.path,
            )
            for info in found
        )

    def _show(self, request: p.ProfileShow, caller: Caller) -> p.ProfileDocument:
        profile = self._load(request.profile, caller, {})
        if request.resolved:
            ctx = self._context(caller, {}, request.cwd)
            policy = self._resolve(profile, ctx, caller, overrides_from(request.options))
            document = msgspec.json.encode(policy)
        else:
            document = msgspec.json.encode(profile)
        return p.ProfileDocument(
            name=profile.meta.name or request.profile,
            source=request.profile,
            resolved=request.resolved,
            document=msgspec.Raw(document),
        )

    def _validate(self, request: p.ProfileValidate, caller: Caller) -> p.ProfileValid:
        profile = self._load(request.profile, caller, {})
        ctx = self._context(caller, {}, "/")
        policy = self._resolve(profile, ctx, caller)
        return p.ProfileValid(
            name=profile.meta.name or request.profile,
            source=request.profile,
            notes=tuple(f"{note.kind}: {note.message}" for note in policy.notes),
        )
