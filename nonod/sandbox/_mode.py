"""Which isolation the engine builds sessions with: namespaces, or Landlock only.

``namespaces`` (the default where the kernel lets us): every session gets its own user, mount,
pid, ipc, uts and cgroup namespaces (and a network namespace when the network is restricted),
its own filesystem view, plus Landlock and seccomp.

``landlock-only``: for hosts that refuse ``unshare(CLONE_NEWUSER)`` (Docker's default seccomp
profile, Ubuntu 24.04's AppArmor restriction, many CI runners). No namespace at all: Landlock
limits the host's tree to the grants, the network is Landlock's (TCP connect only to the
daemon's proxy's port, on any address: ``network_ports``), seccomp as always, plus System V
IPC, message queues, inotify and other processes' limits and scheduling refused. A denied
path inside a granted directory is kept out by granting the entries around it instead
(``split_around``). What only a mount namespace can give
(read-only persistence files, the creation guard, trust pins, a private /tmp, copy-on-write
caches) is refused
unless the profile accepts each missing layer by name (``view_needs``); what a pid namespace
gives is taken over by the launcher's subreapers or lost, and reported (``docs/sandbox.md``).

``auto`` picks ``namespaces`` when a probe child may create them, ``landlock-only`` otherwise.
The probe runs once per process: the answer does not change while the daemon runs.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Final, Literal, get_args

import msgspec

from ..errors import EnforcementUnavailable
from ..policy import Grant, ResolvedPolicy
from ._mounts import (
    BIND_FILE,
    OVERLAY,
    PRIVATE_TMP,
    PROC_KEYRINGS,
    READONLY,
    MountPlan,
    base_grants,
)
from ._report import partial
from ._types import LayerReport

ModeSetting = Literal["auto", "namespaces", "landlock-only"]
Mode = Literal["namespaces", "landlock-only"]
MODE_SETTINGS: Final = get_args(ModeSetting)
NAMESPACES: Final = "namespaces"
LANDLOCK_ONLY: Final = "landlock-only"

# The same flags the launcher unshares (``_plan.NS_FLAGS``), tried in a throwaway interpreter:
# unshare() must run in a single-threaded process, and the daemon has threads. A root daemon
# tries as uid 65534: its launchers unshare after switching to the session's user, and
# Ubuntu's AppArmor restriction (for one) lets root create namespaces but not other users.
_PROBE = ("import ctypes, os\n"
          "if os.geteuid() == 0:\n"
          "    os.setgroups([]); os.setresgid(65534, 65534, 65534)\n"
          "    os.setresuid(65534, 65534, 65534)\n"
          "libc = ctypes.CDLL(None, use_errno=True)\n"
          "os._exit(0 if libc.unshare({flags}) == 0 else min(ctypes.get_errno(), 125) or 125)\n")


@functools.cache
def probe_namespaces(flags: int) -> int:
    """0 when a child may unshare ``flags``, else the errno the kernel answered with."""
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _PROBE.format(flags=flags)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30, check=False,
                              env={"PATH": os.defpath})  # not the daemon's env:// secrets
    except (OSError, subprocess.TimeoutExpired):
        return 1  # EPERM: whatever stopped the probe would stop a launch
    return done.returncode if done.returncode > 0 else (0 if done.returncode == 0 else 1)


def resolve_mode(setting: str, flags: int) -> Mode:
    """The mode for ``setting`` on this host (``auto``: probe once)."""
    if setting not in MODE_SETTINGS:
        raise ValueError(f"unknown sandbox mode {setting!r}")
    if setting == NAMESPACES:
        return NAMESPACES
    if setting == LANDLOCK_ONLY:
        return LANDLOCK_ONLY
    return NAMESPACES if probe_namespaces(flags) == 0 else LANDLOCK_ONLY


def adapt_policy(policy: ResolvedPolicy, mode: str) -> ResolvedPolicy:
    """The policy as this mode enforces it: without namespaces, a restricted network can only
    be Landlock's (``linux.sandbox_policy=landlock``), whatever the profile chose."""
    if mode == LANDLOCK_ONLY and policy.network_isolation != "landlock":
        return msgspec.structs.replace(policy, network_isolation="landlock")
    return policy


