"""Profile -> ResolvedPolicy: groups expanded, variables substituted, paths made canonical.

(Over 600 lines on purpose: :class:`_Resolver` is one pipeline whose steps, below, share the
same notes, filesystem look and accumulated grants; cut into modules, the order they run in,
which is the point, could no longer be read in one place.)

Resolution, in order:

1. fold legacy spellings into their canonical keys (one ``deprecated_key`` note each);
2. pick the groups: the base groups, plus ``groups.include``, minus ``groups.exclude``
   (required groups cannot be excluded), keeping those for this platform;
3. turn group entries, profile keys, the working directory and CLI flags into grants and
   denials, each path expanded and canonicalised (symlinks resolved, ``..`` removed). Grants
   of missing paths are skipped with a ``missing`` note (an error for the user's own grants
   under ``strict``); denials are kept even when the path does not exist yet;
4. lift the group denials named in ``bypass_protection`` (``bypass`` notes);
5. merge duplicate grants and denials, then the network, environment and process settings.

The only I/O is looking at the filesystem (``realpath``, ``exists``), through an
:class:`~._fslook.FsLook` that looks at each path once and records what it saw; the environment
comes from the :class:`ResolveContext`, never from ``os.environ``.
"""

from __future__ import annotations

import os
import posixpath
import re
import time
from collections.abc import Iterable, Sequence
from typing import Final, final

import msgspec

from .._units import parse_duration, parse_size
from ..errors import (
    BroadWorkdir,
    ExtendsError,
    GrantLinkWritable,
    GrantOthersPlace,
    PolicyError,
    ProfileError,
)
from ..policy import (
    DEFAULT_MAX_PROCESSES,
    QUEUE_BACKEND,
    Access,
    ApprovalBackend,
    ApprovalPolicy,
    CustomCredential,
    Denial,
    EnvPolicy,
    Grant,
    Limits,
    NetworkPolicy,
    Note,
    ResolvedPolicy,
    TlsIntercept,
)
from . import _expand
from ._broad import broad_directory, named_by, through_workdir
from ._caches import moved_caches
from ._check import check_profile, reserved_env_name
from ._expand import ResolveContext
from ._fslook import FsLook, Placed
from ._groups import GroupCatalog, NetworkCatalog, builtin_groups, builtin_network, valid_host
from ._load import parse_profile
from ._schema import (
    ApprovalDefaults,
    ConditionalName,
    ConditionalPath,
    CustomCredentialDef,
    DomainRule,
    EnvCredentialEntry,
    LimitsConfig,
    NameEntry,
    PathEntry,
    Profile,
    TlsInterceptConfig,
    When,
    endpoint_allow_list,
)
from ._secrets_moved import moved_secrets
from ._startup import moved_startup_files
from ._toolprofile import resolve_tools


@final
class CliOverrides(msgspec.Struct, frozen=True, kw_only=True):
    """What nono's ``run`` flags add to a profile.

    Paths are taken literally (no ``~`` or ``$VAR``: the shell already expanded them);
    relative ones are relative to the working directory. ``allow_cwd`` grants the working
    directory read and write; ``workdir`` replaces the context's working directory.
    """

    allow: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    allow_file: tuple[str, ...] = ()
    read_file: tuple[str, ...] = ()
    write_file: tuple[str, ...] = ()
    allow_cwd: bool = False
    workdir: str | None = None
    block_net: bool = False
    allow_domain: tuple[str, ...] = ()
    network_profile: str | None = None
    listen_port: tuple[int, ...] = ()
    credentials: tuple[str, ...] = ()
    env_credential_map: tuple[tuple[str, str], ...] = ()


_LEGACY: Final[tuple[tuple[str, str], ...]] = (
    ("security.groups", "groups.include"),
    ("security.allowed_commands", "commands.allow"),
    ("policy.exclude_groups", "groups.exclude"),
    ("policy.add_allow_read", "filesystem.read"),
    ("policy.add_allow_write", "filesystem.write"),
    ("policy.add_allow_readwrite", "filesystem.allow"),
    ("policy.add_deny_access", "filesystem.deny"),
    ("policy.override_deny", "filesystem.bypass_protection"),
    ("network.allow_hosts", "network.allow_domain"),
    ("network.proxy_allow", "network.allow_domain"),
    ("network.allow_proxy", "network.allow_domain"),
    ("network.proxy_credentials", "network.credentials"),
    ("network.port_allow", "network.open_port"),
    ("network.allow_port", "network.open_port"),
    ("network.external_proxy", "network.upstream_proxy"),
    ("network.external_proxy_bypass", "network.upstream_bypass"),
    ("brokered_commands", "command_args"),
)

# (key, access, single file, legacy `policy.*` spelling)
_FILESYSTEM_GRANTS: Final[tuple[tuple[str, Access, bool, str | None], ...]] = (
    ("allow", Access.READWRITE, False, "add_allow_readwrite"),
    ("read", Access.READ, False, "add_allow_read"),
    ("write", Access.WRITE, False, "add_allow_write"),
    ("allow_file", Access.READWRITE, True, None),
    ("read_file", Access.READ, True, None),
    ("write_file", Access.WRITE, True, None),
)
# The launcher gives each session its own empty instance of these, so a grant of one of them
# does not reach what the host keeps below it.
_PRIVATE_DIRS: Final = frozenset({"/tmp", "/var/tmp", "/dev/shm"})


