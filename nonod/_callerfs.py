"""Reading files on a caller's behalf: opened once, as the caller, never blocking.

Every file the daemon reads because a caller named it or because it lies in the caller's
tree (a profile path, the trust policies and their bundles, the instruction files of a
workdir, the workdir itself) goes through this module. The rules:

* **Opened once.** The path is opened and everything else (is it a regular file, who owns
  it, how big is it) is asked of that descriptor with ``fstat``. Nothing is checked by name
  first and opened afterwards, so a symlink flipped between the two cannot win.
* **As the caller.** For the system daemon (root) the worker thread switches its filesystem
  identity to the caller's for the open: ``setfsuid``/``setfsgid`` and the caller's
  supplementary groups. These are per-thread credentials on Linux when made with the raw
  system calls (glibc's ``setgroups`` would change every thread of the process, so it is not
  used). While the fsuid is not 0 the kernel also clears the thread's file capabilities
  (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``...), so the kernel refuses exactly what it
  would refuse the caller: root's rights are never lent. A user daemon already runs as its
  caller and reads with its own identity.
* **Never blocking.** Opens use ``O_NONBLOCK | O_NOCTTY`` (a FIFO opens at once and is then
  refused), anything but a regular file (or a directory where one is expected) is refused
  after ``fstat``, every read is bounded in size, and every call is bounded in time. A call
  that overruns is abandoned: its thread still counts against the caller's own cap of
  threads in use (:data:`THREADS_PER_CALLER`), so one caller's stuck reads stall that caller
  only, and against the cap of all callers' threads together (:data:`THREADS_IN_ALL`), past
  which a request is refused at once, never queued (many accounts' stuck file systems held
  four threads each, without a bound on the sum).
* **Symlinks where asked.** ``symlinks="refuse"`` resolves with ``openat2``
  ``RESOLVE_NO_SYMLINKS`` (no symlink anywhere on the path); ``beneath=DIR`` resolves the
  name inside ``DIR`` with ``RESOLVE_BENEATH`` as well (for files in a workdir a session may
  have written); ``DIR`` may be a directory's descriptor, opened once by the caller, so
  that every read is of that directory whatever its path names meanwhile.

The blocking part (:func:`read_path`, :func:`acting_as`) imports nothing but the standard
library, so the CLI reads its own files by the same rules; trio is imported by the async
part only.

Error messages say what was refused and why (the errno, the file type, the size), never
what a file holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import functools
import os
import platform
import pwd
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    ClassVar,
    Final,
    Generic,
    Literal,
    Protocol,
    TypeVar,
    cast,
    final,
)

from ._writers import descriptor_path
from .errors import DaemonBusy, NonoError

if TYPE_CHECKING:
    import outcome
    import trio

T = TypeVar("T")
R = TypeVar("R")

#: Worker threads one uid may hold at once in this module (stuck ones included).
THREADS_PER_CALLER: Final = 4
#: Worker threads all uids together may hold at once in this module (stuck ones included):
#: past it a request that needs a new thread is refused at once (:class:`ThreadsExhausted`).
THREADS_IN_ALL = 256
#: Default bound, in seconds, of one read on a caller's behalf.
DEFAULT_TIMEOUT: Final = 10.0

_RESOLVE_NO_MAGICLINKS: Final = 0x02
_RESOLVE_NO_SYMLINKS: Final = 0x04
_RESOLVE_BENEATH: Final = 0x08
_SYS_OPENAT2: Final = 437  # the same number on every architecture (new syscall table)
#: (setfsuid, setfsgid, setgroups) per machine: the raw calls, which act on this thread only.
_SYSCALLS: Final = {
    "x86_64": (122, 123, 116),
    "aarch64": (151, 152, 159),
}
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class CallerFileError(NonoError):
    """A file could not be read on a caller's behalf. ``path`` is the name the caller gave."""

    code: ClassVar[str] = "file.unreadable"

    def __init__(self, path: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = path
        self.reason = reason


class FileMissing(CallerFileError):
    code = "file.not_found"


class FileRefused(CallerFileError):
    """Not the kind of file expected (a FIFO, a device, a symlink where none is allowed)."""

    code = "file.refused"


class FileDenied(CallerFileError):
    """The caller itself may not read it (the kernel said so with the caller's identity)."""

    code = "file.denied"


class FileTooLarge(CallerFileError):
    code = "file.too_large"


class FileTimeout(CallerFileError):
    """The read did not finish in time (a hung filesystem), or the caller's threads are busy."""

    code = "file.timeout"


class ThreadsExhausted(FileTimeout, DaemonBusy):
    """Every thread the daemon gives callers' reads and plans is taken (:data:`THREADS_IN_ALL`):
    refused at once rather than queued behind threads that may never return."""

    code = "daemon.busy"


class _HasUid(Protocol):
    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...


@dataclass(frozen=True)
class Identity:
    """Whose filesystem rights a read uses: the caller's uid, gid and supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def of(cls, caller: _HasUid) -> Identity:
        """The caller's identity; its groups from the group database (its login's groups)."""
        try:
            name = pwd.getpwuid(caller.uid).pw_name
            groups = tuple(sorted(set(os.getgrouplist(name, caller.gid))))
        except KeyError:
            groups = (caller.gid,)
        return cls(uid=caller.uid, gid=caller.gid, groups=groups)

    @classmethod
    def session(cls, uid: int, gid: int) -> Identity:
        """A session's own rights: its launcher drops every supplementary group."""
        return cls(uid=uid, gid=gid, groups=())


