"""Profiles for the control server: find, load and resolve them on behalf of a caller.

This is the daemon's only door to ``nonod.profiles``. Loading and resolving read files, so
each call runs in a worker thread.

Whose files? A user daemon runs as its caller, so it reads what the caller could read: the
caller's profile directory and any profile path the caller names. A system daemon runs as root
and must not read files for a caller that the caller could not read itself: it takes named
profiles from its own ``profile_dir`` and the built-ins only, and reads a profile *path* once,
with the caller's own identity (``nonod._callerfs``), then accepts it only when the descriptor
it read belongs to the caller (or is root's and world-readable). No check by name comes before
that open, so a symlink flipped in between gains nothing. The caller's home directory comes
from the password database there, not from the caller's environment. A profile is *resolved*
(grant paths looked up, symlinks followed) with the caller's identity too, so a dry run tells a
caller nothing about paths it could not reach itself.

Resolving a launch's profile canonicalises about a hundred paths; the result is cached
(:class:`ResolutionCache`) under everything it was computed from: the caller (uid, gid), the
bytes of the profile as loaded (so a changed profile file misses; profiles are still loaded
on every launch, as the caller), the resolution context (home, working directory, the
caller's environment) and the options. An entry is served only while the filesystem still
answers every question its resolution asked (:class:`nonod.profiles.FsLook`), asked again with
the caller's identity: a path created, removed, replaced or re-pointed since makes the launch
resolve again.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, final

import msgspec

from . import _callerfs, _xdg
from . import protocol as p
from ._writable_links import writable_links
from .errors import (
    PolicyError,
    ProfileError,
    ProfileLinkWritable,
    ProfileNotFound,
    ResolutionChanged,
)
from .policy import ResolvedPolicy
from .profiles import (
    MAX_PROFILE_BYTES,
    CliOverrides,
    FsLook,
    Profile,
    ResolveContext,
    check_writers,
    list_profiles,
    load_profile,
    resolve,
    user_profiles_dir,
)
from .sessions import Caller

DEFAULT_PROFILE = "default"
T = TypeVar("T")
#: Resolutions kept (a key is a caller, a profile, a directory and options).
CACHE_ENTRIES = 64


@final
class ResolutionCache:
    """Resolved policies by what they were computed from, each with the filesystem looks
    that must still hold; least recently used out first. Used from worker threads."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, tuple[ResolvedPolicy, FsLook]] = OrderedDict()
        #: Keys whose kept resolution was found stale after a launch went on with it: their
        #: next launches check first (:meth:`kept` answers None) until a check passes. A
        #: resolution whose files change at every launch costs a resolution per launch, as
        #: before, not a launch prepared twice.
        self._doubted: set[bytes] = set()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> ResolvedPolicy | None:
        with self._lock:
            entry = self._entries.get(key)
        # Checked outside the lock (a caller's file system may be slow): another thread may
        # evict or replace the entry meanwhile, so only the entry checked is touched after.
        if entry is not None and entry[1].unchanged():
            with self._lock:
                if self._entries.get(key) is entry:
                    self._entries.move_to_end(key)
                self._doubted.discard(key)
                self.hits += 1
            return entry[0]
        with self._lock:
            if entry is not None and self._entries.get(key) is entry:
                del self._entries[key]
            self.misses += 1
        return None

    def kept(self, key: bytes) -> tuple[ResolvedPolicy, FsLook] | None:
        """The entry under ``key``, *not checked*: only for a launch that checks it before
        its program may start (:meth:`confirm`, ``KeptCheck``); counted there. None also for
        a key doubted (its last such check failed): check it first (:meth:`get`)."""
        with self._lock:
            return None if key in self._doubted else self._entries.get(key)

    def confirm(self, key: bytes, entry: tuple[ResolvedPolicy, FsLook]) -> bool:
        """Blocking (as the caller, as :meth:`get`): True when the filesystem still answers
        every question ``entry``'s resolution asked; a stale entry is dropped then."""
        unchanged = entry[1].unchanged()
        with self._lock:
            current = self._entries.get(key) is entry
            if unchanged:
                if current:
                    self._entries.move_to_end(key)
                self.hits += 1
            else:
                if current:
                    del self._entries[key]
                if len(self._doubted) >= 4 * self._size:
                    self._doubted.clear()  # bounded: forgetting a doubt costs one redo
                self._doubted.add(key)
                self.misses += 1
        return unchanged

    def put(self, key: bytes, policy: ResolvedPolicy, look: FsLook) -> None:
        with self._lock:
            self._entries[key] = (policy, look)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


