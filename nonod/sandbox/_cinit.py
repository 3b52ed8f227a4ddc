"""A warm direct launcher's init in C from its first instruction (``nono-reaper --init``,
``reaper_init.c``): no forked interpreter per launch.

The fork server decides before it makes a launcher (:func:`covers`, never half in C): a
view the Python init would prepare without an outer process (``_launcher.direct``: one
that leaves the view guard nothing to do, or whose guard the fork server's hub adopts from
the init, with no audit tag unless the fork server can lend its loginuid for it), a
creation guard only if every refused name folds to ASCII (``reaper_guard.c`` compares them
so; :func:`creation_section`), and only the mount operations the C stage knows (binds,
tmpfs, symbolic links, masks, read-only and anchored paths, pins, idmapped trees,
overlays). Everything else, and everything when :data:`FORCE_PYTHON` is set in the fork
server's environment, keeps the Python init.

A creation guard in C is the Python init's (``_createguard``, ``_createserve``): its pins
after the view's mounts, layer 2 built at launch once the init is confined, the program
forked to enforce it and install the notifying filter (the plan's ``creation_filter``,
carried in the launch message), and the listener served by the init (``reaper_create.c``,
``reaper_guard.c``).

The fork server computes what the init does as flat, strictly checked forms: the view
(:func:`view_config`: the mount steps with their resolved arguments, the Landlock rules as
(path, access) pairs), once per view, in a sealed memfd every launcher for it reads; and at
launch the plan's own part (:func:`launch_message`: argv, environment, working directory,
limits, the seccomp program as ``_seccomp`` compiled it). A plan it cannot describe (an
empty argv, a NUL in a string) is not handed to a C init: that launcher is dropped and the
launch goes to the Python path (cold).

Then it spawns ``nono-reaper --init`` (:func:`spawn`: ``posix_spawn``, no copy of the fork
server's address space), which clones the init into the namespaces as the fork server's
child (``CLONE_PARENT``) and exits; the protocol on the ``go`` socket and the plan socket
is the Python direct init's (``_launcher.run_direct``), the init's pid coming from the
spawned helper (``P`` + u32).
"""

from __future__ import annotations

import fcntl
import os
import resource
import socket
import struct
from collections.abc import Sequence

import msgspec

from . import _launcher
from ._createguard import MAKE_RIGHTS, guarded_dirs
from ._createserve import fold
from ._launcher import LaunchPlan, View, direct, program_nofile
from ._mounts import (
    ANCHOR,
    BIND_DIR,
    BIND_FILE,
    IDMAP,
    LINKED,
    MASK_DIR,
    MASK_FILE,
    OVERLAY,
    PIN,
    READONLY,
    SYMLINK,
    TMPFS,
    UPPER_DIR,
    UPPER_FILE,
    MountOp,
    _upper_entries,
)
from ._viewguard import ViewGuard, guarded

#: Set (to anything but "" or "0") in the fork server's environment: every init stays Python.
FORCE_PYTHON = "NONO_PYTHON_INIT"

STEP_BIND, STEP_TMPFS, STEP_SYMLINK, STEP_COVER, STEP_IDMAP, STEP_PIN, STEP_OVERLAY = range(1, 8)
F_WRITABLE, F_DEVICE, F_ON_HOST, F_FILE, F_ABSENT, F_LINKED = 1, 2, 4, 8, 16, 32
_COVERS = (MASK_DIR, MASK_FILE, READONLY, ANCHOR)
_UPPER = (UPPER_DIR, UPPER_FILE)
_KINDS = frozenset({BIND_DIR, BIND_FILE, TMPFS, SYMLINK, IDMAP, PIN, OVERLAY, LINKED, *_UPPER,
                    *_COVERS})
_U8x3 = struct.Struct("<BBB")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_LAUNCH_HEAD = struct.Struct("<4sIIQQQ")
_OP = struct.Struct("<IIq")  # as ``_reaper._OP``
_IDENT = struct.Struct("<QQ")
MAX_STEPS = 4096  # reaper_view.c
MAX_RULES = 4096  # reaper_confine.c
MAX_PATH = 4095
MAX_PINNED = 8 << 20  # the view's flat form is at most 16 MiB (reaper_init.c)
FLAG_TTY = 1
#: The launch message carries the working directory's device and inode after its path
#: (``LaunchPlan.cwd_identity``), checked after the chdir.
FLAG_CWD_ID = 2
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def forced_python() -> bool:
    return os.environ.get(FORCE_PYTHON, "") not in ("", "0")