def resolve(
    profile: Profile,
    ctx: ResolveContext,
    *,
    overrides: CliOverrides | None = None,
    strict: bool = False,
    look: FsLook | None = None,
    placeholder_workdir: bool = False,
) -> ResolvedPolicy:
    """The policy a session with ``profile`` gets, for the user and directories in ``ctx``.

    ``profile`` must be flat (from ``load_profile``, or ``parse_profile`` without ``extends``).
    With ``strict``, a grant the user wrote (profile or CLI) for a path that does not exist is
    an error instead of a note. ``look`` (a fresh one by default) records what resolution saw
    of the filesystem, for a caller that caches the result. ``placeholder_workdir`` says that
    ``ctx.workdir`` stands for no real launch (``profile validate``): a working-directory
    grant is not refused for being too broad there. Raises ProfileError for problems
    in the profile and PolicyError for problems with the overrides or the machine.
    """
    if profile.bases():
        raise ExtendsError(
            "the profile still extends " + ", ".join(f"`{b}`" for b in profile.bases()),
            source=profile.meta.name,
            path="$.extends",
            hint="load it with load_profile(), which merges its bases",
        )
    groups = builtin_groups()
    network = builtin_network()
    check_profile(profile, profile.meta.name or "profile", groups, network)
    resolver = _Resolver(profile, ctx, overrides or CliOverrides(), strict, groups, network,
                         look or FsLook())
    resolver.placeholder_workdir = placeholder_workdir
    return resolver.run()


# Where system accounts' homes are placeholders (``/usr/sbin``, ``/dev``, ``/run/sshd``),
# never a person's or a service's files: not other accounts' homes for a root caller.
_PLACEHOLDER_TREES: Final = frozenset({"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                                       "/libx32", "/dev", "/proc", "/sys", "/run", "/boot",
                                       "/etc"})


#: How often the account list is read again when the password database has sources beside
#: its files (``nsswitch.conf``: sssd, LDAP, systemd's userdb), whose changes no file shows.
ACCOUNTS_RECHECK: Final = 60.0
_LOCAL_SOURCES: Final = frozenset({"files", "compat"})

_StatKey = tuple[int, int, int]
#: (/etc/passwd's and /etc/nsswitch.conf's keys, when read (monotonic), whether the database
#: has other sources, the homes).
_accounts: tuple[tuple[_StatKey, _StatKey], float, bool, tuple[str, ...]] | None = None


def _stat_key(path: str) -> _StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _remote_accounts(nsswitch: str = "/etc/nsswitch.conf") -> bool:
    """Whether ``nsswitch`` names a source of accounts beside the local files (or cannot be
    read: then assume so)."""
    try:
        with open(nsswitch, encoding="utf-8", errors="replace") as f:
            for line in f:
                database, _, rest = line.partition("#")[0].partition(":")
                if database.strip() == "passwd":
                    sources = {word for word in rest.split() if not word.startswith("[")}
                    return bool(sources - _LOCAL_SOURCES)
    except OSError:
        return True
    return False  # no passwd line: glibc reads the files alone


def _account_homes() -> tuple[str, ...]:
    """The absolute home directories of the password database (``getpwall``: every account
    its sources enumerate; sssd enumerates none of a domain's unless told to). Read again
    when ``/etc/passwd`` or ``/etc/nsswitch.conf`` changes, and, when the database has
    other sources than its files, once ``ACCOUNTS_RECHECK`` seconds have passed since the
    last read (``getpwall`` costs as much as the rest of a resolution)."""
    global _accounts
    import pwd  # only a root caller needs the account list

    key = (_stat_key("/etc/passwd"), _stat_key("/etc/nsswitch.conf"))
    now = time.monotonic()
    if _accounts is None or _accounts[0] != key or \
            (_accounts[2] and now - _accounts[1] >= ACCOUNTS_RECHECK):
        homes = tuple(a.pw_dir for a in pwd.getpwall() if a.pw_dir.startswith("/"))
        _accounts = (key, now, _remote_accounts(), homes)
    return _accounts[3]


def _lineage(path: str) -> list[str]:
    """``path`` (canonical, absolute) and each directory above it, up to ``/``."""
    out = [path]
    while path != "/":
        path = posixpath.dirname(path) or "/"
        out.append(path)
    return out


def _union(a: Access, b: Access) -> Access:
    reads, writes = a.reads or b.reads, a.writes or b.writes
    if reads and writes:
        return Access.READWRITE
    return Access.READ if reads else Access.WRITE


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