@final
class KeptCheck:
    """A kept resolution's check, running in the resolution's worker thread while the
    launch is prepared (``ProfilePolicies.resolve_launch_early``); the launch's gate waits
    for it (``nonod.sessions.ResolutionCheck``)."""

    def __init__(self, goes_on: _callerfs.GoesOn[bool]) -> None:
        self._goes_on = goes_on

    async def wait_passed(self) -> None:
        """Return once the filesystem was found to answer every question the kept
        resolution asked; raise :class:`ResolutionChanged` when it does not (the launch is
        then redone on a fresh resolution), :class:`PolicyError` when the check did not
        end in time (as a resolution that does not, refused)."""
        try:
            unchanged = await self._goes_on.wait()
        except _callerfs.FileTimeout as exc:
            raise PolicyError(f"cannot check the profile's resolution: {exc.message}") from None
        if not unchanged:
            raise ResolutionChanged(
                "a path the profile's resolution looked at changed while the launch was "
                "prepared; nothing of it ran")

    def close(self) -> None:
        """Not waited for (the launch failed before its gate): the thread's place goes
        back once the check returns."""
        self._goes_on.close()


def _is_path(value: str) -> bool:
    return "/" in value or value.endswith(".json")


def _check_named(name: str | None) -> None:
    if name is not None and _is_path(name) and not name.startswith("/"):
        raise ProfileError("a profile path must be absolute", source=name)