# -------------------------------------------------------------- per-thread credentials


@functools.cache
def _libc() -> ctypes.CDLL:
    """Loaded once: a ``CDLL`` costs a ``dlopen`` and its setup, at every read as the caller
    otherwise (a few per launch). Calls through it are thread-safe; errno is per thread."""
    return ctypes.CDLL(None, use_errno=True)


def _numbers() -> tuple[int, int, int]:
    machine = platform.machine()
    numbers = _SYSCALLS.get(machine)
    if numbers is None:
        raise NonoError(f"reading as the caller is not implemented on {machine}",
                        hint="run a user daemon per user instead of the system daemon")
    return numbers


def _set_groups(libc: ctypes.CDLL, number: int, groups: tuple[int, ...]) -> None:
    array = (ctypes.c_uint * max(len(groups), 1))(*groups)
    if libc.syscall(number, ctypes.c_size_t(len(groups)), array) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setgroups: {os.strerror(code)}")


def _fs_ids(libc: ctypes.CDLL, fsuid_nr: int, fsgid_nr: int) -> tuple[int, int]:
    """The thread's current fsuid and fsgid (an invalid id changes nothing, returns the old)."""
    return (libc.syscall(fsuid_nr, ctypes.c_uint(0xFFFFFFFF)),
            libc.syscall(fsgid_nr, ctypes.c_uint(0xFFFFFFFF)))


def acting_uid() -> int:
    """The uid this thread opens files as: the caller's inside :func:`acting_as`, otherwise
    the process's own."""
    try:
        fsuid_nr, fsgid_nr, _ = _numbers()
    except NonoError:  # no per-thread identity here (acting_as refuses another one)
        return os.geteuid()
    return int(_fs_ids(_libc(), fsuid_nr, fsgid_nr)[0])