def _path_ok(path: str | bytes) -> bool:
    raw = path.encode() if isinstance(path, str) else path
    return b"\0" not in raw and len(raw) <= MAX_PATH


def covers(key: tuple[int, int, int, int, int], view: View | None, reaper: int,
           lends: bool = False, adopts: bool = False) -> bool:
    """Whether a launcher for ``key`` and ``view`` gets the C init (see the module);
    ``lends``: the fork server can lend its loginuid for an audit tag (``_loginuid``),
    for the spawn of the helper, whose clone the init inherits it from; ``adopts``: its
    hub takes a view guard from the init (``_launcher._adopt_ahead``)."""
    if reaper < 0 or view is None or forced_python():
        return False
    if not direct(key, view, lends, adopts):
        return False
    if len(view.mounts) > MAX_STEPS or creation_section(view) is None:
        return False
    try:
        _upper_entries(view.mounts)
    except OSError:
        return False  # the Python init fails it, as it does
    if sum(map(len, view.pinned)) > MAX_PINNED or not all(
            op.source.isdigit() and int(op.source) < len(view.pinned)
            for op in view.mounts if op.kind == PIN):
        return False
    if any(op.kind not in _KINDS or not (_path_ok(op.target) and _path_ok(op.source))
           or not op.target.startswith("/") for op in view.mounts):
        return False
    rules = view.landlock.rules if view.landlock is not None else ()
    return len(rules) <= MAX_RULES and all(_path_ok(path) for path, _, _ in rules)


