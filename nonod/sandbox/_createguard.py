"""The creation guard: some absent names cannot be created in directories the session may
otherwise write (``W/.envrc``, ``W/.vscode``, ``~/.bashrc``...), and the host is never
written to achieve it.

A name that does not exist cannot be mounted over, so the refusal is the kernel's, in two
pieces that only the program (not the session's init) carries:

1. **A second Landlock layer** (layers intersect) that handles the creation rights
   (``MAKE_*`` and ``REFER``) and grants them everywhere the first layer lets the session
   write, *except directly in the guarded directories* (the parents of the refused paths):
   a rule on every writable grant root that is not on the way to a guarded directory and,
   walking down from those that are, on every existing directory off the way. Creating any
   entry directly in a guarded directory, or in a directory made in one later, fails there
   with ``EACCES``. A rule is on an inode, whatever path placed it: no directory on the way
   gets one through a second path (a mount) either, and the plan lists the guarded
   directories at every path the view shows them at (``_mounts._View.keep_aliases``).
2. **A seccomp user-notification filter** on the creation syscalls. The session's init
   answers each one (``_createserve``): it performs the creations that layer 2 refused but
   that are not of a refused name, on the directory descriptor it checked, and lets every
   other call continue into the kernel, which still applies both layers. The same filter
   tells the init of every ``landlock_restrict_self``, new child subreaper and ``clone``
   with ``CLONE_PARENT`` (:data:`WATCHED`), so that it emulates only for processes still in
   the program's own domain (``_createserve``, "Nested domains").

So the init never has to refuse a creation: whatever it lets through meets layer 2, and what it
does itself is one allowed name in one directory it opened, under the first layer only.

Guarded directories and their ancestors below their mount are bound onto themselves in the
session (a mount point cannot be renamed or removed: ``EBUSY``), so that a guarded directory
cannot be moved aside and made again without its guard.

Parent side: :func:`guarded_dirs`, :func:`build_notify_filter`, :func:`describe`. Init side,
standard library and ctypes only: :func:`pin_dirs`, :func:`prepare`, and in the program just
before ``execve`` :func:`confine_program`.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import stat
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple

from . import _landlock, _libc
from ._seccomp import (
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    Assembler,
    install_filter,
)
from ._syscalls import Arch

MAKE_RIGHTS: Final = (
    _landlock.FS_MAKE_CHAR | _landlock.FS_MAKE_DIR | _landlock.FS_MAKE_REG
    | _landlock.FS_MAKE_SOCK | _landlock.FS_MAKE_FIFO | _landlock.FS_MAKE_BLOCK
    | _landlock.FS_MAKE_SYM
)
LAYER2_RIGHTS: Final = MAKE_RIGHTS | _landlock.FS_REFER

SECCOMP_RET_USER_NOTIF: Final = 0x7FC00000
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: Final = 1 << 5

O_CREAT: Final = 0o100

# The creation syscalls per architecture (kernel tables as of Linux 6.18). aarch64 has only
# the *at forms.
SYSCALLS: Final[dict[str, dict[str, int]]] = {
    "x86_64": {
        "open": 2, "creat": 85, "openat": 257, "openat2": 437, "mkdir": 83, "mkdirat": 258,
        "mknod": 133, "mknodat": 259, "symlink": 88, "symlinkat": 266, "link": 86,
        "linkat": 265, "rename": 82, "renameat": 264, "renameat2": 316,
    },
    "aarch64": {
        "openat": 56, "openat2": 437, "mkdirat": 34, "mknodat": 33, "symlinkat": 36,
        "linkat": 37, "renameat": 38, "renameat2": 276,
    },
}
# Where open and openat keep their flags: only those with O_CREAT are notified.
_OPEN_FLAGS_ARG: Final = {"open": 1, "openat": 2}

# The calls that tell the init which processes left the program's own domain (see
# ``_createserve``, "Nested domains"): every ``landlock_restrict_self``,
# ``prctl(PR_SET_CHILD_SUBREAPER)`` (orphans then move to that process, not to the init), and
# ``clone`` with ``CLONE_PARENT`` (the child's parent is then the caller's parent). A seccomp
# filter of the program's own with a listener, whose notifications would come before ours,
# cannot be installed: the kernel refuses a second listener on a task's filters (EBUSY).
WATCHED: Final[dict[str, dict[str, int]]] = {
    "x86_64": {"landlock_restrict_self": 446, "prctl": 157, "clone": 56},
    "aarch64": {"landlock_restrict_self": 446, "prctl": 167, "clone": 220},
}
CLONE3: Final = 435  # the generic table: the same on x86_64 and aarch64
PR_SET_CHILD_SUBREAPER: Final = 36
CLONE_PARENT: Final = 0x00008000

_DIR_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


# --- parent side ------------------------------------------------------------------------------


def first_missing(paths: Iterable[str], writable_dirs: Sequence[str],
                  exists: Callable[[str], bool] = os.path.lexists) -> tuple[str, ...]:
    """For each absolute path that does not exist: its first missing component (the name that
    must not be created), when that component's parent is a directory at or under one of
    ``writable_dirs``. Existing paths and paths outside them are left out."""
    out: list[str] = []
    roots = [d.rstrip("/") or "/" for d in writable_dirs]
    for path in paths:
        path = os.path.normpath(path)
        if exists(path):
            continue
        missing = path
        while True:
            parent = os.path.dirname(missing)
            if parent == missing or exists(parent):
                break
            missing = parent
        parent = os.path.dirname(missing)
        if missing not in out and any(_at_or_under(parent, r) for r in roots):
            out.append(missing)
    return tuple(out)


def _at_or_under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def guarded_dirs(refused: Iterable[str]) -> dict[str, frozenset[str]]:
    """The guarded directories (parents of the refused paths) and the names refused in each."""
    names: dict[str, set[str]] = {}
    for path in refused:
        path = os.path.normpath(path)
        if not os.path.isabs(path) or path == "/":
            raise ValueError(f"a refused path must be absolute and not /: {path!r}")
        names.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
    return {d: frozenset(n) for d, n in names.items()}


def describe(refused: Sequence[str]) -> str:
    return _described(tuple(refused))


@functools.lru_cache(maxsize=64)
def _described(refused: tuple[str, ...]) -> str:
    """(Remembered: the same names from launch to launch of one view, 0.2 ms of each launch's
    plan worked out again each time.)"""
    return (f"{len(refused)} names refused in {len(guarded_dirs(refused))} directories "
            "(Landlock creation layer; seccomp user notification emulates the other names)")


def syscall_table(arch: Arch) -> dict[str, int]:
    table = SYSCALLS.get(arch.name)
    if table is None:
        raise ValueError(f"no creation syscall table for {arch.name}")
    return table


def watched_table(arch: Arch) -> dict[str, int]:
    table = WATCHED.get(arch.name)
    if table is None:
        raise ValueError(f"no watched syscall table for {arch.name}")
    return table


def build_notify_filter(arch: Arch) -> bytes:
    """The program's second filter: a foreign ABI is killed (as by the session's filter),
    the creation syscalls go to the supervisor (``open``/``openat`` only with ``O_CREAT``
    in their flags' low 32 bits; ``openat2`` always, its flags being behind a pointer), and
    so do the calls that nest a domain or move a process's parent (:data:`WATCHED`; ``prctl``
    only for ``PR_SET_CHILD_SUBREAPER`` and ``clone`` only with ``CLONE_PARENT``, in the low
    32 bits of their first argument, as the kernel reads it);
    ``clone3``, whose flags are behind a pointer, fails with ``ENOSYS`` (libc falls back to
    ``clone``; the session's filter answers the same); everything else is allowed (the
    session's own filter still applies)."""
    table = syscall_table(arch)
    watched = watched_table(arch)
    a = Assembler()
    a.load(4)  # seccomp_data.arch
    a.jeq(arch.audit_arch, jt="native")
    a.ret(SECCOMP_RET_KILL_PROCESS)
    a.label("native")
    a.load(0)  # seccomp_data.nr
    if arch.x32_bit:
        a.jge(arch.x32_bit, jf="dispatch")
        a.ret(SECCOMP_RET_KILL_PROCESS)
    a.label("dispatch")
    for name, number in table.items():
        a.jeq(number, jt=name if name in _OPEN_FLAGS_ARG else "notify")
    a.jeq(watched["landlock_restrict_self"], jt="notify")
    a.jeq(watched["prctl"], jt="prctl")
    a.jeq(watched["clone"], jt="clone")
    a.jeq(CLONE3, jt="enosys")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("prctl")  # prctl(option, ...)
    a.load(16)
    a.jeq(PR_SET_CHILD_SUBREAPER, jt="notify")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("clone")  # clone(flags, ...) on both ABIs
    a.load(16)
    a.jset(CLONE_PARENT, jt="notify")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("enosys")
    a.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    for name, index in _OPEN_FLAGS_ARG.items():
        if name in table:
            a.label(name)
            a.load(16 + 8 * index)  # low 32 bits of args[index]
            a.jset(O_CREAT, jt="notify")
            a.ret(SECCOMP_RET_ALLOW)
    a.label("notify")
    a.ret(SECCOMP_RET_USER_NOTIF)
    return a.assemble()


# --- layer 2 ---------------------------------------------------------------------------------


def on_the_way(guarded: Iterable[str]) -> set[str]:
    """Every guarded directory and each of its ancestors."""
    out: set[str] = set()
    for path in guarded:
        while path not in out:
            out.add(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return out


def layer2_dirs(writable: Iterable[str], guarded: Iterable[str],
                children: Callable[[str], Iterable[str]]) -> list[str]:
    """The directories that get layer 2's creation rule: each writable root off the way to
    every guarded directory and, below the roots on the way, each child directory off the way
    (``children(d)``: the paths of ``d``'s subdirectories, symlinks excluded)."""
    way = on_the_way(guarded)
    rules: list[str] = []
    seen: set[str] = set()
    for root in writable:
        stack = [os.path.normpath(root)]
        while stack:
            path = stack.pop()
            if path in seen:
                continue
            seen.add(path)
            if path not in way:
                rules.append(path)
                continue
            stack.extend(os.path.normpath(c) for c in children(path))
    return rules


def subdirectories(path: str) -> list[str]:
    """``path``'s subdirectories as listed now (none when it cannot be listed: a directory the
    first layer lets the session write but not read gets no rules below it, so creations
    there are emulated instead)."""
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


# --- init side ---------------------------------------------------------------------------------

Identity = tuple[int, int]  # (st_dev, st_ino)


class Guard(NamedTuple):
    """What the init keeps for the whole session (the program inherits ``ruleset``)."""

    ruleset: int  # layer 2, ready for landlock_restrict_self
    guarded: dict[Identity, frozenset[str]]  # guarded directory -> names refused in it
    ruled: frozenset[Identity]  # directories that carry their own layer-2 rule
    keep: tuple[int, ...]  # O_PATH descriptors of the guarded directories (pins the inodes)
    paths: dict[str, frozenset[str]]  # the same by path: a directory made again where a
    # guarded one was (the host removed it) is refused its names too


def _identity(fd: int) -> Identity:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def pin_dirs(refused: Sequence[str]) -> None:
    """Bind each guarded directory, and each ancestor of it up to the mount it lives in, onto
    itself: a mount point cannot be renamed or removed in the session, so a guarded directory
    stays the one the guard knows. Runs in the init while it may still mount."""
    pins: set[str] = set()
    for directory in guarded_dirs(refused):
        path = directory
        while path != "/" and path not in pins:
            if _libc.mount_id(path)[0] != _libc.mount_id(os.path.dirname(path))[0]:
                break  # a mount root already (the grant itself, a read-only bind...)
            pins.add(path)
            path = os.path.dirname(path)
    for path in sorted(pins, key=lambda p: p.count("/")):
        _libc.mount(path, path, None, _libc.MS_BIND | _libc.MS_REC)
        _libc.mount_setattr(path, _libc.MOUNT_ATTR_NOSUID | _libc.MOUNT_ATTR_NODEV,
                            recursive=True)


def _way_identities(guarded: Iterable[str]) -> set[Identity]:
    """The directories on the way to the guarded ones, by identity (as the session sees them:
    a mount's root where one is). A Landlock rule is on an inode, whatever path placed it, and
    the kernel checks it on every path through that inode: one on a directory on the way,
    placed through a second mount of it, would grant creating in the guarded directory."""
    out: set[Identity] = set()
    for path in on_the_way(guarded):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            out.add((st.st_dev, st.st_ino))
    return out


def prepare(refused: Sequence[str], writable: Sequence[str], abi: int) -> Guard:
    """Open the guarded directories and build layer 2 (init side, after the first layer: the
    walk sees what the session sees); a directory off the way by path that is one on the way
    by identity (a second mount of it) gets no rule. Raises ``OSError`` when the guard cannot
    be built."""
    if abi < 2:
        raise OSError(errno.ENOTSUP, f"Landlock ABI {abi}: the creation guard needs REFER (v2+)")
    dirs = guarded_dirs(refused)
    keep: list[int] = []
    guarded: dict[Identity, frozenset[str]] = {}
    ruleset = -1
    try:
        for path, names in dirs.items():
            fd = os.open(path, _DIR_FLAGS | os.O_NOFOLLOW)
            keep.append(fd)
            guarded[_identity(fd)] = names
        way = _way_identities(dirs)
        ruleset = _landlock.create_ruleset(LAYER2_RIGHTS, abi=abi)
        ruled: set[Identity] = set()
        roots = {os.path.normpath(w) for w in writable}
        for path in layer2_dirs(sorted(roots), dirs, subdirectories):
            try:
                fd = os.open(path, _DIR_FLAGS | os.O_NOFOLLOW)
            except OSError as exc:
                if path in roots:
                    raise  # no rule on a writable root would refuse every creation under it
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES):
                    continue  # gone or replaced since the listing: emulated if under a guard
                raise
            try:
                ident = _identity(fd)
                if ident in way:
                    continue  # a directory on the way, reached through another mount
                _landlock.add_path_rule(ruleset, fd, LAYER2_RIGHTS, os.fsencode(path))
                ruled.add(ident)
            finally:
                os.close(fd)
    except BaseException:
        for fd in keep:
            os.close(fd)
        if ruleset >= 0:
            os.close(ruleset)
        raise
    return Guard(ruleset, guarded, frozenset(ruled), tuple(keep), dirs)


def confine_program(guard: Guard, program: bytes, sock: socket.socket) -> None:
    """In the program, just before ``execve``: enforce layer 2, install the notifying filter
    and hand its listener to the init (the init is not under this filter: it would wait on
    itself)."""
    _landlock.restrict_self(guard.ruleset)
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    try:
        listener = install_filter(program, flags)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # Before Linux 5.19: a signal can interrupt a waiting call, which then restarts.
        listener = install_filter(program, SECCOMP_FILTER_FLAG_NEW_LISTENER)
    try:
        socket.send_fds(sock, [b"L"], [listener])
    finally:
        os.close(listener)