def _check_workdir(cwd: str) -> None:
    """Blocking, as the caller: the launch's working directory must be a directory the
    caller itself can open, so what the system daemon says about it tells it nothing new."""
    try:
        _callerfs.read_path(cwd, kind="dir", max_bytes=0)
    except _callerfs.FileMissing:
        raise PolicyError(f"the working directory {cwd} does not exist") from None
    except _callerfs.CallerFileError as exc:
        raise PolicyError(f"cannot use the working directory: {exc.message}") from None


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
        network_profile=options.network_profile,
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
        self.cache = ResolutionCache()

    # -- PolicySource
    async def resolve_launch(
        self, request: p.Launch, caller: Caller, *,
        also: Callable[[ResolvedPolicy, _callerfs.Identity | None], None] | None = None
    ) -> tuple[ResolvedPolicy, str | None]:
        """One worker thread (the caller's, bounded in time as its file reads are): the
        working directory checked and a profile path read as the caller, then the profile
        loaded and resolved (or its cached resolution checked, as the caller), then ``also``
        (blocking, must not raise: the launch's other reads of the caller's files,
        ``nonod.sessions.CallerReads``) when the resolution succeeded, given the policy and
        the identity to read as (None: the daemon's own, a user daemon's caller)."""
        _check_named(request.profile)
        who = caller if self._system else None

        def work() -> tuple[ResolvedPolicy, str | None]:
            identity = _callerfs.Identity.of(who) if who is not None else None
            policy = self._launch_policy(request, caller, identity)
            if also is not None:
                also(policy, identity)
            return policy, request.profile

        try:
            return await _callerfs.in_thread_of(
                who, work, what="the launch's profile" + (" and trust policies" if also else ""))
        except _callerfs.ThreadsExhausted:
            raise
        except _callerfs.FileTimeout as exc:
            raise PolicyError(f"cannot resolve the profile: {exc.message}") from None

    async def resolve_launch_early(
        self, request: p.Launch, caller: Caller, *,
        also: Callable[[ResolvedPolicy, _callerfs.Identity | None], None] | None = None
    ) -> tuple[ResolvedPolicy, str | None, KeptCheck | None]:
        """:meth:`resolve_launch`, answering before a kept resolution is checked: the check
        (``FsLook.unchanged``, as the caller) runs next in the same worker thread, while the
        launch is prepared, and the returned :class:`KeptCheck` says whether it passed. None:
        the profile was resolved now (nothing to check). Whoever gets one must make the
        launch's gate wait for it (``SessionPlan.resolution_check``), or close it: no
        program may start under a resolution whose check has not passed."""
        _check_named(request.profile)
        who = caller if self._system else None

        def work() -> tuple[tuple[ResolvedPolicy, str | None], Callable[[], bool] | None]:
            identity = _callerfs.Identity.of(who) if who is not None else None
            later: list[Callable[[], bool]] = []
            policy = self._launch_policy(request, caller, identity, later=later)
            if also is not None:
                also(policy, identity)
            return (policy, request.profile), (later[0] if later else None)

        what = "the launch's profile" + (" and trust policies" if also else "")
        try:
            (policy, profile), goes_on = await _callerfs.in_thread_then(who, work, what=what)
        except _callerfs.ThreadsExhausted:
            raise
        except _callerfs.FileTimeout as exc:
            raise PolicyError(f"cannot resolve the profile: {exc.message}") from None
        return policy, profile, (KeptCheck(goes_on) if goes_on is not None else None)

    async def list_profiles(self, request: p.ProfileList,
                            caller: Caller) -> tuple[p.ProfileEntry, ...]:
        return await self._in_thread(caller, lambda: self._list(caller, request.env),
                                     "the profile list")

    async def show_profile(self, request: p.ProfileShow, caller: Caller) -> p.ProfileDocument:
        if request.resolved:  # by the launch's own steps, so it is the launch's policy
            policy, _ = await self.resolve_launch(p.Launch(
                profile=request.profile, cwd=request.cwd, env=request.env,
                options=request.options, dry_run=True), caller)
            return p.ProfileDocument(name=policy.name, source=request.profile, resolved=True,
                                     document=msgspec.Raw(msgspec.json.encode(policy)))
        data = await self._read_named(request.profile, caller)
        return await self._in_thread(caller, lambda: self._show(request, caller, data),
                                     request.profile)

    async def validate_profile(
        self, request: p.ProfileValidate, caller: Caller
    ) -> p.ProfileValid:
        data = await self._read_named(request.profile, caller)
        return await self._in_thread(caller, lambda: self._validate(request, caller, data),
                                     request.profile)

    async def _in_thread(self, caller: Caller, work: Callable[[], T], what: str) -> T:
        """``work`` on one of the caller's own worker threads, within their time limit, as a
        launch's resolution is: never on the pool every user's launches and audit writes
        share, so one user's requests (a resolution of a megabyte of paths is CPU-bound
        for a second) hold at most that user's few threads, and no other user waits."""
        try:
            return await _callerfs.in_thread_of(caller if self._system else None, work,
                                                what=what)
        except _callerfs.ThreadsExhausted:
            raise
        except _callerfs.FileTimeout as exc:
            raise ProfileError(f"cannot resolve the profile: {exc.reason}",
                               source=what) from None

    async def _read_named(self, name: str | None, caller: Caller) -> bytes | None:
        """A profile *path*'s bytes, read once as the caller; None for a profile name."""
        _check_named(name)
        if name is None or not _is_path(name):
            return None
        try:
            return await _callerfs.run_as(caller if self._system else None,
                                          lambda: self._named_data(name, caller), what=name)
        except _callerfs.ThreadsExhausted:
            raise
        except _callerfs.FileTimeout as exc:
            raise ProfileError(f"cannot read profile: {exc.reason}", source=name) from None

    # -- in a worker thread
    def _named_data(self, name: str | None, caller: Caller) -> bytes | None:
        """Blocking, as the caller: a profile *path*'s bytes, read once; None for a name."""
        if name is None or not _is_path(name):
            return None
        try:
            opened = _callerfs.read_path(name, max_bytes=MAX_PROFILE_BYTES)
        except _callerfs.FileMissing:
            raise ProfileNotFound("no such profile file", source=name) from None
        except _callerfs.CallerFileError as exc:
            raise ProfileError(f"cannot read profile: {exc.reason}", source=name) from None
        if self._system and not caller.is_root:
            mine = opened.uid == caller.uid
            public = opened.uid == 0 and opened.mode & stat.S_IROTH
            if not (mine or public):
                raise ProfileError(
                    "the system daemon reads a profile file only if it belongs to you "
                    "(or to root and is world-readable)",
                    source=name,
                )
        check_writers(name, opened, reader=caller.uid if self._system else os.geteuid())
        return opened.data

    def _user_dir(self, caller: Caller, env: dict[str, str]) -> Path | None:
        configured = self._profile_dir()
        if self._system:
            return configured
        if configured is not None:
            return configured
        return user_profiles_dir(self._home(caller, env), env.get("XDG_CONFIG_HOME"))

    def _home(self, caller: Caller, env: dict[str, str]) -> str:
        uid = caller.uid if self._system else os.geteuid()
        home = _xdg.home_dir(uid, None if self._system else env)
        if home is None:
            raise PolicyError(f"uid {uid} has no home directory entry")
        return home

    def _context(self, caller: Caller, env: dict[str, str], workdir: str) -> ResolveContext:
        uid = caller.uid if self._system else os.geteuid()
        try:
            return ResolveContext.for_user(
                home=self._home(caller, env), workdir=workdir, uid=uid, environ=env
            )
        except ValueError as exc:
            raise PolicyError(f"cannot resolve the profile for this caller: {exc}") from exc

    def _load(self, name: str | None, caller: Caller, env: dict[str, str],
              data: bytes | None) -> Profile:
        return load_profile(name or DEFAULT_PROFILE, user_dir=self._user_dir(caller, env),
                            data=data)

    def _launch_policy(self, request: p.Launch, caller: Caller,
                       identity: _callerfs.Identity | None, *,
                       later: list[Callable[[], bool]] | None = None) -> ResolvedPolicy:
        """Blocking: the policy ``request`` launches with (what a dry run and ``profile show
        --resolved`` print too): the working directory checked and a profile path read as
        the caller, the profile loaded and resolved, the path's links checked, the file kept
        read-only in the session. ``later``: see :meth:`_resolve`."""
        with _callerfs.acting_as(identity):
            _check_workdir(request.cwd)
            data = self._named_data(request.profile, caller)
            profile_file = (os.path.realpath(request.profile) if data is not None
                            and request.profile is not None else None)
        policy, _ = self._resolve_launch(request, caller, data, later=later)
        net = policy.network
        if net.restricted and not net.block and (net.credentials or net.custom_credentials):
            from .credentials import session_routes  # only for policies with routes

            session_routes(net)  # a route it would refuse (credential.route_elsewhere...)
        if profile_file is not None:  # read-only in the session, wherever it lies
            policy = msgspec.structs.replace(
                policy, protected_files=(*policy.protected_files, profile_file))
        return policy

    def _resolve_launch(
        self, request: p.Launch, caller: Caller, data: bytes | None, *,
        later: list[Callable[[], bool]] | None = None
    ) -> tuple[ResolvedPolicy, str | None]:
        profile = self._load(request.profile, caller, request.env, data)
        ctx = self._context(caller, request.env, request.cwd)
        overrides = overrides_from(request.options)
        # everything the resolution depends on, besides the filesystem (checked by the look)
        key = msgspec.msgpack.encode((caller.uid, caller.gid, profile, ctx, overrides))
        policy = self._resolve(profile, ctx, caller, overrides, key=key, later=later)
        if request.profile is not None and _is_path(request.profile):
            self._check_profile_links(request.profile, caller, policy)
        return policy, request.profile

    def _check_profile_links(self, path: str, caller: Caller, policy: ResolvedPolicy) -> None:
        """Refuse a profile path that goes through a symbolic link the session could
        re-point (:func:`writable_links`, looked up as the caller): the next launch of the
        same command would load the profile of the session's making."""
        named = os.path.normpath(path)
        identity = _callerfs.Identity.of(caller) if self._system else None
        with _callerfs.acting_as(identity):
            links = writable_links(named, policy.grants)
            real = os.path.realpath(named)
        if links:
            raise ProfileLinkWritable(
                f"the profile path {named} goes through the symbolic link {links[0]}, in a "
                "directory the session may write: it could re-point the link, and the next "
                "launch would load its profile",
                hint=f"launch with the profile's real path, {real}")

    def _resolve(self, profile: Profile, ctx: ResolveContext, caller: Caller,
                 overrides: CliOverrides | None = None, *, key: bytes | None = None,
                 placeholder_workdir: bool = False,
                 later: list[Callable[[], bool]] | None = None) -> ResolvedPolicy:
        """``resolve``, looking at the filesystem as the caller (system daemon). With ``key``
        the result is cached; the cache's check of what the resolution looked at runs as the
        caller too, so a check made with root's rights never serves a caller a resolution it
        could no longer get. With ``later`` too, a cached resolution is returned *unchecked*
        and its check (blocking, as the caller; True: it passed) is appended to ``later``,
        for the caller to run before anything of the launch runs."""
        identity = _callerfs.Identity.of(caller) if self._system else None
        with _callerfs.acting_as(identity):
            if key is None:
                return resolve(profile, ctx, overrides=overrides,
                               placeholder_workdir=placeholder_workdir)
            if later is not None and (entry := self.cache.kept(key)) is not None:
                cache = self.cache

                def check() -> bool:
                    with _callerfs.acting_as(identity):
                        return cache.confirm(key, entry)

                later.append(check)
                return entry[0]
            policy = self.cache.get(key)
            if policy is None:
                look = FsLook()
                policy = resolve(profile, ctx, overrides=overrides, look=look)
                self.cache.put(key, policy, look)
            return policy

    def _list(self, caller: Caller, env: dict[str, str]) -> tuple[p.ProfileEntry, ...]:
        found = list_profiles(self._user_dir(caller, env))
        return tuple(
            p.ProfileEntry(
                name=info.name,
                source=info.origin + (" (shadows built-in)" if info.shadows_builtin else ""),
                description=info.path,
            )
            for info in found
        )

    def _show(self, request: p.ProfileShow, caller: Caller,
              data: bytes | None) -> p.ProfileDocument:
        profile = self._load(request.profile, caller, request.env, data)
        return p.ProfileDocument(
            name=profile.meta.name or request.profile,
            source=request.profile,
            resolved=False,
            document=msgspec.Raw(msgspec.json.encode(profile)),
        )

    def _validate(self, request: p.ProfileValidate, caller: Caller,
                  data: bytes | None) -> p.ProfileValid:
        profile = self._load(request.profile, caller, request.env, data)
        ctx = self._context(caller, request.env, "/")  # no launch: a stand-in workdir
        policy = self._resolve(profile, ctx, caller, placeholder_workdir=True)
        return p.ProfileValid(
            name=profile.meta.name or request.profile,
            source=request.profile,
            notes=tuple(f"{note.kind}: {note.message}" for note in policy.notes),
        )