def _under(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _U32.pack(len(raw)) + raw


def _step(op: MountOp, on_host: bool, pinned: Sequence[bytes],
          uppers: dict[str, list[MountOp]]) -> bytes:
    host = F_ON_HOST if on_host else 0
    if op.kind == OVERLAY:  # its upper layer's entries follow, relative to it
        entries = uppers.get(op.target, [])
        return (_U8x3.pack(STEP_OVERLAY, op.kind, host) + _str(op.target) + _str(op.source)
                + _U32.pack(len(entries))
                + b"".join(bytes((e.kind,)) + _str(os.path.relpath(e.target, op.target))
                           for e in entries))
    if op.kind == PIN:  # the verified bytes follow, ``source`` their index
        data = pinned[int(op.source)]
        return (_U8x3.pack(STEP_PIN, op.kind, 0) + _str(op.target) + _str(op.source)
                + _U32.pack(len(data)) + data)
    if op.kind in (BIND_DIR, BIND_FILE):
        flags = (host | (F_WRITABLE if op.writable else 0) | (F_DEVICE if op.device else 0)
                 | (F_FILE if op.kind == BIND_FILE else 0))
        return _U8x3.pack(STEP_BIND, op.kind, flags) + _str(op.target) + _str(op.source)
    if op.kind == TMPFS:
        flags = host | (F_WRITABLE if op.writable else 0)
        return _U8x3.pack(STEP_TMPFS, op.kind, flags) + _str(op.target) + _str("")
    if op.kind == IDMAP:  # the next of the launcher's idmapped trees, moved there
        return _U8x3.pack(STEP_IDMAP, op.kind, host) + _str(op.target) + _str("")
    if op.kind == SYMLINK:
        return _U8x3.pack(STEP_SYMLINK, op.kind, host) + _str(op.target) + _str(op.source)
    if op.kind == LINKED:  # the walk's inode, bound read-only (``_mounts._linked``)
        return _U8x3.pack(STEP_COVER, READONLY, F_LINKED) + _str(op.target) + _str(op.source)
    flags = F_ABSENT if op.absent else 0
    return _U8x3.pack(STEP_COVER, op.kind, flags) + _str(op.target) + _str("")


def mount_steps(ops: Sequence[MountOp], pinned: Sequence[bytes] = ()) -> bytes:
    """The view's mounts as ``reaper_view.c`` applies them, each with whether its target
    lies under an earlier host bind (what ``_mounts.apply_mounts`` tracks as it goes); a
    pin with its verified bytes, an overlay with its upper layer's entries (which are no
    step of their own)."""
    uppers = _upper_entries(ops)
    steps = [op for op in ops if op.kind not in _UPPER]
    out = [_U32.pack(len(steps))]
    host: list[str] = []
    for op in steps:
        out.append(_step(op, any(_under(op.target, h) for h in host), pinned, uppers))
        if op.kind in (BIND_DIR, IDMAP, OVERLAY):
            host.append(op.target)
    return b"".join(out)


def writable_roots(view: View) -> list[str]:
    """Where the first Landlock layer lets the session create entries, normalized and sorted
    as ``_createguard.prepare`` walks them (``_launcher._writable_roots``)."""
    rules = view.landlock.rules if view.landlock is not None else ()
    return sorted({os.path.normpath(os.fsdecode(path)) for path, allowed, is_file in rules
                   if not is_file and allowed & MAKE_RIGHTS})


def creation_section(view: View) -> bytes | None:
    """The creation guard's part of the view (``reaper_create.c``): each guarded directory
    with the names refused in it, folded, and the writable roots; None if ``reaper_guard.c``
    could not compare a name (it folds to ASCII only) or a path does not fit."""
    if not view.creation_refused:
        return _U32.pack(0) + _U32.pack(0)
    dirs = guarded_dirs(view.creation_refused)
    roots = writable_roots(view)
    out = [_U32.pack(len(dirs))]
    for directory, names in dirs.items():
        folded = sorted({fold(name) for name in names})
        if not all(name.isascii() and _path_ok(name) for name in folded) or not _path_ok(
                directory):
            return None
        out += [_str(directory), _U32.pack(len(folded)), *(_str(name) for name in folded)]
    if not all(_path_ok(root) and root.startswith("/") for root in roots):
        return None
    out += [_U32.pack(len(roots)), *(_str(root) for root in roots)]
    return b"".join(out)


def view_config(view: View) -> bytes:
    """``NGV1``: the mount steps, the creation guard's part (``creation_section``), the
    Landlock ruleset (``reaper_confine.c``), then the view guard's state and the hub's ``O``
    message (``guard_state``)."""
    ll = view.landlock
    creation = creation_section(view)
    if creation is None:
        raise ValueError("the creation guard's names do not fold to ASCII")  # not covered
    out = [b"NGV1", mount_steps(view.mounts, view.pinned), creation]
    if ll is None or not ll.abi:
        out.append(struct.pack("<IQQQII", 0, 0, 0, 0, 0, 0))
    else:
        out.append(struct.pack("<IQQQI", ll.abi, ll.handled_access_fs, ll.handled_access_net,
                               ll.scoped, len(ll.rules)))
        for path, allowed, is_file in ll.rules:
            out += [_str(path), _U64.pack(allowed), bytes((int(is_file),))]
        out.append(_U32.pack(len(ll.net_rules)))
        out += [struct.pack("<QQ", port, allowed) for port, allowed in ll.net_rules]
    state, on_the_way = guard_state(view.mounts)
    out += [_U32.pack(len(state)), state, _U32.pack(len(on_the_way)), on_the_way]
    return b"".join(out)


def guard_state(ops: Sequence[MountOp]) -> tuple[bytes, bytes]:
    """What ``_launcher._adopt_ahead`` works from, for ``reaper_outer.c``'s ``adopt_guard``:
    the guard's state as ``_reaper.outer_config`` writes it, before any mount id is taken
    (-1) or directory watched ((0, 0)), and the hub's ``O`` message; empty: nothing to
    guard."""
    todo = guarded(ops)
    if not todo:
        return b"", b""
    guard = ViewGuard(todo)
    out = [b"NGO1", _U32.pack(len(guard.ops))]
    for op in guard.ops:
        out += [_OP.pack(op.kind, int(op.absent), -1), _str(op.target), _str(op.source)]
    out.append(_U32.pack(len(guard.dirs)))
    out += [_str(directory) + _IDENT.pack(0, 0) for directory in guard.dirs]
    return b"".join(out), b"O" + msgspec.msgpack.encode(sorted(guard.on_the_way))


class Configs:
    """Each view's config in a sealed memfd, made once (the fork server keeps a few)."""

    MAX = 8

    def __init__(self) -> None:
        self._fds: dict[bytes, int] = {}

    def fd(self, encoded: bytes, view: View) -> int:
        fd = self._fds.pop(encoded, -1)
        if fd < 0:
            fd = _sealed(view_config(view))
        self._fds[encoded] = fd  # the most recent last
        while len(self._fds) > self.MAX:
            os.close(self._fds.pop(next(iter(self._fds))))
        return fd


def _sealed(data: bytes) -> int:
    fd = os.memfd_create("nono-init", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError:
        os.close(fd)
        raise
    return fd


def _limit(value: int) -> int:
    return 0xFFFFFFFFFFFFFFFF if value == resource.RLIM_INFINITY else value


def launch_message(plan: LaunchPlan) -> bytes | None:
    """``NGL1``: what the C init does at launch (``reaper_init.c``); None if the plan has
    something it cannot describe (then the Python path launches it)."""
    if (plan.switch_user or not plan.argv or bool(plan.creation_refused)
            != bool(plan.creation_filter)
            or not all(_path_ok(s) for s in (plan.executable, plan.cwd))):
        return None
    env: dict[str, str] = {}
    for item in plan.env:  # as ``_launcher._env_dict``: the last of a name wins
        name, _, value = item.partition("=")
        env[name] = value
    strings = (*plan.argv, *env, *env.values())
    if "" in env or any("\0" in s for s in strings):
        return None
    soft, hard = program_nofile(_launcher.INHERITED_NOFILE
                                or resource.getrlimit(resource.RLIMIT_NOFILE))
    flags = (FLAG_TTY if plan.controlling_tty else 0) | \
        (FLAG_CWD_ID if plan.cwd_identity is not None else 0)
    cwd_id = b"".join(_U64.pack(n) for n in plan.cwd_identity or ())
    out = [_LAUNCH_HEAD.pack(b"NGL1", flags, plan.proxy_port, plan.max_processes,
                             _limit(soft), _limit(hard)),
           _str(plan.executable), _str(plan.cwd), cwd_id, _U32.pack(len(plan.argv)),
           *(_str(arg) for arg in plan.argv), _U32.pack(len(env)),
           *(_str(f"{name}={value}") for name, value in env.items()),
           _U32.pack(len(plan.creation_filter)), plan.creation_filter,
           _U32.pack(len(plan.seccomp)), plan.seccomp]
    return b"".join(out)


def spawn(reaper: int, ns_flags: int, plan_fd: int, go_fd: int, config_fd: int,
          trees: Sequence[int] = (), hub: int = -1) -> int:
    """Spawn ``nono-reaper --init`` with the descriptors (``trees``: the view's idmapped
    trees, ``_mounts.idmapped_trees``; ``hub``: the socket its view guard goes to the hub
    on, -1: nothing to guard); its pid. It says ``P`` + the init's pid on ``go_fd``, the
    init ``r``."""
    passed = (plan_fd, go_fd, config_fd, *((hub,) if hub >= 0 else ()), *trees)
    argv = ["nono-reaper", "--init", str(ns_flags), str(plan_fd), str(go_fd), str(config_fd),
            str(hub), *(str(fd) for fd in trees)]
    for fd in passed:
        os.set_inheritable(fd, True)
    try:
        return os.posix_spawn(f"/proc/self/fd/{reaper}", argv, {})
    finally:
        for fd in passed:
            os.set_inheritable(fd, False)


def init_pid(said: bytes) -> int | None:
    """The init's pid from the helper's ``P`` message, else None."""
    if len(said) == 5 and said[:1] == b"P":
        return int(_U32.unpack_from(said, 1)[0])
    return None




_SPAWN_HEAD = struct.Struct("<4sIIBB")


class Spawner:
    """``nono-reaper --spawner``, started once (``reaper_init.c``, ``spawner_main``): the
    helper :func:`spawn` starts for each launcher, kept. A request is one datagram with the
    descriptors; the spawner clones the init as our child (``CLONE_PARENT``) from a table of
    its own few descriptors, not a copy of ours (five per live session: their copy and
    close were ~2 ms per launch at 900 live), and we never wait for a process to be
    made: the kernel's fork, which waits for any v1 group migration on the host, holds
    the spawner, not our loop (3.5 ms p50 at 4 launches in flight). Its end (the fork
    server gone, or renewed: its end is close-on-exec) ends it."""

    def __init__(self, reaper: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            os.set_inheritable(theirs.fileno(), True)
            self.pid = os.posix_spawn(f"/proc/self/fd/{reaper}",
                                      ["nono-reaper", "--spawner", str(theirs.fileno())], {})
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock: socket.socket | None = ours

    def spawn(self, ns_flags: int, plan_fd: int, go_fd: int, config_fd: int,
              trees: Sequence[int] = (), hub: int = -1, tag: int = 0) -> bool:
        """Ask for an init as :func:`spawn` makes one (its pid and ``r`` come on
        ``go_fd``), with the audit ``tag`` lent for its clone as ``_loginuid.Lender`` lends
        it (the caller checked that it can be: ``Lender.usable``); False if the spawner
        cannot take the request (it has ended, or its queue is full): the caller spawns a
        helper instead."""
        if self._sock is None or len(trees) > 64:
            return False
        head = _SPAWN_HEAD.pack(b"NGS1", ns_flags, tag, int(hub >= 0), len(trees))
        fds = [plan_fd, go_fd, config_fd, *((hub,) if hub >= 0 else ()), *trees]
        try:
            socket.send_fds(self._sock, [head], fds)
        except BlockingIOError:
            return False
        except OSError:
            self.close()  # it has ended: every launcher from here is spawned
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