@final
class _Resolver:
    def __init__(
        self,
        profile: Profile,
        ctx: ResolveContext,
        overrides: CliOverrides,
        strict: bool,
        groups: GroupCatalog,
        network: NetworkCatalog,
        look: FsLook,
    ) -> None:
        self.fs = look
        self.profile = profile
        self.ctx = ctx
        self.cli = overrides
        self.strict = strict
        self.catalog = groups
        self.network = network
        self.source = profile.meta.name or "profile"
        self.notes: list[Note] = []
        self._noted: set[Note] = set()
        self.grants: list[Grant] = []
        self.denials: list[Denial] = []
        #: Directory grants found from the working directory (``--allow-cwd``,
        #: ``workdir.access``, a profile's ``$WORKDIR``), with what asked for each.
        self.via_workdir: list[tuple[str, Grant]] = []
        #: Grants and denials whose path crosses symbolic links: what named each, and the
        #: links (at their real place).
        self.linked: list[tuple[str, list[str]]] = []
        #: The same links by the canonical path they led to (``_cache_links``).
        self._links_to: dict[str, list[str]] = {}
        #: The links followed to denied paths (``ResolvedPolicy.denial_links``).
        self.denial_links: list[str] = []
        #: A root caller's view of the other accounts' homes (``ResolvedPolicy.other_homes``),
        #: and the always-on groups' denials in a home (relative), placed in each of them.
        self.other_homes: tuple[str, ...] = ()
        self._home_denials: list[tuple[str, bool, str]] = []
        #: Names met on the way to a grant or the working directory in a directory others
        #: than its owner may write (``/tmp``, a group's): what named each, and the name.
        self.placed: list[tuple[str, Placed]] = []
        self.placeholder_workdir = False
        self.workdir = self._workdir_path()
        self.values = ctx.values(self.workdir)

    def note(self, kind: str, message: str, *, path: str = "", source: str = "") -> None:
        note = Note(kind=kind, message=message, path=path, source=source)
        if note not in self._noted:  # a set: a profile may make tens of thousands of notes
            self._noted.add(note)
            self.notes.append(note)

    def fail(self, path: str, message: str, *, hint: str | None = None) -> ProfileError:
        return ProfileError(message, source=self.source, path=path, hint=hint)

    def run(self) -> ResolvedPolicy:
        p = self.profile
        self._legacy_notes()
        active = self._groups()
        self._moved_secrets()
        workdir_access = self._workdir_grant()
        self._profile_grants()
        self._cli_grants()
        self._refuse_broad_workdir()
        self._bypass()
        self._ignored_settings()
        grants = self._merged_grants()
        self._other_homes(grants)
        denials = self._merged_denials()
        self._refuse_repointable_links(grants)
        self._refuse_others_places()
        self._masked_grant_notes(grants, denials)
        # command_policies: each tool's executable and its child session's policy, which
        # resolves like any profile for the same user and working directory.
        tools = resolve_tools(
            p.command_policies, self.source, env=self.ctx.env, look=self.fs,
            tls_intercept=p.network.tls_intercept,
            agent_grants=grants, note=self.note,
            resolve_child=lambda data, source: resolve(parse_profile(data, source), self.ctx,
                                                       strict=self.strict, look=self.fs))
        return ResolvedPolicy(
            name=p.meta.name or "unnamed",
            grants=grants,
            denials=denials,
            workdir=self.workdir,
            workdir_access=workdir_access,
            env=self._env(),
            signal_mode=p.security.signal_mode or "isolated",
            ipc_mode=p.security.ipc_mode or "shared_memory_only",
            process_info_mode=p.security.process_info_mode or "isolated",
            af_unix_mediation=p.linux.af_unix_mediation or "off",
            network_isolation="landlock" if p.linux.sandbox_policy == "landlock" else "namespaces",
            network=self._network(),
            allow_degraded=_dedupe(p.nonod.allow_degraded),
            allow_unix_sockets=p.nonod.unix_sockets is True,
            allow_root=p.nonod.allow_root is True,
            max_processes=(DEFAULT_MAX_PROCESSES if p.nonod.max_processes is None
                           else p.nonod.max_processes),
            limits=_limits(p.nonod.limits, p.nonod.max_processes),
            writable_persistence=self._placed(self.profile.nonod.writable_persistence),
            home=self.values["HOME"],
            cache_home=self.fs.realpath(self.values["XDG_CACHE_HOME"]),
            cache_links=self._cache_links(grants),
            cache_dirs=self._cache_dirs(),
            protected_files=self._moved_startup_files(),
            shared_caches=self._placed(self.profile.nonod.shared_caches),
            denial_links=tuple(self.denial_links),
            xdg_homes=self._xdg_homes(),
            other_homes=self.other_homes,
            git_configs=self._git_configs(),
            binary=self._binary(),
            command_args=tuple(
                _expand.expand(arg, self.values) for arg in p.command_args + p.brokered_commands
            ),
            notes=tuple(self.notes),
            groups=active,
            tools=tools,
        )

    # --- legacy keys and conditions ---

    def _legacy_notes(self) -> None:
        p = self.profile
        for old, new in _LEGACY:
            section, _, key = old.rpartition(".")
            holder: object = getattr(p, section) if section else p
            if getattr(holder, key):
                self.note("deprecated_key", f"`{old}` is the old spelling of `{new}`; use `{new}`")

    def _applies(self, when: When | None) -> bool:
        if when is None:
            return True
        for item in (when,) if isinstance(when, str) else when:
            negated = item.startswith("!")
            if (item.lstrip("!") == self.ctx.platform) != negated:
                return True
        return False

    def _paths(self, entries: Sequence[PathEntry]) -> list[str]:
        out = []
        for entry in entries:
            if isinstance(entry, ConditionalPath):
                if self._applies(entry.when):
                    out.append(entry.path)
            else:
                out.append(entry)
        return out

    def _names(self, entries: Sequence[NameEntry]) -> list[str]:
        out = []
        for entry in entries:
            if isinstance(entry, ConditionalName):
                if self._applies(entry.when):
                    out.append(entry.name)
            else:
                out.append(entry)
        return out

    # --- groups ---

    def _groups(self) -> tuple[str, ...]:
        p = self.profile
        included = self._names(p.groups.include) + list(p.security.groups)
        excluded = set(self._names(p.groups.exclude)) | set(p.policy.exclude_groups)
        wanted = _dedupe([*self.catalog.base_groups, *included])
        active = []
        for name in wanted:
            group = self.catalog.groups.get(name)
            if group is None:
                raise self.fail("$.groups.include", f"unknown group `{name}`")
            if name in excluded:
                if group.required:
                    raise self.fail("$.groups.exclude",
                                    f"group `{name}` is required and cannot be excluded")
                continue
            if group.unsupported is not None:
                raise self.fail("$.groups.include",
                                f"group `{name}` is not supported by nonod: {group.unsupported}")
            if group.platform is not None and group.platform != self.ctx.platform:
                if name in included:
                    kind = "macos_only" if group.platform == "macos" else "info"
                    self.note(kind, f"group `{name}` applies to {group.platform} only; skipped",
                              source=f"group:{name}")
                continue
            active.append(name)
            for entry in group.entries:
                source = f"group:{name}"
                if entry.access == "deny":
                    self._deny(entry.path, is_file=entry.file, source=source)
                    if group.required and entry.path.startswith("~/"):
                        self._home_denials.append((entry.path[2:], entry.file, source))
                else:
                    self._grant(entry.path, Access(entry.access), is_file=entry.file,
                                source=source, key=f"group {name}")
        return tuple(active)

    # --- paths ---

    def _workdir_path(self) -> str:
        given = self.cli.workdir
        if given is None:
            path = self.ctx.workdir
        else:
            if "\x00" in given:
                raise PolicyError("the working directory contains a NUL character")
            path = posixpath.join(self.ctx.workdir, given)
        crossed: list[str] = []
        placed: list[Placed] = []
        real = self.fs.realpath(path, crossed, placed)
        what = f"the working directory `{given or path}`"
        if crossed:
            self.linked.append((what, crossed))
        self.placed.extend((what, name) for name in placed)
        return real

    def _place(self, raw: str, *, source: str, literal: bool = False,
               what: str | None = None, given: bool = False) -> str | None:
        """The canonical form of a path, or None (with a note) if it is for macOS only.
        With ``what``, the links followed on the way are kept for
        :meth:`_refuse_repointable_links`, under that description; ``given`` (a grant), and
        the names on the way in directories others may write, for
        :meth:`_refuse_others_places`."""
        if literal:
            if "\x00" in raw:
                raise PolicyError(f"path {raw!r} contains a NUL character")
            expanded = posixpath.join(self.workdir, raw)
        else:
            expanded = _expand.expand(raw, self.values)
        if self.ctx.platform == "linux" and _expand.is_macos_only(expanded, self.values["HOME"]):
            self.note("macos_only", f"`{raw}` exists on macOS only; left out",
                      path=expanded, source=source)
            return None
        if what is None:
            return self.fs.realpath(expanded)
        crossed: list[str] = []
        placed: list[Placed] | None = [] if given else None
        real = self.fs.realpath(expanded, crossed, placed)
        if crossed:
            self.linked.append((what, crossed))
            self._links_to.setdefault(real, []).extend(crossed)
        self.placed.extend((what, name) for name in placed or ())
        return real

    def _grant(
        self,
        raw: str,
        access: Access,
        *,
        is_file: bool,
        source: str,
        key: str,
        literal: bool = False,
    ) -> None:
        user = not source.startswith("group:")
        real = self._place(raw, source=source, literal=literal, what=f"{key} `{raw}`",
                           given=True)
        if real is None:
            return
        if not self.fs.exists(real):
            if user and self.strict:
                raise PolicyError(f"`{raw}` ({key}) does not exist",
                                  hint="create it first, or resolve without strict")
            self.note("missing", f"`{raw}` does not exist; not granted", path=real,
                      source=source)
            return
        is_dir = self.fs.isdir(real)
        if is_file and is_dir:
            if user:
                raise PolicyError(
                    f"`{raw}` ({key}) is a directory, but the key grants single files",
                    hint="use the directory key (allow, read or write) instead",
                )
            self.note("info", f"`{raw}` is a directory, expected a file; not granted",
                      path=real, source=source)
            return
        grant = Grant(path=real, access=access, is_file=is_file or not is_dir, source=source)
        self.grants.append(grant)
        if source == "profile" and not grant.is_file and through_workdir(raw):
            self.via_workdir.append((f"{key} {raw}", grant))

    def _deny(self, raw: str, *, is_file: bool, source: str, literal: bool = False) -> None:
        """``literal``: ``raw`` is another account's path, taken as written, and the links
        on its way are that account's (not recorded: a root caller is not refused for them)."""
        linked = len(self.linked)
        real = self._place(raw, source=source, literal=literal,
                           what=None if literal else f"the denial of `{raw}` ({source})")
        if real is None:
            return
        for _, crossed in self.linked[linked:]:
            self.denial_links.extend(c for c in crossed if c not in self.denial_links)
        if self.fs.lexists(real):
            is_file = not self.fs.isdir(real)
        self.denials.append(Denial(path=real, is_file=is_file, source=source))

    def _workdir_grant(self) -> Access | None:
        access = self.profile.workdir.access
        if self.cli.allow_cwd:
            access = "readwrite"
        if access is None or access == "none":
            return None
        if not self.fs.isdir(self.workdir):
            raise PolicyError(f"the working directory {self.workdir} does not exist")
        grant = Grant(path=self.workdir, access=Access(access), source="workdir")
        self.grants.append(grant)
        self.via_workdir.append(
            ("--allow-cwd" if self.cli.allow_cwd else "the profile's workdir.access", grant))
        return Access(access)

    def _refuse_broad_workdir(self) -> None:
        """A grant reached through the working directory that is `/`, `$HOME` or a system
        tree stands only if a grant that names it by an absolute path holds it as well."""
        derived = {id(grant) for _, grant in self.via_workdir}
        named = [g for g in self.grants if g.source in ("profile", "cli") and not g.is_file
                 and id(g) not in derived]
        for what, grant in self.via_workdir:
            path, access = grant.path, grant.access
            if access is Access.READ and path != "/":
                continue
            why = broad_directory(path, self.ctx.home)
            if why is None or named_by(path, [g.path for g in named if access is Access.READ
                                              or g.access is not Access.READ]):
                continue
            if self.placeholder_workdir:
                continue
            raise BroadWorkdir(
                f"{what} would grant {path} ({access}), and {why}",
                hint=f"run from a project directory, or grant it by name: --allow {path}")

    def _cache_links(self, grants: Sequence[Grant]) -> tuple[str, ...]:
        """Writable directory grants named through a symbolic link in the cache home
        (``~/.cache/huggingface -> /data/hf``: a cache kept on another disk): host tools
        reach them as caches, so they are copy-on-write in the session as the cache home is
        (``ResolvedPolicy.cache_links``)."""
        roots = {self.fs.realpath(self.values["XDG_CACHE_HOME"]),
                 self.fs.realpath(posixpath.join(self.values["HOME"], ".cache"))}
        return tuple(sorted(
            g.path for g in grants
            if g.access.writes and not g.is_file and any(
                p in roots for link in self._links_to.get(g.path, ())
                for p in _lineage(posixpath.dirname(link)))))

    def _other_homes(self, grants: Sequence[Grant]) -> None:
        """For a root caller, the other accounts' homes its grants show
        (``ResolvedPolicy.other_homes``: existing directories at or under a directory grant,
        canonical, other than the caller's home and the placeholders of system accounts in
        the system's trees, ``/usr/sbin``, ``/dev``...), and the always-on deny groups'
        denials placed in each of them: root reads and writes every home."""
        if self.ctx.uid != 0 or self.ctx.platform != "linux":
            return
        # (a grant of /tmp is the session's private one: nothing of the host's shows there)
        shown = {g.path for g in grants if not g.is_file and g.path not in _PRIVATE_DIRS}
        mine = self.fs.realpath(self.values["HOME"])
        homes = {self.fs.realpath(h) for h in self.fs.ask(_account_homes)
                 if not _PLACEHOLDER_TREES.intersection(_lineage(posixpath.normpath(h)))}
        self.other_homes = tuple(sorted(
            h for h in homes if h not in ("/", mine)
            and not _PLACEHOLDER_TREES.intersection(_lineage(h))
            and shown.intersection(_lineage(h)) and self.fs.isdir(h)))
        for home in self.other_homes:
            for rel, is_file, source in self._home_denials:
                self._deny(posixpath.join(home, rel), is_file=is_file, source=source,
                           literal=True)

    def _git_configs(self) -> tuple[str, ...]:
        """The caller's global git configuration files its environment moved."""
        named = self.ctx.env.get("GIT_CONFIG_GLOBAL", "")
        found = [posixpath.normpath(named)] if named.startswith("/") else []
        found += [posixpath.join(place, "git/config") for rel, place in self._xdg_homes()
                  if rel == ".config"]
        return tuple(found)

    def _xdg_homes(self) -> tuple[tuple[str, str], ...]:
        """The XDG base directories the caller's environment moved (``ResolvedPolicy``)."""
        home = self.values["HOME"]
        moved = ((rel, self.fs.realpath(self.values[key]))
                 for key, rel in _expand.MOVED_HOMES)
        return tuple((rel, place) for rel, place in moved
                     if place != self.fs.realpath(posixpath.join(home, rel)))

    def _moved_secrets(self) -> None:
        """The credentials the caller's environment moved (``_secrets_moved``), denied as the
        always-on groups' are, except a place at or above the working directory (denied, it
        would hide the project itself)."""
        held = _lineage(self.workdir)
        for key, path in moved_secrets(self.ctx.env):
            if self.fs.realpath(path) not in held:
                self._deny(path, is_file=not self.fs.isdir(path), source=f"env:{key}",
                           literal=True)

    def _moved_startup_files(self) -> tuple[str, ...]:
        """The start-up files the caller's environment moved (``_startup``), kept read-only
        wherever a writable grant holds them, except one at or above the working directory
        (``IPYTHONDIR=/data`` with the project in ``/data/proj``: the project itself would
        be read-only)."""
        held = _lineage(self.workdir)
        return tuple(p for p in moved_startup_files(self.ctx.env)
                     if self.fs.realpath(p) not in held)

    def _cache_dirs(self) -> tuple[str, ...]:
        """The caches the caller's environment moved (``_caches``), except one that holds
        the working directory (``HF_HOME=/data`` with the project in ``/data/proj``): the
        project would be copy-on-write, and every write of the session lost with it."""
        held = _lineage(self.workdir)
        return tuple(p for p in moved_caches(self.ctx.env) if self.fs.realpath(p) not in held)

    def _refuse_repointable_links(self, grants: Sequence[Grant]) -> None:
        """A grant or denial named through a symbolic link in a directory the session may
        write is refused: resolution follows links again at every launch, and the session
        could rename a link of its own over that one, so that the next launch grants, or
        masks, what the session chose."""
        if self.placeholder_workdir:
            return
        writable = {g.path for g in grants
                    if g.access.writes and not g.is_file and g.path not in _PRIVATE_DIRS}
        for what, links in self.linked:
            for link in links:
                held = next((p for p in _lineage(posixpath.dirname(link)) if p in writable),
                            None)
                if held is None:
                    continue
                raise GrantLinkWritable(
                    f"{what} goes through the symbolic link {link}, in {held}, which the "
                    "session may write: it could re-point the link, and the next launch "
                    f"would follow it to a place of its choosing",
                    hint=f"name the link's target instead ({self.fs.realpath(link)}), or "
                         "keep the link where the session cannot write")

    def _refuse_others_places(self) -> None:
        """A grant or the working directory named through a name another user (not the
        caller, not root, not the directory's owner) made in a directory others may write
        is refused: in ``/tmp`` a name is whoever's made it first, and a profile's
        ``$TMPDIR/tool-$UID`` made first by another user is that user's directory, or a link
        to a place of its choosing; the session would write its files there and read what
        that user put there. A directory its group may write (a team's ``2775``) is open to
        each member of the group alike (known1): any group, since who is in one is the
        account database's to say, and a name there that is not the caller's, root's or the
        directory owner's was made by one of them. The directory's owner may rename or
        remove any name in it whatever its mode: a name of its own is no more its choice
        there than in a directory only it may write."""
        if self.placeholder_workdir:
            return
        for what, placed in self.placed:
            if placed.uid in (self.ctx.uid, 0, placed.directory_owner):
                continue
            name = placed.name
            who = "every user" if placed.group is None else \
                f"the members of its group (gid {placed.group})"
            raise GrantOthersPlace(
                f"{what} goes through {name}, which user {placed.uid} made in "
                f"{posixpath.dirname(name)}, a directory {who} may write: what it is "
                "and where it leads are that user's, and the session would share it",
                hint=f"have {name} removed (by its owner or root) and made by you, or name "
                     "another path")

    def _profile_grants(self) -> None:
        fs, legacy = self.profile.filesystem, self.profile.policy
        for key, access, is_file, old in _FILESYSTEM_GRANTS:
            entries = list(getattr(fs, key))
            if old is not None:
                entries += getattr(legacy, old)
            for raw in self._paths(entries):
                self._grant(raw, access, is_file=is_file, source="profile",
                            key=f"filesystem.{key}")
        for raw in self._paths([*fs.deny, *legacy.add_deny_access]):
            self._deny(raw, is_file=False, source="profile")

    def _cli_grants(self) -> None:
        for key, access, is_file, _ in _FILESYSTEM_GRANTS:
            for raw in getattr(self.cli, key):
                self._grant(raw, access, is_file=is_file, source="cli", key=f"--{key}",
                            literal=True)

    def _bypass(self) -> None:
        fs = self.profile.filesystem
        # Indexes, not scans: a profile of 1 MiB may hold tens of thousands of each.
        denied: dict[str, list[Denial]] = {}
        for denial in self.denials:
            denied.setdefault(denial.path, []).append(denial)
        granted = {g.path for g in self.grants}
        for raw in self._paths([*fs.bypass_protection, *self.profile.policy.override_deny]):
            real = self._place(raw, source="profile")
            if real is None:
                continue
            hits = denied.get(real, [])
            if not hits:
                self.note("bypass", f"`{raw}` matches no denied path; nothing lifted", path=real)
                continue
            for denial in hits:
                if not denial.source.startswith("group:"):
                    self.note("bypass", f"`{raw}` is denied by the profile itself; "
                              "bypass_protection only lifts group denials", path=real)
                    continue
                group = denial.source.removeprefix("group:")
                if not self.catalog.groups[group].bypassable:
                    raise self.fail("$.filesystem.bypass_protection", f"`{raw}` is denied by "
                                    f"group `{group}`, which cannot be bypassed")
                self.denials.remove(denial)
                denied[real].remove(denial)
                self.note("bypass", f"denial from group `{group}` lifted by bypass_protection",
                          path=real, source=denial.source)
            if real not in granted and not any(
                    p in granted and p not in _PRIVATE_DIRS for p in _lineage(real)[1:]):
                self.note("info", f"`{raw}` is no longer denied, but nothing grants access "
                          "to it (bypass_protection does not grant)", path=real)

    def _merged_grants(self) -> tuple[Grant, ...]:
        merged: dict[tuple[str, bool], Grant] = {}
        for grant in self.grants:
            key = (grant.path, grant.is_file)
            known = merged.get(key)
            if known is None:
                merged[key] = grant
            else:
                merged[key] = msgspec.structs.replace(
                    known, access=_union(known.access, grant.access)
                )
        return tuple(sorted(merged.values(), key=lambda g: (g.path, g.is_file)))

    def _merged_denials(self) -> tuple[Denial, ...]:
        merged: dict[str, Denial] = {}
        for denial in self.denials:
            merged.setdefault(denial.path, denial)
        return tuple(sorted(merged.values(), key=lambda d: d.path))

    def _masked_grant_notes(self, grants: Sequence[Grant], denials: Sequence[Denial]) -> None:
        by_path = {d.path: d for d in denials}
        for grant in grants:
            # the outermost denial holding the grant (the first of the sorted denials)
            denial = next((by_path[p] for p in reversed(_lineage(grant.path))
                           if p in by_path), None)
            if denial is not None:
                self.note(
                    "info",
                    f"granted, but hidden by the denial of {denial.path} ({denial.source})",
                    path=grant.path,
                    source=grant.source,
                )

    # --- everything else ---

    def _ignored_settings(self) -> None:
        p = self.profile
        ignored: list[tuple[bool, str]] = [
            (bool(p.commands.allow or p.security.allowed_commands),
             "commands.allow: nonod has no startup command blocklist to relax; ignored"),
            (bool(p.hooks), "hooks: nonod installs no agent hooks; ignored"),
            (bool(p.rollback.exclude_patterns or p.rollback.exclude_globs
                  or p.undo.exclude_patterns or p.undo.exclude_globs),
             "rollback: nonod takes no undo snapshots; ignored"),
            (p.open_urls is not None and bool(p.open_urls.allow_origins
                                              or p.open_urls.allow_localhost),
             "open_urls: nonod does not open URLs for the session; not provided"),
            (p.allow_gpu is True, "allow_gpu: GPU devices are not provided by nonod"),
            (p.allow_launch_services is True, "allow_launch_services: macOS only; ignored"),
            (p.allow_parent_of_protected is True,
             "allow_parent_of_protected: not needed, nonod masks protected paths itself"),
            (bool(p.skipdirs), "skipdirs: nonod's trust scan reads only the trust policy; "
             "ignored"),
            (p.security.capability_elevation is True,
             "capability_elevation: sessions are static, no access is granted at run time"),
            (p.security.wsl2_proxy_policy == "insecure_proxy",
             "wsl2_proxy_policy: nonod never lets a session bypass its proxy; ignored"),
            (bool(p.network.connect_port),
             "network.connect_port: direct outbound connections are not provided; traffic "
             "goes through the proxy"),
            (bool(p.filesystem.unix_socket or p.filesystem.unix_socket_bind
                  or p.filesystem.unix_socket_dir or p.filesystem.unix_socket_dir_bind
                  or p.filesystem.unix_socket_subtree or p.filesystem.unix_socket_subtree_bind),
             "filesystem.unix_socket*: Unix socket grants are not provided by nonod"),
            (p.network.allow_http2 is True,
             "network.allow_http2: the proxy speaks HTTP/1.1 to upstreams; ignored"),
            (p.linux.sandbox_policy == "external",
             "linux.sandbox_policy `external`: nonod enforces the network itself (a private "
             "network namespace), whatever firewall the host has"),
        ]
        if self.ctx.platform == "linux":
            ignored.append((
                p.security.process_info_mode not in (None, "isolated"),
                "security.process_info_mode: a session has its own pid namespace and sees only "
                "its own processes; not widened on Linux",
            ))
        for present, message in ignored:
            if present:
                self.note("info", message)
        if p.unsafe_macos_seatbelt_rules:
            if self.ctx.platform == "macos":
                raise self.fail("$.unsafe_macos_seatbelt_rules",
                                "raw Seatbelt rules are not supported by nonod")
            self.note("macos_only", "unsafe_macos_seatbelt_rules: macOS only; ignored")

    def _env(self) -> EnvPolicy:
        env = self.profile.environment
        if env is None:
            return EnvPolicy()
        return EnvPolicy(
            allow_vars=_dedupe(env.allow_vars),
            deny_vars=_dedupe(env.deny_vars),
            set_vars=tuple((k, _expand.expand(v, self.values)) for k, v in env.set_vars.items()),
        )

    def _placed(self, entries: Sequence[PathEntry]) -> tuple[str, ...]:
        """The canonical paths of a list of ``nonod`` paths (``writable_persistence``...)."""
        out = []
        for raw in self._paths(entries):
            real = self._place(raw, source="profile")
            if real is not None:
                out.append(real)
        return _dedupe(out)

    def _binary(self) -> str | None:
        raw = self.profile.binary or self.profile.nonod.binary
        if raw is None:
            return None
        return posixpath.normpath(_expand.expand(raw, self.values))

    def _network(self) -> NetworkPolicy:
        net = self.profile.network
        domains: list[str] = []
        endpoint_domains: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        for entry in net.allow_domain:
            domains.append(entry.domain if isinstance(entry, DomainRule) else entry)
            if isinstance(entry, DomainRule) and entry.endpoints:
                endpoint_domains.append((entry.domain.lower().rstrip("."), tuple(
                    (rule.method, rule.path) for rule in entry.endpoints)))
        domains += [*net.proxy_allow, *net.allow_proxy, *net.allow_hosts]
        profile_name = net.network_profile if isinstance(net.network_profile, str) else None
        if self.cli.network_profile is not None:
            # nono's --network-profile: replaces the profile's (its hosts are not added).
            if self.cli.network_profile not in self.network.profiles:
                raise PolicyError(
                    f"--network-profile: unknown network profile `{self.cli.network_profile}`",
                    hint="built-in network profiles: " + ", ".join(sorted(
                        self.network.profiles)))
            profile_name = self.cli.network_profile
        if profile_name is not None:
            domains += self.network.hosts(profile_name)
        for host in self.cli.allow_domain:
            if not valid_host(host.lower()):
                raise PolicyError(f"--allow-domain: `{host}` is not a host name")
            domains.append(host)
        credentials = [*(net.credentials or ()), *(net.proxy_credentials or ())]
        for name in self.cli.credentials:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise PolicyError(f"--credential: `{name}` is not a credential name")
            credentials.append(name)
        upstream = net.upstream_proxy or net.external_proxy
        block = net.block is True or self.cli.block_net
        approval = None if block else self._approval()
        wants_proxy = bool(domains or credentials or profile_name or upstream or approval)
        if block and wants_proxy:
            if net.block is True:
                raise self.fail("$.network.block",
                                "`block: true` cannot be combined with allowed domains, a "
                                "network profile or credential routes")
            self.note("info", "--block-net: allowed domains, the network profile and credential "
                      "routes of the profile are dropped")
            domains, credentials, profile_name, upstream = [], [], None, None
            approval = None
        ports = [*net.listen_port, *self.cli.listen_port]
        for port in ports:
            if not 1 <= port <= 65535:
                raise PolicyError(f"listen port {port} is out of range (1-65535)")
        return NetworkPolicy(
            restricted=block or wants_proxy,
            block=block,
            allow_domain=_dedupe(d.lower() for d in domains),
            network_profile=profile_name,
            listen_ports=tuple(sorted(set(ports))),
            open_ports=tuple(sorted({*net.open_port, *net.port_allow, *net.allow_port})),
            credentials=_dedupe(credentials),
            tls_intercept=None if block else _tls_intercept(net.tls_intercept),
            endpoint_domains=() if block else tuple(endpoint_domains),
            custom_credentials=tuple(
                (name, self._credential(d)) for name, d in sorted(net.custom_credentials.items())
            ),
            env_credentials=self._env_credentials(),
            upstream_proxy=upstream,
            upstream_bypass=_dedupe(
                h.lower() for h in (*net.upstream_bypass, *net.external_proxy_bypass)
            ),
            approval=approval,
        )

    def _approval(self) -> ApprovalPolicy | None:
        """``ask`` (``nonod.network_unlisted``, or a default approval backend) → the
        approval policy; ``deny`` or nothing said → None."""
        net, unlisted = self.profile.network, self.profile.nonod.network_unlisted
        defaults = net.approval_defaults or ApprovalDefaults()
        if unlisted == "deny" or (unlisted is None and defaults.backend is None):
            return None
        return ApprovalPolicy(
            backend=defaults.backend or QUEUE_BACKEND,
            timeout_secs=defaults.timeout_secs,
            backends=tuple(
                ApprovalBackend(name=name, type=b.type, url=b.url, key=b.key,
                                timeout_secs=b.timeout_secs, mode=b.mode or "any",
                                members=b.backends)
                for name, b in sorted(net.approval_backends.items())),
        )

    def _credential(self, d: CustomCredentialDef) -> CustomCredential:
        fmt = d.credential_format
        if fmt is None:
            fmt = "Bearer {}" if d.inject_header.lower() == "authorization" else "{}"

        def tls_path(value: str | None) -> str | None:
            if value is None:
                return None
            return posixpath.normpath(
                posixpath.join(self.workdir, _expand.expand(value, self.values))
            )

        return CustomCredential(
            upstream=d.upstream,
            credential_key=d.credential_key or "",
            inject_mode=d.inject_mode,
            inject_header=d.inject_header,
            credential_format=fmt,
            env_var=d.env_var,
            path_pattern=d.path_pattern,
            path_replacement=d.path_replacement,
            query_param_name=d.query_param_name,
            endpoint_rules=(endpoint_allow_list(d.endpoint_policy) if d.endpoint_policy
                            else tuple((rule.method, rule.path) for rule in d.endpoint_rules)),
            tls_ca=tls_path(d.tls_ca),
            tls_client_cert=tls_path(d.tls_client_cert),
            tls_client_key=tls_path(d.tls_client_key),
        )

    def _env_credentials(self) -> tuple[tuple[str, str], ...]:
        mapping: dict[str, str] = {}
        # `secrets` is nono's other name for `env_credentials`; the canonical key wins.
        for table in (self.profile.secrets, self.profile.env_credentials):
            for ref, value in table.items():
                if isinstance(value, EnvCredentialEntry):
                    if self._applies(value.when):
                        mapping[ref] = value.env_var
                else:
                    mapping[ref] = value
        for ref, var in self.cli.env_credential_map:
            if not ref or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise PolicyError(f"--env-credential-map: `{ref}={var}` is not valid")
            if reserved_env_name(var):
                raise PolicyError(f"--env-credential-map: `{var}` is reserved")
            mapping[ref] = var
        return tuple(mapping.items())


def _tls_intercept(cfg: TlsInterceptConfig | None) -> TlsIntercept | None:
    """The profile's ``tls_intercept`` (checked: durations parse), validities in seconds."""
    if cfg is None:
        return None
    default = TlsIntercept()
    return TlsIntercept(
        ca_validity=int(parse_duration(cfg.ca_validity)) if cfg.ca_validity
        else default.ca_validity,
        leaf_validity=int(parse_duration(cfg.leaf_validity)) if cfg.leaf_validity
        else default.leaf_validity,
    )


def _limits(cfg: LimitsConfig, max_processes: int | None) -> Limits:
    """The profile's resource limits (validated by the schema: they parse)."""
    return Limits(
        memory=None if cfg.memory is None else parse_size(cfg.memory),
        max_processes=max_processes or None,
        cpus=cfg.cpus,
        cpu_weight=cfg.cpu_weight,
        io_weight=cfg.io_weight,
        wall_clock=None if cfg.wall_clock is None else parse_duration(cfg.wall_clock),
    )