@contextlib.contextmanager
def acting_as(identity: Identity | None) -> Iterator[None]:
    """Within the block, this thread opens files with ``identity``'s rights (None: unchanged).

    Only this thread changes. Nothing in the block may start a thread: a new thread starts
    with its creator's credentials. If the daemon's own identity cannot be restored afterwards
    the process exits: a worker thread left with another user's rights must never run again.
    """
    if identity is None or identity.uid == os.geteuid():
        yield
        return
    fsuid_nr, fsgid_nr, groups_nr = _numbers()
    libc = _libc()
    own_groups = tuple(os.getgroups())
    own = (os.geteuid(), os.getegid())
    try:
        _set_groups(libc, groups_nr, identity.groups)
        libc.syscall(fsgid_nr, ctypes.c_uint(identity.gid))
        libc.syscall(fsuid_nr, ctypes.c_uint(identity.uid))
        if _fs_ids(libc, fsuid_nr, fsgid_nr) != (identity.uid, identity.gid):
            raise NonoError("could not take the caller's file identity")
        yield
    finally:
        libc.syscall(fsuid_nr, ctypes.c_uint(own[0]))
        libc.syscall(fsgid_nr, ctypes.c_uint(own[1]))
        try:
            _set_groups(libc, groups_nr, own_groups)
            restored = _fs_ids(libc, fsuid_nr, fsgid_nr) == own
        except OSError:
            restored = False
        if not restored:
            os.write(2, b"nonod: cannot restore a worker thread's identity; exiting\n")
            os._exit(70)


def made_as(uid: int | None, make: Callable[[], T]) -> T:
    """``make()`` run with this thread's file system uid set to ``uid`` (None, or the daemon's
    own uid: run as it is). Whatever the kernel gives an owner when it is made takes this
    one: a socket made so is ``uid``'s to ``sock_diag`` (``ss -e``, :mod:`._loopback_peers`)
    and to a firewall's ``-m owner`` match, so that a connection the system daemon opens for
    a user's session is that user's, not root's. Only this thread changes, and only for the
    call; ``make`` must not block or start a thread, and must run no Python code (a C call:
    ``_socket.socket``, not ``socket.socket``): an allocation there may run the cycle
    collector, and the finalizers it calls, under ``uid`` (review28). Afterwards the
    thread's file system uid is the one it had before, not the daemon's own: inside
    :func:`acting_as` (a worker thread reading as a caller) the rest of the block stays the
    caller's (review28). Raises OSError
    when the uid cannot be taken (nothing is made); exits the process when the uid it had
    cannot be restored, as :func:`acting_as` does."""
    if uid is None or uid == os.geteuid():
        return make()
    try:
        fsuid_nr = _numbers()[0]
    except NonoError:
        raise OSError(errno.ENOSYS, f"cannot act as uid {uid} on this machine") from None
    libc = _libc()
    before = libc.syscall(fsuid_nr, ctypes.c_uint(uid))  # (returns the one it had)
    try:
        if libc.syscall(fsuid_nr, ctypes.c_uint(0xFFFFFFFF)) != uid:
            raise OSError(errno.EPERM, f"could not act as uid {uid}")
        return make()
    finally:
        libc.syscall(fsuid_nr, ctypes.c_uint(before))
        if libc.syscall(fsuid_nr, ctypes.c_uint(0xFFFFFFFF)) != before:
            os.write(2, b"nonod: cannot restore a thread's file system uid; exiting\n")
            os._exit(70)


# ---------------------------------------------------------------------- opening once


class _OpenHow(ctypes.Structure):
    _fields_: ClassVar = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                          ("resolve", ctypes.c_uint64)]


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags=flags, mode=0, resolve=resolve)
    libc = _libc()
    fd = libc.syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), os.fsencode(path),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _open(path: str, flags: int, *, symlinks: Literal["follow", "refuse"],
          beneath: str | int | None) -> int:
    if beneath is None and symlinks == "follow":
        return os.open(path, flags)
    resolve = _RESOLVE_NO_MAGICLINKS
    if symlinks == "refuse":
        resolve |= _RESOLVE_NO_SYMLINKS
    if beneath is None:
        return _openat2(-100, path, flags, resolve)  # AT_FDCWD; paths here are absolute
    if isinstance(beneath, int):  # a directory already open: whatever its path names now
        return _openat2(beneath, path, flags, resolve | _RESOLVE_BENEATH)
    try:
        root = _openat2(-100, beneath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, resolve)
    except FileNotFoundError:
        raise OSError(errno.ENOTDIR, "its directory does not exist", beneath) from None
    try:
        return _openat2(root, path, flags, resolve | _RESOLVE_BENEATH)
    finally:
        os.close(root)