def refuse(missing: dict[str, str]) -> EnforcementUnavailable:
    """The error for a profile that needs layers this mode cannot give (name: why)."""
    names = sorted(missing)
    why = "; ".join(f"{name}: {missing[name]}" for name in names)
    quoted = ", ".join(f'"{name}"' for name in names)
    return EnforcementUnavailable(
        f"no namespaces on this host (landlock-only mode): the profile needs {why}",
        step="mode",
        hint=f'accept the weaker mode explicitly with "nonod": {{"allow_degraded": [{quoted}]}} '
             "in the profile, or run where user namespaces are allowed (see `nonoctl doctor` "
             "and docs/sandbox.md, \"Without user namespaces\")",
    )


# Without a mount namespace these are the host's: the terminals of the user's other programs
# under /dev/pts (never granted: the session keeps the terminal it was given, and /dev/tty),
# shared memory of host processes in /dev/shm and the host's temporary directories (granted
# only when the profile accepts ``private_tmp``).
_NEVER: Final = ("/dev/pts",)
# Mount-namespace features (what ``compile_mounts`` planned) and the layer names a profile uses
# to accept running without them.
_PERSISTENCE: Final = "persistence"
_PINS: Final = "trust_pins"
_CREATION: Final = "creation_guard"
_TMP: Final = "private_tmp"
# Writable grants in the user's cache home, which a view makes copy-on-write (``_mounts``).
_CACHES: Final = "private_caches"
# Not in the view, a socket cannot be reached; Landlock (ABI 7) does not check connect().
_SOCKETS: Final = "host_unix_sockets"
# Files of /proc a view masks (the keyrings; for uid 0 what only root may read): /proc cannot
# be split as other directories are (its process directories come and go).
_PROC: Final = "host_proc"
# For uid 0, what a view keeps from changes Landlock does not check: the host's files' mode,
# times, ACLs and extended attributes, all root's to change (nothing of the host is in a
# view, and its read grants are read-only mounts).
_METADATA: Final = "host_metadata"


def view_needs(policy: ResolvedPolicy, plan: MountPlan, pins: int, uid: int
               ) -> dict[str, str]:
    """What the filesystem view of ``plan`` does that Landlock alone cannot, for a session of
    ``uid``: layer name -> what would go unenforced."""
    shared = sorted({g.path for g in policy.grants if g.path in PRIVATE_TMP})
    persistence = sorted({op.target for op in plan.ops if op.kind == READONLY})
    needs: dict[str, str] = {}
    if persistence:
        needs[_PERSISTENCE] = (f"{len(persistence)} persistence files under writable grants "
                               f"would stay writable ({_sample(persistence)})")
    if pins:
        needs[_PINS] = (f"{pins} pinned files (verified instruction files, a TLS interception "
                        "trust bundle) would be read from the host as they are then, not as "
                        "pinned: intercepting clients would not trust the session's CA")
    if plan.creation_refused or plan.anchored:
        needs[_CREATION] = (f"{len(plan.creation_refused)} absent guarded paths could be "
                            f"created ({_sample(plan.creation_refused)}); guarded directories "
                            "could be moved aside, and the links denials were resolved through "
                            "removed")
    # The overlays, and the writable file grants there the view binds read-only.
    writes = {g.path for g in policy.grants if g.access.writes}
    caches = [op.target for op in plan.ops if op.kind == OVERLAY or (
        op.kind == BIND_FILE and not op.writable and op.target in writes)]
    if caches:
        needs[_CACHES] = (f"{len(caches)} writable cache grants ({_sample(caches)}) would be "
                          "written on the host, not copy-on-write: what host tools later run "
                          "from them (compiled packages, wheels, hooks) could be the "
                          "session's")
    if shared:
        needs[_TMP] = (f"{', '.join(shared)} would be the host's, shared with its other "
                       "processes and sessions, not the session's own")
    proc = [*(p for p in plan.masked if _under(p, "/proc")),
            *(p for p in PROC_KEYRINGS if os.path.lexists(p))]
    if proc:
        needs[_PROC] = (f"{len(proc)} files of the host's /proc that a view masks would be "
                        f"readable ({_sample(proc)}): the uid's kernel keys, and for uid 0 the "
                        "kernel's root-only state")
    if uid == 0:
        needs[_METADATA] = ("a uid 0 session could change the mode, times, ACLs and extended "
                            "attributes of every file root owns on the host (Landlock does "
                            "not check chmod, utimes or xattrs; a view holds none of the "
                            "host's files but its grants, read-only): /etc/shadow made "
                            "readable, /etc/passwd writable for every local user")
    if policy.allow_unix_sockets:
        needs[_SOCKETS] = ("unix_sockets would reach every pathname socket of the host its uid "
                           "may connect to (the session bus, ssh and gpg agents, docker's), "
                           "not only those below the grants")
    return needs


