"""Reading strace's output, second layer: what the traced programs touched, from their calls.

Pure (no I/O, no clock), so it can be fed captured calls in tests. :class:`TraceRecorder`
interprets the :class:`~._strace.Call` records of :mod:`._strace` as a kernel would: it keeps
each process's working directory and descriptor table (shared or copied according to the
``clone`` flags), resolves relative paths against ``AT_FDCWD`` or the directory descriptor,
and records each path with how it was used (:class:`Use`), the ports bound and listened on,
and direct connection attempts that bypassed the proxy.

Descriptors come decorated with their paths (strace's ``-y``); the recorder uses the
decoration when present and its own tables otherwise. Paths are recorded as the program
spelled them, joined to their base directory; canonicalisation (symlinks, ``..``) happens when
the observations are folded (``_fold``), where the filesystem can be looked at.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, final

from ._strace import Call, StraceParser, fd_arg, flag_names, string_arg

# -- calls to observations -----------------------------------------------------------------------


class Use(enum.IntFlag):
    """How a path was used. READ/WRITE/EXEC are file contents; LIST is a directory listing
    (or opening a directory); STAT looks without opening; CREATE and REMOVE change the
    entry itself, so they need write access to the directory that holds it."""

    NONE = 0
    READ = enum.auto()
    WRITE = enum.auto()
    EXEC = enum.auto()
    LIST = enum.auto()
    STAT = enum.auto()
    CREATE = enum.auto()
    REMOVE = enum.auto()


@final
@dataclass(slots=True)
class PathRecord:
    """Everything seen for one path: uses by calls that succeeded, uses by calls that failed,
    and the error names of the failures."""

    ok: Use = Use.NONE
    failed: Use = Use.NONE
    errors: set[str] = field(default_factory=set)

    @property
    def any(self) -> Use:
        return self.ok | self.failed


@final
@dataclass(slots=True)
class Observations:
    """What a trace showed, before any folding."""

    paths: dict[str, PathRecord] = field(default_factory=dict)
    #: (bind address, port) -> how many listen() calls
    listening: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (address, port) -> connect() attempts to a non-loopback address (outside the proxy)
    direct: dict[tuple[str, int], int] = field(default_factory=dict)
    calls: int = 0
    unresolved: int = 0  # relative paths whose base directory was unknown

    def record(self, path: str, use: Use, call: Call) -> None:
        entry = self.paths.get(path)
        if entry is None:
            entry = self.paths[path] = PathRecord()
        if call.ok:
            entry.ok |= use
        else:
            entry.failed |= use
            if call.errno:
                entry.errors.add(call.errno)


@dataclass(slots=True)
class _Cwd:
    path: str | None


@dataclass(slots=True)
class _Files:
    paths: dict[int, str] = field(default_factory=dict)
    #: socket (see _socket_key) -> (address, port) of a bound inet socket
    bound: dict[str, tuple[str, int]] = field(default_factory=dict)

    def copy(self) -> _Files:
        return _Files(dict(self.paths), dict(self.bound))


@dataclass(slots=True)
class _Process:
    cwd: _Cwd
    files: _Files


_OPEN_HOW_FLAGS: Final = re.compile(r"flags=([A-Z0-9_|x]+)")
_CLONE_RE: Final = re.compile(r"flags=([A-Z0-9_|x]+)")
_PORT_RE: Final = re.compile(r"sin6?_port=htons\((\d+)\)")
_INET_RE: Final = re.compile(r'inet_addr\("([^"]*)"\)')
_INET6_RE: Final = re.compile(r'inet_pton\(AF_INET6,\s*"([^"]*)"')

# name -> (index of the dirfd argument or None, index of the path argument, use)
_PATH_CALLS: Final[Mapping[str, tuple[int | None, int, Use]]] = MappingProxyType({
    "stat": (None, 0, Use.STAT), "lstat": (None, 0, Use.STAT), "stat64": (None, 0, Use.STAT),
    "lstat64": (None, 0, Use.STAT), "newfstatat": (0, 1, Use.STAT),
    "fstatat64": (0, 1, Use.STAT), "statx": (0, 1, Use.STAT), "access": (None, 0, Use.STAT),
    "faccessat": (0, 1, Use.STAT), "faccessat2": (0, 1, Use.STAT),
    "readlink": (None, 0, Use.STAT), "readlinkat": (0, 1, Use.STAT),
    "statfs": (None, 0, Use.STAT), "getxattr": (None, 0, Use.STAT),
    "lgetxattr": (None, 0, Use.STAT), "listxattr": (None, 0, Use.STAT),
    "llistxattr": (None, 0, Use.STAT),
    "truncate": (None, 0, Use.WRITE), "chmod": (None, 0, Use.WRITE),
    "fchmodat": (0, 1, Use.WRITE), "fchmodat2": (0, 1, Use.WRITE),
    "chown": (None, 0, Use.WRITE), "lchown": (None, 0, Use.WRITE),
    "fchownat": (0, 1, Use.WRITE), "utime": (None, 0, Use.WRITE),
    "utimes": (None, 0, Use.WRITE), "utimensat": (0, 1, Use.WRITE),
    "futimesat": (0, 1, Use.WRITE), "setxattr": (None, 0, Use.WRITE),
    "lsetxattr": (None, 0, Use.WRITE), "removexattr": (None, 0, Use.WRITE),
    "lremovexattr": (None, 0, Use.WRITE),
    "mkdir": (None, 0, Use.CREATE), "mkdirat": (0, 1, Use.CREATE),
    "mknod": (None, 0, Use.CREATE), "mknodat": (0, 1, Use.CREATE),
    "unlink": (None, 0, Use.REMOVE), "unlinkat": (0, 1, Use.REMOVE),
    "rmdir": (None, 0, Use.REMOVE),
})


@final
class TraceRecorder:
    """Interprets :class:`Call` records into :class:`Observations`.

    ``cwd`` is the working directory of the first process seen (the traced program). A
    process's other state comes from the ``clone``/``fork``/``vfork`` that created it; its
    calls are held back until that call's result names it (strace may print a child's first
    calls before the parent's ``clone`` returns), then replayed. Calls of a pid whose creation
    never shows up are replayed by :meth:`finish` with an unknown working directory.
    """

    def __init__(self, cwd: str) -> None:
        self.observations = Observations()
        self._initial_cwd = cwd
        self._procs: dict[int, _Process] = {}
        self._held: dict[int, list[Call]] = {}
        self._root_seen = False

    def feed(self, call: Call) -> None:
        proc = self._procs.get(call.pid)
        if proc is None:
            if not self._root_seen:
                self._root_seen = True
                proc = self._procs[call.pid] = _Process(_Cwd(self._initial_cwd), _Files())
            else:
                self._held.setdefault(call.pid, []).append(call)
                return
        self._apply(proc, call)

    def finish(self) -> Observations:
        """Replay what is still held back (creation never seen) and return the observations."""
        for pid, calls in list(self._held.items()):
            proc = self._procs.setdefault(pid, _Process(_Cwd(None), _Files()))
            del self._held[pid]
            for call in calls:
                self._apply(proc, call)
        return self.observations

    # interpretation

    def _apply(self, proc: _Process, call: Call) -> None:
        obs = self.observations
        obs.calls += 1
        name, args = call.name, call.args
        try:
            if name in ("open", "creat"):
                self._open(proc, call, None, 0, "O_WRONLY|O_CREAT|O_TRUNC" if name == "creat"
                           else (args[1] if len(args) > 1 else ""))
            elif name in ("openat", "openat2"):
                flags = args[2] if len(args) > 2 else ""
                self._open(proc, call, args[0], 1, flags)
            elif name in _PATH_CALLS:
                dirfd, index, use = _PATH_CALLS[name]
                self._path_call(proc, call, dirfd, index, use)
            elif name in ("execve", "execveat"):
                dirfd = 0 if name == "execveat" else None
                path = self._resolve(proc, args, dirfd, 1 if dirfd == 0 else 0)
                if path is not None:
                    obs.record(path, Use.EXEC | Use.READ, call)
            elif name in ("rename", "renameat", "renameat2", "link", "linkat"):
                two_dirs = name.endswith("at") or name == "renameat2"
                old = self._resolve(proc, args, 0 if two_dirs else None, 1 if two_dirs else 0)
                new = self._resolve(proc, args, 2 if two_dirs else None, 3 if two_dirs else 1)
                moved = name.startswith("rename")
                if old is not None:
                    obs.record(old, Use.REMOVE if moved else Use.READ, call)
                if new is not None:
                    obs.record(new, Use.CREATE | Use.WRITE, call)
            elif name in ("symlink", "symlinkat"):
                new = self._resolve(proc, args, 1 if name == "symlinkat" else None,
                                    2 if name == "symlinkat" else 1)
                if new is not None:
                    obs.record(new, Use.CREATE, call)
            elif name in ("chdir", "fchdir"):
                self._chdir(proc, call)
            elif name in ("getdents", "getdents64"):
                path = self._fd_path(proc, args[0]) if args else None
                if path is not None:
                    obs.record(path, Use.LIST, call)
            elif name in ("clone", "clone3", "fork", "vfork"):
                self._spawn(proc, call)
            elif name == "bind":
                self._bind(proc, call)
            elif name == "listen":
                self._listen(proc, call)
            elif name == "connect":
                self._connect(call)
            elif name in ("exit", "exit_group"):
                # The pid is over; a later process may get the same number, and its state
                # must come from its own clone, not from this one.
                self._procs.pop(call.pid, None)
        except IndexError:
            pass  # fewer arguments than the call has: a truncated line, nothing to learn

    def _base(self, proc: _Process, dirfd_arg: str | None) -> str | None:
        if dirfd_arg is None:
            return proc.cwd.path
        fd = fd_arg(dirfd_arg)
        if fd is None:
            return None
        if fd.path is not None:
            return fd.path
        if fd.number is None:
            return proc.cwd.path
        return proc.files.paths.get(fd.number)

    def _resolve(self, proc: _Process, args: Sequence[str], dirfd: int | None,
                 index: int) -> str | None:
        if index >= len(args):
            return None
        path = string_arg(args[index])
        if not path:
            return None  # NULL, or "" with AT_EMPTY_PATH: the call is about a descriptor
        if path.startswith("/"):
            return path
        base = self._base(proc, args[dirfd] if dirfd is not None else None)
        if base is None:
            self.observations.unresolved += 1
            return None
        return os.path.join(base, path)

    def _fd_path(self, proc: _Process, arg: str) -> str | None:
        fd = fd_arg(arg)
        if fd is None:
            return None
        if fd.path is not None:
            return fd.path
        if fd.number is None:
            return proc.cwd.path
        return proc.files.paths.get(fd.number)

    def _open(self, proc: _Process, call: Call, dirfd: str | None, index: int,
              flags_text: str) -> None:
        if flags_text.startswith("{"):  # openat2's struct open_how
            found = _OPEN_HOW_FLAGS.search(flags_text)
            flags_text = found.group(1) if found else ""
        flags = flag_names(flags_text)
        path = self._resolve(proc, call.args, 0 if dirfd is not None else None, index)
        if "O_PATH" in flags:
            use = Use.STAT
        elif "O_RDWR" in flags:
            use = Use.READ | Use.WRITE
        elif "O_WRONLY" in flags:
            use = Use.WRITE
        elif "O_DIRECTORY" in flags:
            use = Use.LIST
        else:
            use = Use.READ
        if "O_CREAT" in flags or "O_TMPFILE" in flags:
            use |= Use.CREATE
        if "O_TRUNC" in flags:
            use |= Use.WRITE
        # The kernel's name for what was opened (symlinks resolved), when strace gives it.
        landed = call.result_path if call.ok else None
        target = landed or path
        if target is not None:
            self.observations.record(target, use, call)
        value = call.value
        if value is not None and value >= 0 and target is not None:
            proc.files.paths[value] = target

    def _path_call(self, proc: _Process, call: Call, dirfd: int | None, index: int,
                   use: Use) -> None:
        path = self._resolve(proc, call.args, dirfd, index)
        if path is not None:
            self.observations.record(path, use, call)

    def _chdir(self, proc: _Process, call: Call) -> None:
        if call.name == "fchdir":
            target = self._fd_path(proc, call.args[0]) if call.args else None
        else:
            target = self._resolve(proc, call.args, None, 0)
            if target is not None:
                self.observations.record(target, Use.STAT, call)
        if call.ok:
            proc.cwd.path = os.path.normpath(target) if target is not None else None

    def _spawn(self, proc: _Process, call: Call) -> None:
        child = call.value
        if child is None or child <= 0:
            return
        flags: frozenset[str] = frozenset()
        if call.name in ("clone", "clone3"):
            match = _CLONE_RE.search(",".join(call.args))
            if match is not None:
                flags = flag_names(match.group(1))
        cwd = proc.cwd if "CLONE_FS" in flags else _Cwd(proc.cwd.path)
        files = proc.files if "CLONE_FILES" in flags else proc.files.copy()
        self._procs[child] = _Process(cwd, files)
        for held in self._held.pop(child, []):
            self._apply(self._procs[child], held)

    def _bind(self, proc: _Process, call: Call) -> None:
        key = _socket_key(call.args[0])
        address = _inet_address(call.args[1]) if len(call.args) > 1 else None
        if key is None or address is None or not call.ok:
            return
        proc.files.bound[key] = address

    def _listen(self, proc: _Process, call: Call) -> None:
        key = _socket_key(call.args[0]) if call.args else None
        if key is None or not call.ok:
            return
        address = proc.files.bound.get(key)
        if address is None or address[1] == 0:
            return  # never bound (an ephemeral port) or bound to port 0
        listening = self.observations.listening
        listening[address] = listening.get(address, 0) + 1

    def _connect(self, call: Call) -> None:
        address = _inet_address(call.args[1]) if len(call.args) > 1 else None
        if address is None:
            return
        try:
            ip = ipaddress.ip_address(address[0])
        except ValueError:
            return
        if ip.is_loopback or ip.is_unspecified:
            return  # the proxy itself, or the program's own servers
        direct = self.observations.direct
        direct[address] = direct.get(address, 0) + 1


def _socket_key(arg: str) -> str | None:
    """What identifies a socket across calls: strace's ``socket:[inode]`` decoration, else
    the descriptor number (which a later socket may reuse)."""
    fd = fd_arg(arg)
    if fd is None or fd.number is None:
        return None
    return fd.label if fd.label is not None else str(fd.number)


def _inet_address(arg: str) -> tuple[str, int] | None:
    """(address, port) of an AF_INET/AF_INET6 sockaddr as strace prints it."""
    if "sa_family=AF_INET" not in arg:
        return None
    port = _PORT_RE.search(arg)
    address = _INET6_RE.search(arg) if "AF_INET6" in arg else _INET_RE.search(arg)
    if port is None or address is None:
        return None
    return address.group(1), int(port.group(1))


def read_observations(lines: Iterable[str], cwd: str) -> Observations:
    """Parse a whole trace at once (for tests and for captured traces)."""
    parser = StraceParser()
    recorder = TraceRecorder(cwd)
    for line in lines:
        call = parser.feed(line)
        if call is not None:
            recorder.feed(call)
    return recorder.finish()