def _refusal(path: str, exc: OSError) -> CallerFileError:
    code = exc.errno or 0
    if code == errno.ENOENT:
        return FileMissing(path, "no such file")
    if code in (errno.EACCES, errno.EPERM):
        return FileDenied(path, "permission denied")
    if code in (errno.ELOOP, errno.EXDEV):
        return FileRefused(path, "a symbolic link (or a path leaving its directory) is "
                                 "not followed here")
    if code == errno.ENOTDIR:
        return FileRefused(path, "not a directory")
    return CallerFileError(path, f"cannot open: {os.strerror(code)}")


_KINDS: Final = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
                 stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
                 stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link"}


@dataclass(frozen=True)
class Opened:
    """What was read and what ``fstat`` said about the descriptor it was read from."""

    data: bytes
    names: tuple[str, ...]
    uid: int
    mode: int
    gid: int = -1
    real: str = ""
    """The path the descriptor was opened at, as the kernel names it ("" if it cannot)."""
    identity: tuple[int, int] = (0, 0)
    """Its ``(st_dev, st_ino)``."""


def read_path(path: str, *, kind: Literal["file", "dir"] = "file", max_bytes: int,
              symlinks: Literal["follow", "refuse"] = "follow",
              beneath: str | int | None = None) -> Opened:
    """Blocking: open ``path`` once (with this thread's identity), check it, read it.

    A file: its bytes (at most ``max_bytes``). A directory: its entry names (at most
    ``max_bytes`` of them; 0: opened and checked, not listed). Raises
    :class:`CallerFileError` subclasses.

    A file is first opened as a path only (``O_PATH``: no driver's ``open`` runs, no read
    permission is asked) and opened to read only once it is known to be a regular file: a
    name a policy lists can be a device whose open acts (``/dev/watchdog`` arms the host's
    reboot timer), which the daemon must never do on a caller's behalf.
    """
    flags = _OPEN_FLAGS | os.O_DIRECTORY if kind == "dir" else os.O_PATH | os.O_CLOEXEC
    try:
        fd = _open(path, flags, symlinks=symlinks, beneath=beneath)
    except OSError as exc:
        raise _refusal(path, exc) from None
    try:
        info = os.fstat(fd)
        fmt = stat.S_IFMT(info.st_mode)
        wanted = stat.S_IFDIR if kind == "dir" else stat.S_IFREG
        if fmt != wanted:
            what = _KINDS.get(fmt, "not a regular file")
            expected = "a directory" if kind == "dir" else "a regular file"
            raise FileRefused(path, f"is {what}, not {expected}")
        if kind == "file":
            handle, fd = fd, -1
            try:
                fd = _reopen(path, handle)
            finally:
                os.close(handle)
        if kind == "dir":
            return Opened(data=b"", names=_names(path, fd, max_bytes), uid=info.st_uid,
                          mode=info.st_mode, gid=info.st_gid)
        if info.st_size > max_bytes:
            raise FileTooLarge(path, f"is larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise FileTooLarge(path, f"is larger than {max_bytes} bytes")
        return Opened(data=data, names=(), uid=info.st_uid, mode=info.st_mode, gid=info.st_gid,
                      real=descriptor_path(fd), identity=(info.st_dev, info.st_ino))
    except OSError as exc:
        raise CallerFileError(path, f"cannot read: {os.strerror(exc.errno or 0)}") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _reopen(path: str, handle: int) -> int:
    """The regular file open as a path on ``handle``, opened to read with this thread's
    identity (the kernel asks for read permission now)."""
    try:
        return os.open(f"/proc/self/fd/{handle}", _OPEN_FLAGS)
    except OSError as exc:
        raise _refusal(path, exc) from None


def _names(path: str, fd: int, limit: int) -> tuple[str, ...]:
    """At most ``limit`` entry names of the directory open on ``fd`` (0: none, not listed)."""
    if limit == 0:
        return ()
    names: list[str] = []
    with os.scandir(os.dup(fd)) as listing:  # scandir closes the descriptor it is given
        for entry in listing:
            if len(names) == limit:
                raise FileTooLarge(path, f"has more than {limit} entries")
            names.append(entry.name)
    return tuple(sorted(names))


def read_optional(path: str, *, max_bytes: int,
                  symlinks: Literal["follow", "refuse"] = "follow",
                  beneath: str | int | None = None) -> bytes | None:
    """Blocking: a regular file's bytes as :func:`read_path` reads them, None if it is absent."""
    try:
        return read_path(path, max_bytes=max_bytes, symlinks=symlinks, beneath=beneath).data
    except FileMissing:
        return None


# ------------------------------------------------------------------- bounded threads


class _Threads:
    """One uid's worker threads: its own :data:`THREADS_PER_CALLER` (waited for, first come
    first served), within :data:`THREADS_IN_ALL` for every uid together (never waited for:
    refused at once when all are taken, so one user's stuck threads never keep another
    user waiting below that bound). A thread keeps its place in both until it returns, an
    abandoned one too. A CapacityLimiter-like object for ``trio.to_thread.run_sync``; used
    from the trio thread only."""

    def __init__(self, own: trio.CapacityLimiter, every: _Taken) -> None:
        self._own = own
        self._every = every

    @property
    def total_tokens(self) -> int:
        return int(self._own.total_tokens)

    @property
    def borrowed_tokens(self) -> int:
        return int(self._own.borrowed_tokens)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._own.acquire_on_behalf_of(borrower)
        if self._every.threads >= THREADS_IN_ALL:
            self._own.release_on_behalf_of(borrower)
            raise ThreadsExhausted(
                "no worker thread free", f"all {THREADS_IN_ALL} of the daemon's threads for "
                "callers' file systems are taken (file systems that do not answer: some may "
                "be stuck there); refused at once",
                hint="retry later; the host's administrator can look for a hung mount")
        self._every.threads += 1

    def release_on_behalf_of(self, borrower: object) -> None:
        self._own.release_on_behalf_of(borrower)
        self._every.threads -= 1


@dataclass
class _Taken:
    """Threads taken by every uid together, in one trio run."""

    threads: int = 0


_limiters: trio.lowlevel.RunVar[tuple[dict[int, _Threads], _Taken]] | None = None
_limiters_lock = threading.Lock()


def _limiter(uid: int) -> trio.CapacityLimiter:
    """``uid``'s own threads in this trio run (one daemon loop; tests run several), as the
    ``limiter`` of ``trio.to_thread.run_sync`` (:class:`_Threads`, a CapacityLimiter-like
    object, which trio takes)."""
    global _limiters
    import trio

    with _limiters_lock:
        if _limiters is None:
            _limiters = trio.lowlevel.RunVar("nonod._callerfs.limiters")
    try:
        per_uid, taken = _limiters.get()
    except LookupError:
        per_uid, taken = {}, _Taken()
        _limiters.set((per_uid, taken))
    threads = per_uid.get(uid)
    if threads is None:
        threads = per_uid[uid] = _Threads(trio.CapacityLimiter(THREADS_PER_CALLER), taken)
    return cast("trio.CapacityLimiter", threads)


def threads_of(uid: int) -> trio.CapacityLimiter:
    """``uid``'s worker threads (:data:`THREADS_PER_CALLER`, within :data:`THREADS_IN_ALL`),
    for other work done for that user that may stall in its file systems (the launch's plan,
    ``nonod.sandbox``); taking one raises :class:`ThreadsExhausted` past the second bound."""
    return _limiter(uid)


async def run_as(caller: _HasUid | None, fn: Callable[[], T], *,
                 timeout: float = DEFAULT_TIMEOUT, what: str = "") -> T:
    """Run ``fn`` in a worker thread acting as ``caller`` (None: as the daemon itself),
    within ``timeout`` seconds.

    The thread comes from the caller's own limiter. On timeout the thread is abandoned (still
    counted against the caller until it returns) and :class:`FileTimeout` is raised.
    """
    def body() -> T:
        with acting_as(Identity.of(caller) if caller is not None else None):
            return fn()

    return await in_thread_of(caller, body, timeout=timeout, what=what)


async def in_thread_of(caller: _HasUid | None, fn: Callable[[], T], *,
                       timeout: float = DEFAULT_TIMEOUT, what: str = "") -> T:
    """:func:`run_as`'s thread, limiter and timeout, leaving identities to ``fn`` (which
    must take the caller's with :func:`acting_as` wherever it opens the caller's files)."""
    import trio

    uid = caller.uid if caller is not None else os.geteuid()
    with trio.move_on_after(timeout):
        return await trio.to_thread.run_sync(fn, limiter=_limiter(uid), abandon_on_cancel=True)
    raise FileTimeout(what or "a file", f"not read within {timeout:g} s (a hung filesystem, "
                                        "or too many of your reads at once)")


#: Seconds a worker of :func:`in_thread_then` waits for the loop to take its answer before
#: it goes on anyway (the loop takes it at once unless the run is ending).
_ANSWER_TAKEN_WAIT: Final = 1.0


@final
class GoesOn(Generic[R]):
    """What a worker thread of :func:`in_thread_then` goes on doing once it has answered:
    its ``rest``, whose outcome :meth:`wait` gives (once). Made and used in the trio thread
    but for ``_finish``, the worker's.

    The thread keeps its place among the caller's threads until ``rest`` returns, an
    abandoned one too, and hands it back through the loop as it returns."""

    def __init__(self, token: trio.lowlevel.TrioToken, limiter: trio.CapacityLimiter,
                 what: str) -> None:
        import trio

        self._token = token
        self._limiter = limiter
        self._what = what
        self._lock = threading.Lock()
        self._outcome: outcome.Outcome[R] | None = None  # set once, by the worker
        self._closed = False  # given up: a ``rest`` not begun is not run
        self._released = False  # the place handed back (trio thread only)
        self._used = False
        self._arrived_event = trio.Event()

    # -- the worker's side
    def _abandoned(self) -> bool:
        with self._lock:
            return self._closed

    def _finish(self, result: outcome.Outcome[R]) -> None:
        import trio

        with self._lock:
            self._outcome = result
        # The place goes back now, through the loop, whether or not anyone waits yet: held
        # until the gate's wait, each launch in flight kept one of its caller's places
        # through its whole preparation, and a caller with as many launches in flight as
        # places (4) had none left for their plans' threads: each waited out its plan's
        # 30 s (a 1000-session fleet took 125 s, 14 failed).
        with contextlib.suppress(trio.RunFinishedError):  # the daemon is gone: no place
            self._token.run_sync_soon(self._arrived)

    # -- the trio thread's side
    def _arrived(self) -> None:
        self._release()
        self._arrived_event.set()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter.release_on_behalf_of(self)

    def done(self) -> bool:
        """True once ``rest`` has returned (or raised)."""
        with self._lock:
            return self._outcome is not None

    async def wait(self, timeout: float = DEFAULT_TIMEOUT) -> R:
        """``rest``'s return value (what it raised, raised), waited for at most ``timeout``
        seconds (:class:`FileTimeout`: the thread is abandoned, still counted against the
        caller until it returns). Once only."""
        import trio

        if self._used:
            raise RuntimeError("GoesOn.wait is called once")
        self._used = True
        with self._lock:
            result = self._outcome
        if result is None:
            with trio.move_on_after(timeout):
                await self._arrived_event.wait()
            with self._lock:
                result = self._outcome
                self._closed = True
            if result is None:
                raise FileTimeout(self._what, f"not checked within {timeout:g} s (a hung "
                                              "filesystem, or too many of your reads at once)")
        else:  # a cancel point, no trip through the scheduler (the gate's caller has had one)
            await trio.lowlevel.checkpoint_if_cancelled()
        self._release()
        return result.unwrap()

    def close(self) -> None:
        """Nobody will wait: a ``rest`` not begun yet is not run, and the thread's place
        goes back once it returns (at once if it has). Idempotent."""
        with self._lock:
            self._closed = True
            done = self._outcome is not None
        if done:
            self._release()


class _Abandoned(Exception):
    """A ``rest`` not run: nobody waits for it any more (never raised to a caller)."""


async def in_thread_then(
    caller: _HasUid | None, fn: Callable[[], tuple[T, Callable[[], R] | None]], *,
    timeout: float = DEFAULT_TIMEOUT, what: str = "",
) -> tuple[T, GoesOn[R] | None]:
    """:func:`in_thread_of`, for work whose answer comes before its end: ``fn`` returns its
    answer and what the same thread does next (None: nothing). The answer comes back as soon
    as ``fn`` returns, with a :class:`GoesOn` for the rest, which runs meanwhile in that
    thread (no second thread woken, no second trip through the loop when it is done first:
    its outcome is taken when :meth:`GoesOn.wait` is called). Identities are ``fn``'s and
    ``rest``'s to take (:func:`acting_as`), as with :func:`in_thread_of`.

    Whoever gets a :class:`GoesOn` waits for it or closes it; the thread keeps its place
    among the caller's threads until ``rest`` returns, so a ``rest`` stuck in the caller's
    file system counts against the caller's bound as any other read does."""
    import outcome
    import trio

    uid = caller.uid if caller is not None else os.geteuid()
    limiter = _limiter(uid)
    token = trio.lowlevel.current_trio_token()
    later: GoesOn[R] = GoesOn(token, limiter, what or "a file")
    answered = trio.Event()
    answer: list[outcome.Outcome[tuple[T, Callable[[], R] | None]]] = []
    context = contextvars.copy_context()

    taken = threading.Event()

    def report(result: outcome.Outcome[tuple[T, Callable[[], R] | None]]) -> None:
        answer.append(result)
        if not (isinstance(result, outcome.Value) and result.value[1] is not None):
            later._release()  # nothing goes on in the thread
        answered.set()
        taken.set()

    def body() -> None:
        first = outcome.capture(context.run, fn)
        rest = first.value[1] if isinstance(first, outcome.Value) else None
        try:
            token.run_sync_soon(report, first)
        except trio.RunFinishedError:
            return
        if rest is None:
            return
        # The rest waits until the loop has the answer: run at once, it held the GIL
        # (its system calls are short: the loop, woken, seldom took it between two) and the
        # answer reached the loop only once the rest was done.
        taken.wait(_ANSWER_TAKEN_WAIT)
        if later._abandoned():
            later._finish(outcome.Error(_Abandoned()))
            return
        later._finish(outcome.capture(context.run, rest))

    await limiter.acquire_on_behalf_of(later)
    try:
        trio.lowlevel.start_thread_soon(body, lambda _: None,
                                        name=f"{getattr(fn, '__name__', 'work')} (goes on)")
    except BaseException:
        limiter.release_on_behalf_of(later)
        raise
    try:
        with trio.move_on_after(timeout):
            await answered.wait()
    except BaseException:
        # Cancelled (the answer may have come meanwhile, never to be taken): abandoned, its
        # place kept until the thread ends.
        later.close()
        raise
    if not answer:
        later.close()  # timed out: the same
        raise FileTimeout(what or "a file", f"not read within {timeout:g} s (a hung "
                                            "filesystem, or too many of your reads at once)")
    result = answer[0]
    if isinstance(result, outcome.Error):
        later.close()
    value, rest = result.unwrap()
    return value, (later if rest is not None else None)


async def open_for(caller: _HasUid | None, path: str, *, kind: Literal["file", "dir"] = "file",
                   max_bytes: int, timeout: float = DEFAULT_TIMEOUT,
                   symlinks: Literal["follow", "refuse"] = "follow",
                   beneath: str | None = None) -> Opened:
    """Read ``path`` as ``caller`` (None: as the daemon itself, i.e. a user daemon's caller).

    The one door for a file named by a caller: see the module docstring for the rules.
    """
    def read() -> Opened:
        return read_path(path, kind=kind, max_bytes=max_bytes, symlinks=symlinks,
                         beneath=beneath)

    return await run_as(caller, read, timeout=timeout, what=path)
