"""The init's half of the creation guard (see ``_createguard``): answer the program's
creation syscalls, one seccomp user notification at a time, in the init's select loop.

For each notified call the init reads the path argument(s) from ``/proc/<tid>/mem``, opens
the parent directory the way the kernel would resolve it (from ``/proc/<tid>/cwd`` or
``/proc/<tid>/fd/<dirfd>``) and decides:

* the parent is a guarded directory, or lies below one with no layer-2 rule of its own in
  between (a directory created later), so the kernel's layer 2 refuses the creation there;
  the name is not refused; the call creates something that does not exist yet (or renames):
  **emulate** it here, with the final name as one component, on the descriptor just checked,
  and answer with its result (an open's new descriptor goes in with ``SECCOMP_IOCTL_NOTIF_ADDFD``);
* anything else, including every refused name: **continue** into the kernel, where both
  Landlock layers apply. A refused name then fails with ``EACCES`` from layer 2.

The init never needs to refuse a creation: what it lets through still meets layer 2, and
what it does itself is one allowed name in a directory it opened and checked, under the first
layer (the session's rules) only. A program that changes its path buffer after the read
gains nothing: the emulation uses the init's copy, and a continued call is checked by the
kernel.

The init resolves paths with its own access to ``/proc`` (``/proc/1/cwd`` is its own
directory): that changes which path leads to a directory, never what may be created there,
since every directory the init can reach is in the session's view and emulation creates
only allowed names, under the session's rules.

Emulations that do not fit are continued (the kernel then refuses in a guarded directory):
a final component that already exists (an open of it creates nothing; a symlink is followed
by the kernel), device nodes, ``linkat(AT_EMPTY_PATH)``, and any call whose memory the init
cannot read (a non-dumpable program). Standard library and ctypes only.

**Nested domains** (:class:`Domains`). Emulating is doing what the *program's* domain may do;
a process that confined itself further (an agent's sandbox for its tool commands) may not.
The kernel shows no other process a thread's Landlock domain, so the init keeps track: the
filter notifies every ``landlock_restrict_self`` *before* it runs, and the init marks the
caller's whole thread group (by pid and start time) before letting it continue. Once any
process is marked, a creation is emulated only for a thread whose ancestry, parent by parent
(each link read twice, around the parent's own record, so that a reused pid is never taken
for the parent), reaches the program's first process without passing a marked process or
reaching a process that made itself a child subreaper; anything else (an orphan reparented
to the init, a chain that changed while read, a ``/proc`` entry that cannot be read) is
continued, and layer 2 refuses. What would let a confined process's descendant show an
unconfined parent is watched too: ``clone`` with ``CLONE_PARENT`` fails with ``EPERM`` for a
caller not known to be in the program's domain, ``clone3`` (flags behind a pointer) is
``ENOSYS`` for all, and a new child subreaper is recorded. (A seccomp filter of the
program's own that notifies ``landlock_restrict_self`` to a listener of its own would come
first and hide it, but the kernel refuses a second listener among a task's filters: EBUSY.)
Until a first mark, nothing is read per creation.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import unicodedata
from collections.abc import Callable, Iterable
from typing import Final

from ._createguard import (
    CLONE_PARENT,
    PR_SET_CHILD_SUBREAPER,
    Guard,
    Identity,
    syscall_table,
    watched_table,
)
from ._syscalls import Arch

SECCOMP_IOCTL_NOTIF_RECV: Final = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND: Final = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_ID_VALID: Final = 0x40082102  # _IOW('!', 2, __u64)
SECCOMP_IOCTL_NOTIF_ADDFD: Final = 0x40182103  # _IOW('!', 3, struct seccomp_notif_addfd)
SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1

_NOTIF: Final = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, nr, arch, ip, args[6]
_RESP: Final = struct.Struct("=QqiI")  # id, val, error, flags
_ADDFD: Final = struct.Struct("=QIIII")  # id, flags, srcfd, newfd, newfd_flags
_OPEN_HOW: Final = struct.Struct("=QQQ")  # flags, mode, resolve

AT_FDCWD: Final = -100
AT_SYMLINK_FOLLOW: Final = 0x400
AT_EMPTY_PATH: Final = 0x1000
RESOLVE_CACHED: Final = 0x20
PATH_MAX: Final = 4096
_PAGE: Final = 4096
_MAX_DEPTH: Final = PATH_MAX // 2  # ".." steps when looking for a guarded ancestor
_DIR: Final = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_CREAT_FLAGS: Final = os.O_CREAT | os.O_WRONLY | os.O_TRUNC  # what creat(2) means

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long
_NR_OPENAT2: Final = 437  # the generic table: the same on x86_64 and aarch64


class Continue(Exception):
    """Leave this call to the kernel."""


def _u32_int(value: int) -> int:
    """An ``int`` argument: its low 32 bits, signed."""
    return ctypes.c_int32(value & 0xFFFFFFFF).value


def _ioctl(fd: int, request: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    ret = _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), buf)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    how = ctypes.create_string_buffer(_OPEN_HOW.pack(flags, mode, resolve), _OPEN_HOW.size)
    ret = _libc.syscall(ctypes.c_long(_NR_OPENAT2), ctypes.c_long(dirfd), ctypes.c_char_p(path),
                        how, ctypes.c_size_t(_OPEN_HOW.size))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _renameat2(olddir: int, old: bytes, newdir: int, new: bytes, flags: int) -> None:
    if _libc.renameat2(ctypes.c_int(olddir), ctypes.c_char_p(old), ctypes.c_int(newdir),
                       ctypes.c_char_p(new), ctypes.c_uint(flags)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fold(name: str) -> str:
    """How names compare against the refused ones: canonically decomposed and case-folded,
    so that a case-insensitive (casefold) directory cannot be fooled by ``.ENVRC``."""
    return unicodedata.normalize("NFD", name).casefold()


class _Call:
    """One notified call: the target thread's memory and descriptors, closed at the end."""

    def __init__(self, listener: int, notif_id: int, tid: int) -> None:
        self.listener, self.id, self.tid = listener, notif_id, tid
        self.fds: list[int] = []
        self.mem = self.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        self.check()

    def open(self, path: str | bytes, flags: int, dir_fd: int | None = None) -> int:
        fd = os.open(path, flags, dir_fd=dir_fd)
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)

    def check(self) -> None:
        """The call is still waiting: the pid was not reused, what was opened is its."""
        buf = ctypes.create_string_buffer(struct.pack("=Q", self.id), 8)
        try:
            _ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ID_VALID, buf)
        except OSError:
            raise Continue from None

    def string(self, addr: int, limit: int = PATH_MAX) -> bytes:
        """The NUL-terminated string at ``addr`` (at most ``limit`` bytes with the NUL)."""
        out = b""
        while len(out) < limit:
            want = min(_PAGE - addr % _PAGE, limit - len(out))
            data = os.pread(self.mem, want, addr)
            end = data.find(b"\0")
            if end >= 0:
                return out + data[:end]
            if not data:
                break
            out += data
            addr += len(data)
        raise Continue  # too long or unreadable: the kernel answers (ENAMETOOLONG, EFAULT)

    def block(self, addr: int, size: int) -> bytes:
        data = os.pread(self.mem, size, addr)
        if len(data) != size:
            raise Continue
        return data

    def umask(self) -> int:
        with open(f"/proc/{self.tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
        raise Continue

    def parent(self, dirfd: int, path: bytes, *, dir_ok: bool, resolve: int = 0
               ) -> tuple[int, bytes]:
        """(descriptor of the directory ``path`` names its last component in, that component),
        resolved as the target would from ``dirfd``."""
        if not path or (path.endswith(b"/") and not dir_ok):
            raise Continue
        path = self._own_proc(path.rstrip(b"/") or b"/")
        head, slash, name = path.rpartition(b"/")
        if name in (b"", b".", b".."):
            raise Continue
        if slash and not head:
            head = b"/"
        if head.startswith(b"/") and not resolve:
            base = AT_FDCWD  # (openat2's RESOLVE_IN_ROOT takes "/" as the dirfd)
        elif dirfd == AT_FDCWD:
            base = self.open(f"/proc/{self.tid}/cwd", _DIR)
        else:
            base = self.open(f"/proc/{self.tid}/fd/{dirfd}", _DIR)
        if resolve:
            fd = _openat2(base, head or b".", _DIR, 0, resolve & ~RESOLVE_CACHED)
            self.fds.append(fd)
        else:
            fd = self.open(head or b".", _DIR, dir_fd=None if base == AT_FDCWD else base)
        return fd, name

    def _own_proc(self, path: bytes) -> bytes:
        """``/proc/self`` and friends name the target, not the init that resolves them."""
        for prefix in (b"/proc/self/", b"/proc/thread-self/", b"/dev/fd/"):
            if path.startswith(prefix):
                tail = path[len(prefix):]
                own = b"/proc/%d/" % self.tid
                return own + (b"fd/" + tail if prefix == b"/dev/fd/" else tail)
        return path


def _exists(dirfd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


Proc = tuple[int, int]  # (pid of a thread group, its start time in clock ticks)

#: How many marks of each kind are kept before the dead ones are swept (and, if all are
#: alive, the init stops emulating for anyone: fail closed).
MAX_MARKS: Final = 8192  # above the default cap on a session's processes (4096)
#: How many parents a chain may have before it counts as unknown.
MAX_CHAIN: Final = 1024


def _stat(pid: int) -> tuple[int, int]:
    """(parent pid, start time) of process ``pid``, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()  # the name may hold spaces and parens
    return int(fields[1]), int(fields[19])


def _tgid(tid: int) -> int:
    with open(f"/proc/{tid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"Tgid:"):
                return int(line.split()[1])
    raise ValueError(f"no Tgid for thread {tid}")


class Domains:
    """Which processes are known to be in the program's own Landlock domain (the module's
    "Nested domains"): the program's first process, the thread groups that confined
    themselves further, the child subreapers."""

    def __init__(self, program: int, confined: Iterable[Proc] = (),
                 subreapers: Iterable[Proc] = (), lost: bool = False) -> None:
        self.init = os.getpid()
        self.confined: set[Proc] = set(confined)
        self.subreapers: set[Proc] = set(subreapers)
        self.lost = lost  # a mark could not be taken: emulate for no one
        try:
            self.program: Proc | None = (program, _stat(program)[1])
        except (OSError, ValueError, IndexError):
            self.program, self.lost = None, True

    def mark(self, tid: int, marks: set[Proc], still_waiting: Callable[[], bool]) -> None:
        """Record the thread group of ``tid`` in ``marks`` (its call waits: it has not run).
        If it cannot be read while the call still waits, stop emulating for anyone. No check
        that the call still waits is needed after a read that worked: a waiting thread is
        alive, so its tid named it; if it died (killed), its call never runs, and the mark,
        of whatever took the tid, only refuses more."""
        try:
            pid = _tgid(tid)
            proc = (pid, _stat(pid)[1])
        except (OSError, ValueError, IndexError):
            if still_waiting():
                self.lost = True
            return
        if proc not in marks and not self._room(marks):
            self.lost = True
            return
        marks.add(proc)

    def _room(self, marks: set[Proc]) -> bool:
        """Whether one more fits, after sweeping the dead if full. (A sweep comes just before
        a mark is added: once marked, ``confined`` is never empty again.) Only a process
        that is not there, or whose pid another process took, is swept: one that cannot be
        read (no descriptor left, no memory) stays marked, or its children would be walked
        to the program (review24)."""
        if len(marks) < MAX_MARKS:
            return True
        for proc in list(marks):  # a process gone is nobody's parent, nor a caller
            try:
                alive = _stat(proc[0])[1] == proc[1]
            except (FileNotFoundError, ProcessLookupError):  # ENOENT, ESRCH: gone
                alive = False
            except (OSError, ValueError, IndexError):
                alive = True
            if not alive:
                marks.discard(proc)
        return len(marks) < MAX_MARKS

    def known(self, tid: int) -> bool:
        """Whether thread ``tid`` (its call waiting) is known to be in the program's domain:
        always, until a first process confined itself; after that, only if its ancestry
        reaches the program as described in the module's "Nested domains"."""
        if self.lost:
            return False
        if not self.confined:
            return True
        try:
            pid = _tgid(tid)
            ppid, start = _stat(pid)
            for _ in range(MAX_CHAIN):
                if (pid, start) in self.confined:
                    return False
                if (pid, start) == self.program:
                    return True
                if ppid <= 0 or pid == self.init:
                    return False  # reparented to the init, or never the program's
                up, up_start = _stat(ppid)
                if _stat(pid) != (ppid, start):
                    return False  # reparented while read: ppid may name another process
                if (ppid, up_start) in self.subreapers:
                    return False  # it may have adopted an orphan of a confined process
                pid, ppid, start = ppid, up, up_start
        except (OSError, ValueError, IndexError):
            pass
        return False


class Supervisor:
    """Serves the listener handed over by the program (``_createguard.confine_program``)."""

    def __init__(self, listener: int, guard: Guard, arch: Arch, domains: Domains) -> None:
        self.listener = listener
        self.names = {nr: name for name, nr in syscall_table(arch).items()}
        self.watched = {nr: name for name, nr in watched_table(arch).items()}
        self.domains = domains
        self.guarded = guard.guarded
        self.refused = {ident: frozenset(fold(n) for n in names)
                        for ident, names in guard.guarded.items()}
        self.refused_at = {os.fsencode(path): frozenset(fold(n) for n in names)
                           for path, names in guard.paths.items()}
        self.ruled = guard.ruled
        self.keep = guard.keep  # open for the whole session: the identities stay unique

    def fileno(self) -> int:
        return self.listener

    def serve_one(self) -> None:
        """Receive one notification and answer it. Never raises for the call's sake: a call
        that cannot be handled is continued into the kernel."""
        buf = ctypes.create_string_buffer(_NOTIF.size)
        try:
            _ioctl(self.listener, SECCOMP_IOCTL_NOTIF_RECV, buf)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINTR):
                return  # the target went away before we received it
            raise
        notif_id, tid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf.raw)
        if nr in self.watched:
            try:
                error, flags = self._watch(notif_id, tid, self.watched[nr], args)
            except Exception:  # noqa: BLE001 - a surprise in a mark: emulate for no one,
                self.domains.lost = True  # after which letting any of these calls go is safe
                error, flags = 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE
            self._send(notif_id, 0, error, flags)
            return
        call: _Call | None = None
        result: tuple[str, int, int] | None = None
        try:
            call = _Call(self.listener, notif_id, tid)
            result = self._handle(call, self.names.get(nr, ""), args)
        except Exception:  # noqa: BLE001 - Continue, and any surprise (a pointer past 2**63):
            result = None  # the kernel decides, which is always safe
        try:
            if call is None or result is None:
                self._send(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            else:
                self._answer(call, result)
        finally:
            if call is not None:
                call.close()

    def _watch(self, notif_id: int, tid: int, name: str, a: list[int]) -> tuple[int, int]:
        """(error, flags) for a call that nests a domain or may move a parent. Marks are taken
        before the call is let go; a mark that cannot be taken stops all emulation."""
        domains = self.domains
        if name == "landlock_restrict_self":
            domains.mark(tid, domains.confined, lambda: self._waiting(notif_id))
        elif name == "prctl":
            if a[0] & 0xFFFFFFFF == PR_SET_CHILD_SUBREAPER and a[1]:
                domains.mark(tid, domains.subreapers, lambda: self._waiting(notif_id))
        elif name == "clone" and a[0] & CLONE_PARENT and not domains.known(tid):
            return -errno.EPERM, 0  # its child would show the caller's parent as its own
        return 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE

    def _waiting(self, notif_id: int) -> bool:
        buf = ctypes.create_string_buffer(struct.pack("=Q", notif_id), 8)
        try:
            _ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ID_VALID, buf)
        except OSError:
            return False
        return True

    # -- what to do --

    def _handle(self, call: _Call, name: str, a: list[int]) -> tuple[str, int, int]:
        """("fd", fd, flags) | ("ret", value, 0) | ("err", errno, 0); Continue otherwise."""
        if name == "open":
            return self._open(call, AT_FDCWD, a[0], a[1] & 0xFFFFFFFF, a[2])
        if name == "creat":
            return self._open(call, AT_FDCWD, a[0], _CREAT_FLAGS, a[1])
        if name == "openat":
            return self._open(call, _u32_int(a[0]), a[1], a[2] & 0xFFFFFFFF, a[3])
        if name == "openat2":
            return self._openat2(call, _u32_int(a[0]), a[1], a[2], a[3])
        if name == "mkdir":
            return self._mkdir(call, AT_FDCWD, a[0], a[1])
        if name == "mkdirat":
            return self._mkdir(call, _u32_int(a[0]), a[1], a[2])
        if name == "mknod":
            return self._mknod(call, AT_FDCWD, a[0], a[1], a[2])
        if name == "mknodat":
            return self._mknod(call, _u32_int(a[0]), a[1], a[2], a[3])
        if name == "symlink":
            return self._symlink(call, a[0], AT_FDCWD, a[1])
        if name == "symlinkat":
            return self._symlink(call, a[0], _u32_int(a[1]), a[2])
        if name == "link":
            return self._link(call, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)
        if name == "linkat":
            return self._link(call, _u32_int(a[0]), a[1], _u32_int(a[2]), a[3],
                              a[4] & 0xFFFFFFFF)
        if name == "rename":
            return self._rename(call, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)
        if name in ("renameat", "renameat2"):
            flags = a[4] & 0xFFFFFFFF if name == "renameat2" else 0
            return self._rename(call, _u32_int(a[0]), a[1], _u32_int(a[2]), a[3], flags)
        raise Continue

    def needs_help(self, fd: int) -> bool:
        """Whether layer 2 refuses creating in the directory open on ``fd``: it is guarded, or
        the first ancestor that is guarded or ruled is a guarded one."""
        opened: list[int] = []
        try:
            st = os.fstat(fd)
            for _ in range(_MAX_DEPTH):
                ident: Identity = (st.st_dev, st.st_ino)
                if ident in self.guarded:
                    return True
                if ident in self.ruled:
                    return False
                fd = os.open("..", _DIR, dir_fd=fd)
                opened.append(fd)
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == ident:
                    return False  # the root
            return False
        finally:
            for walked in opened:
                os.close(walked)

    def _refused(self, fd: int, name: bytes) -> bool:
        """Whether ``name`` is refused in the directory open on ``fd``: the guarded directory
        itself, or one at its path (the host removed the original and the mount on it went;
        the new one has no layer-2 rule, so continuing is refusing)."""
        st = os.fstat(fd)
        folded = fold(os.fsdecode(name))
        if folded in self.refused.get((st.st_dev, st.st_ino), ()):
            return True
        try:
            path = os.readlink(f"/proc/self/fd/{fd}".encode())
        except OSError:
            return True  # cannot tell: the kernel decides
        return folded in self.refused_at.get(path, ())

    def _creatable(self, call: _Call, fd: int, name: bytes) -> None:
        """Continue unless this creation is one the init must do (see the module doc)."""
        if not self.needs_help(fd) or self._refused(fd, name) or _exists(fd, name):
            raise Continue
        if not self.domains.known(call.tid):
            raise Continue  # maybe in a domain of its own: layer 2 decides

    def _open(self, call: _Call, dirfd: int, addr: int, flags: int, mode: int
              ) -> tuple[str, int, int]:
        if not flags & os.O_CREAT or flags & os.O_PATH:
            raise Continue  # nothing is created (O_PATH ignores O_CREAT)
        parent, name = call.parent(dirfd, call.string(addr), dir_ok=False)
        self._creatable(call, parent, name)
        perm = mode & 0o7777 & ~call.umask()
        call.check()
        try:
            fd = os.open(name, flags | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, perm,
                         dir_fd=parent)
        except FileExistsError:
            if flags & os.O_EXCL:
                return "err", errno.EEXIST, 0
            raise Continue from None  # made meanwhile: an open of it creates nothing
        except OSError as exc:
            return "err", exc.errno or errno.EIO, 0
        return "fd", fd, flags & os.O_CLOEXEC

    def _openat2(self, call: _Call, dirfd: int, addr: int, how_addr: int, size: int
                 ) -> tuple[str, int, int]:
        if not _OPEN_HOW.size <= size <= _PAGE:
            raise Continue
        raw = call.block(how_addr, size)
        if raw[_OPEN_HOW.size:].strip(b"\0"):
            raise Continue  # fields this code does not know: the kernel says E2BIG
        flags, mode, resolve = _OPEN_HOW.unpack(raw[:_OPEN_HOW.size])
        if not flags & os.O_CREAT or flags & os.O_PATH:
            raise Continue
        parent, name = call.parent(dirfd, call.string(addr), dir_ok=False, resolve=resolve)
        self._creatable(call, parent, name)
        perm = mode & 0o7777 & ~call.umask()
        call.check()
        try:
            fd = _openat2(parent, name, flags | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, perm,
                          resolve & ~RESOLVE_CACHED)
        except FileExistsError:
            if flags & os.O_EXCL:
                return "err", errno.EEXIST, 0
            raise Continue from None
        except OSError as exc:
            return "err", exc.errno or errno.EIO, 0
        return "fd", fd, flags & os.O_CLOEXEC

    def _mkdir(self, call: _Call, dirfd: int, addr: int, mode: int) -> tuple[str, int, int]:
        parent, name = call.parent(dirfd, call.string(addr), dir_ok=True)
        self._creatable(call, parent, name)
        perm = mode & 0o1777 & ~call.umask()
        call.check()
        return _result(lambda: os.mkdir(name, perm, dir_fd=parent))

    def _mknod(self, call: _Call, dirfd: int, addr: int, mode: int, dev: int
               ) -> tuple[str, int, int]:
        kind = stat.S_IFMT(mode)
        if kind not in (0, stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK):
            raise Continue  # devices: never on the init's behalf
        parent, name = call.parent(dirfd, call.string(addr), dir_ok=False)
        self._creatable(call, parent, name)
        perm = mode & 0o7777 & ~call.umask()
        call.check()
        return _result(lambda: os.mknod(name, (kind or stat.S_IFREG) | perm, 0, dir_fd=parent))

    def _symlink(self, call: _Call, target_addr: int, dirfd: int, addr: int
                 ) -> tuple[str, int, int]:
        target = call.string(target_addr)
        parent, name = call.parent(dirfd, call.string(addr), dir_ok=False)
        self._creatable(call, parent, name)
        call.check()
        return _result(lambda: os.symlink(target, name, dir_fd=parent))

    def _link(self, call: _Call, olddir: int, old_addr: int, newdir: int, new_addr: int,
              flags: int) -> tuple[str, int, int]:
        if flags & AT_EMPTY_PATH:
            raise Continue
        src, src_name = call.parent(olddir, call.string(old_addr), dir_ok=False)
        dst, dst_name = call.parent(newdir, call.string(new_addr), dir_ok=False)
        self._pair(call, src, src_name, dst, dst_name, fresh=True)
        call.check()
        return _result(lambda: os.link(src_name, dst_name, src_dir_fd=src, dst_dir_fd=dst,
                                       follow_symlinks=bool(flags & AT_SYMLINK_FOLLOW)))

    def _rename(self, call: _Call, olddir: int, old_addr: int, newdir: int, new_addr: int,
                flags: int) -> tuple[str, int, int]:
        src, src_name = call.parent(olddir, call.string(old_addr), dir_ok=True)
        dst, dst_name = call.parent(newdir, call.string(new_addr), dir_ok=True)
        self._pair(call, src, src_name, dst, dst_name, fresh=False)
        call.check()
        return _result(lambda: _renameat2(src, src_name, dst, dst_name, flags))

    def _pair(self, call: _Call, src: int, src_name: bytes, dst: int, dst_name: bytes, *,
              fresh: bool) -> None:
        """Link and rename: emulated when layer 2 refuses on either side (a move out of a
        guarded directory is a REFER there); never when either name is a refused one."""
        if self._refused(src, src_name) or self._refused(dst, dst_name):
            raise Continue
        if fresh and _exists(dst, dst_name):
            raise Continue
        if not (self.needs_help(dst) or self.needs_help(src)):
            raise Continue
        if not self.domains.known(call.tid):
            raise Continue

    # -- answers --

    def _answer(self, call: _Call, result: tuple[str, int, int]) -> None:
        kind, value, extra = result
        if kind == "fd":
            # Installed, our copy closed, then answered: answered at once (ADDFD_FLAG_SEND),
            # the program ran on while the file was still open here for writing, and its
            # exec of a file it had just made and closed failed with ETXTBSY. It cannot
            # return in between: it waits killably once the call is received.
            addfd = ctypes.create_string_buffer(_ADDFD.pack(
                call.id, 0, value, 0, os.O_CLOEXEC if extra else 0), _ADDFD.size)
            try:
                installed = _ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ADDFD, addfd)
            except OSError as exc:
                os.close(value)
                if exc.errno != errno.ENOENT:  # gone: nothing to answer
                    self._send(call.id, 0, -(exc.errno or errno.EIO), 0)
            else:
                os.close(value)
                self._send(call.id, installed, 0, 0)
        elif kind == "err":
            self._send(call.id, 0, -value, 0)
        else:
            self._send(call.id, value, 0, 0)

    def _send(self, notif_id: int, val: int, error: int, flags: int) -> None:
        buf = ctypes.create_string_buffer(_RESP.pack(notif_id, val, error, flags), _RESP.size)
        try:
            _ioctl(self.listener, SECCOMP_IOCTL_NOTIF_SEND, buf)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # the target was killed meanwhile
                raise


def _result(action: Callable[[], object]) -> tuple[str, int, int]:
    try:
        action()
    except OSError as exc:
        return "err", exc.errno or errno.EIO, 0
    return "ret", 0, 0