def _sample(paths: Sequence[str], n: int = 3) -> str:
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def landlock_only_view(policy: ResolvedPolicy, plan: MountPlan, pins: int, uid: int
                       ) -> tuple[list[Grant], LayerReport]:
    """The Landlock grants of a session of ``uid`` without a mount namespace, and its
    filesystem layer.

    Refuses (``refuse``) when the profile needs what only the view can give and has not
    accepted each missing layer in ``allow_degraded``."""
    needs = view_needs(policy, plan, pins, uid)
    missing = {name: why for name, why in needs.items() if name not in policy.allow_degraded}
    if missing:
        raise refuse(missing)
    wanted = [g for g in (*base_grants(), *policy.grants)
              if g.path not in _NEVER and (g.path != "/dev/shm" or g.source != "base")]
    denied = {d.path for d in policy.denials} | {os.path.realpath(d.path) for d in policy.denials}
    # What the view would mask besides (root-only files for uid 0, kernel file systems below
    # a grant), but /proc (accepted as host_proc above).
    denied |= {p for p in plan.masked if not _under(p, "/proc")}
    grants, split = split_around(wanted, sorted(denied))
    reason = ("no mount namespace: the host's tree with Landlock rules, not a view of the "
              "grants; paths outside them still exist (stat, chmod, chown, utimes and xattrs "
              "are not checked by Landlock), /proc is the host's, /dev/pts is not granted")
    if split:
        reason += (f"; denied paths kept out by granting the entries around them: "
                   f"{len(split)} granted directories ({_sample(split)}) cannot be listed, "
                   "and nothing can be created, renamed or removed directly in them; "
                   "entries the host adds to them later are not granted")
    if needs:
        reason += "; accepted by the profile: " + "; ".join(
            f"{name} ({why})" for name, why in sorted(needs.items()))
    return grants, partial("filesystem_view", reason)


def split_around(grants: Sequence[Grant], denied: Sequence[str]
                 ) -> tuple[list[Grant], list[str]]:
    """Deny-inside-allow with Landlock alone: a directory grant with denied paths below it
    becomes one grant per entry of it (at launch) but the denied ones, recursively along the
    way to each denied path; a grant inside a denied path is dropped. Symbolic links are not
    granted (Landlock judges what they lead to). Returns the grants and the directories that
    were split (not granted themselves)."""
    out: list[Grant] = []
    split: list[str] = []
    for grant in grants:
        if any(_under(grant.path, d) for d in denied):
            continue
        inner = [d for d in denied if d != grant.path and _under(d, grant.path)]
        if grant.is_file or not inner:
            out.append(grant)
        else:
            _split(grant, grant.path, inner, out, split)
    return out, split


def _split(grant: Grant, path: str, denied: list[str], out: list[Grant],
           split: list[str]) -> None:
    split.append(path)
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return  # nothing under it is granted then
    for entry in entries:
        child = os.path.join(path, entry.name)
        if child in denied or entry.is_symlink():
            continue
        below = [d for d in denied if _under(d, child)]
        is_dir = entry.is_dir(follow_symlinks=False)
        if below and is_dir:
            _split(grant, child, below, out, split)
        else:
            out.append(msgspec.structs.replace(grant, path=child, is_file=not is_dir))


def _under(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def namespaces_layer() -> LayerReport:
    return partial(
        "namespaces", "none (landlock-only mode): the program shares the host's pid, ipc, "
        "uts, mount and network namespaces; it sees host processes in /proc, signals to them "
        "are stopped only by Landlock's signal scope (ABI 6), ptrace and /proc/<pid>/mem, "
        "environ, fd only by Landlock's domain check and seccomp, their limits, priority and "
        "CPU affinity (by pid) by seccomp; the host's System V IPC, "
        "POSIX message queues and inotify are refused by seccomp instead")


EMPTY_VIEW: Final = MountPlan(ops=(), masked=(), skipped=(), protected=())
