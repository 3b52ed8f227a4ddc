"""A FUSE file system that answers this process's threads and no other process.

Its root is an empty-looking directory holding one executable file, ``prog`` (found by
name, not listed). A request made by a thread of this process (the daemon of the tests that
run one in-process: its plan, its reads as the caller) is answered; one made by any other
process (a session's launcher, its init, its program) is never answered, and that process
waits in the kernel until the file system goes. What a user's own FUSE server can do: the
kernel tells the server which process asks (``fuse_in_header.pid``).

Written against the kernel's FUSE protocol (``include/uapi/linux/fuse.h``), standard library
only; the mount itself needs root (as ``fusermount``, set-uid, makes it for a user).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import stat
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_LIBC = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2

_IN = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
_OUT = struct.Struct("<IiQ")  # len, error, unique
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr: 88 bytes
_NO_REPLY = {2, 36, 42}  # FORGET, INTERRUPT, BATCH_FORGET
_LOOKUP, _GETATTR, _OPENDIR, _READDIR, _RELEASEDIR, _INIT = 1, 3, 27, 28, 29, 26
_ROOT, _PROG = 1, 2
PROGRAM = "prog"


def _attr(node: int, uid: int, gid: int) -> bytes:
    mode = (stat.S_IFDIR | 0o755) if node == _ROOT else (stat.S_IFREG | 0o755)
    size = 0 if node == _ROOT else 4096
    return _ATTR.pack(node, size, 8, 0, 0, 0, 0, 0, 0, mode, 2 if node == _ROOT else 1,
                      uid, gid, 0, 4096, 0)


def _answer(opcode: int, node: int, body: bytes, owner: tuple[int, int]) -> tuple[int, bytes]:
    """(negative errno or 0, reply body) for one request."""
    if opcode == _INIT:
        (readahead,) = struct.unpack_from("<8xI", body)
        return 0, struct.pack("<IIIIHHIIHHIIH22x", 7, 31, readahead, 0, 16, 12, 4096, 1, 0,
                              0, 0, 0, 0)
    if opcode == _GETATTR and node in (_ROOT, _PROG):
        return 0, struct.pack("<QII", 0, 0, 0) + _attr(node, *owner)
    if opcode == _LOOKUP and node == _ROOT:
        if body.split(b"\0", 1)[0] == PROGRAM.encode():
            return 0, struct.pack("<QQQQII", _PROG, 0, 0, 0, 0, 0) + _attr(_PROG, *owner)
        return -errno.ENOENT, b""
    if opcode == _OPENDIR and node == _ROOT:
        return 0, struct.pack("<QIi", 0, 0, 0)
    if opcode in (_READDIR, _RELEASEDIR):
        return 0, b""
    return -errno.ENOSYS, b""


def _serve(fd: int, stop: int, owner: tuple[int, int]) -> None:
    while True:
        ready, _, _ = select.select([fd, stop], [], [])
        if stop in ready:
            return
        try:
            request = os.read(fd, 1 << 17)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                continue  # (a request interrupted before it was read)
            return  # (ENODEV: the connection is gone)
        _, opcode, unique, node, _, _, pid, _, _ = _IN.unpack_from(request)
        if opcode in _NO_REPLY or (opcode != _INIT
                                   and not os.path.exists(f"/proc/self/task/{pid}")):
            continue  # (another process's request: never answered)
        error, body = _answer(opcode, node, request[_IN.size:], owner)
        try:
            os.write(fd, _OUT.pack(_OUT.size + len(body), error, unique) + body)
        except OSError:
            continue  # (the request was interrupted meanwhile)


@contextmanager
def picky_fuse(where: Path, uid: int, gid: int) -> Iterator[Path]:
    """The file system mounted at ``where`` (owned by ``uid``/``gid``, open to others); its
    program's path. Unmounted, and its connection aborted, on the way out: the requests
    left unanswered fail then (``ENOTCONN``)."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)
    options = f"fd={fd},rootmode=40000,user_id={uid},group_id={gid},allow_other".encode()
    if _LIBC.mount(b"nono-picky", str(where).encode(), b"fuse", 0, options) != 0:
        code = ctypes.get_errno()
        for each in (fd, stop_r, stop_w):
            os.close(each)
        raise OSError(code, os.strerror(code), str(where))
    server = threading.Thread(target=_serve, args=(fd, stop_r, (uid, gid)), daemon=True,
                              name="picky-fuse")
    server.start()
    try:
        yield where / PROGRAM
    finally:
        os.write(stop_w, b"x")
        server.join()
        _LIBC.umount2(str(where).encode(), _MNT_DETACH)
        for each in (fd, stop_r, stop_w):
            os.close(each)  # (the last reference: the connection ends, the waiters fail)
