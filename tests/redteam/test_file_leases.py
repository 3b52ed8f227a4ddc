"""Red team, a kernel object of a session that stops other processes' opens of a shared file
(the thirty-fourth pass, docs/security-model.md).

A file lease (``fcntl(F_SETLEASE)``) is asked of the owner of a file only: no capability,
no namespace check, and Landlock does not see ``fcntl``. While a lease is held, the kernel
makes every open that conflicts with it wait for the holder (up to
``fs.lease-break-time``, 45 s by default) and answers ``EWOULDBLOCK`` to a non-blocking
one. A holder that ignores ``SIGIO`` never gives it back early, and takes it again as soon
as the opener closes. So a session that leased a file of a grant it shares with the host
or with another session (the project both work on, its ``AGENTS.md``, a file of a
read-only grant) made them wait 45 s for each open:

- a **write lease** (a file of a writable grant): every open, reads included;
- a **read lease** (any file the session's uid owns, in a read-only grant too): every open
  for writing, every truncation.

The daemon itself reads a caller's files (a workdir's instruction files, for the trust
scan) with ``O_NONBLOCK``: it got ``EWOULDBLOCK``. Nothing in a session needs leases
(they are for file servers: Samba, NFS); ``fcntl(F_SETLEASE)`` is refused (``EPERM``);
``F_GETLEASE`` still answers.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nonod._callerfs import CallerFileError, read_path
from nonod.policy import Access, Grant, ResolvedPolicy

from ..conftest import Result, SandboxUser
from ..sandbox.test_sandbox import PY

pytestmark = pytest.mark.userns

#: Takes a lease of ``kind`` (``write`` or ``read``) on ``leased``, ignoring the kernel's
#: request to give it back, says what it got, then holds it until ``release`` appears.
LEASE = r"""
import errno, fcntl, os, signal, sys, time
signal.signal(signal.SIGIO, signal.SIG_IGN)
kind = sys.argv[1]
fd = os.open('leased', os.O_RDWR if kind == 'write' else os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK if kind == 'write' else fcntl.F_RDLCK)
    got = 'HELD'
except OSError as e:
    got = errno.errorcode[e.errno]
print(got, fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_UNLCK, flush=True)
open('/work/held' if kind == 'read' else 'held', 'w').close()
end = time.monotonic() + 60
while not os.path.exists('/work/release' if kind == 'read' else 'release') \
        and time.monotonic() < end:
    time.sleep(0.05)
"""


def _policy(leased_dir: Path, access: Access, work: Path) -> ResolvedPolicy:
    return ResolvedPolicy(name="leases", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
        Grant(path=str(leased_dir), access=access),
        Grant(path=str(work), access=Access.READWRITE)), denials=())


def _open_meanwhile(path: Path, flags: int) -> str:
    """What a process outside the session gets from a non-blocking open of ``path``."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return errno.errorcode[e.errno]
    os.close(fd)
    return "OK"


def _leasing(user: SandboxUser, root: Path, kind: str,
             meanwhile: Callable[[Path], str], name: str = "leased") -> tuple[Result, str]:
    """A session that leases ``root/leased/<name>``, and what ``meanwhile`` (given that
    directory) saw outside it while it held the lease."""
    leased_dir, work = root / "leased", root / "work"
    leased_dir.mkdir()
    work.mkdir()
    (leased_dir / name).write_text("{}\n")
    user.chown(leased_dir, leased_dir / name, work)
    # (the read lease's session cannot write in its read-only grant: it marks in work)
    marks = leased_dir if kind == "write" else work
    access = Access.READWRITE if kind == "write" else Access.READ
    policy = _policy(leased_dir, access, work)
    program = LEASE.replace("'leased'", repr(name))
    if kind == "read":
        program = program.replace("/work/", str(work) + "/")
    out: list[Result] = []
    holder = threading.Thread(target=lambda: out.append(user.run(
        policy, [PY, "-S", "-c", program, kind], cwd=str(leased_dir), timeout=90)))
    holder.start()
    try:
        end = time.monotonic() + 60
        while not (marks / "held").exists() and holder.is_alive():
            assert time.monotonic() < end, "the holder never said"
            time.sleep(0.05)
        seen = (meanwhile(leased_dir) if holder.is_alive()
                else "the holder ended first")
    finally:
        (marks / "release").touch()
        holder.join(90)
    assert out and out[0].code == 0, out
    return out[0], seen


def test_a_session_cannot_lease_a_file_of_a_writable_grant(sandbox_user: SandboxUser,
                                                           world_tmp: Path) -> None:
    """Before: ``HELD`` in the session, and a host read of the file ``EWOULDBLOCK`` (a
    blocking one waited 45 s)."""
    held, seen = _leasing(sandbox_user, world_tmp, "write",
                          lambda d: _open_meanwhile(d / "leased", os.O_RDONLY))
    assert (held.stdout.split(), seen) == (["EPERM", "True"], "OK")


def test_a_session_cannot_lease_a_file_of_a_read_only_grant(sandbox_user: SandboxUser,
                                                            world_tmp: Path) -> None:
    """Before: ``HELD`` through a read-only bind, and a host write of the file
    ``EWOULDBLOCK``."""
    held, seen = _leasing(sandbox_user, world_tmp, "read",
                          lambda d: _open_meanwhile(d / "leased", os.O_WRONLY))
    assert (held.stdout.split(), seen) == (["EPERM", "True"], "OK")


def _daemon_reads(directory: Path) -> str:
    """What the daemon's reader of a caller's files (``nonod._callerfs``, as the trust scan
    reads a workdir's instruction files at launch) says of ``directory/AGENTS.md``."""
    try:
        read_path(str(directory / "AGENTS.md"), max_bytes=4096, symlinks="refuse")
    except CallerFileError as exc:
        return exc.reason
    return "OK"


def test_a_session_cannot_make_the_daemons_reads_of_a_shared_file_fail(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """Before: ``AGENTS.md`` of a writable grant leased from inside, and the daemon's read of
    it (``O_NONBLOCK``) refused meanwhile, ``cannot open: Resource temporarily
    unavailable``: a trust scan that includes it fails the file (a launch in a project
    whose policy denies is refused). A project's own ``trust-policy.json`` and the files a
    session's launch pinned are read-only in it: a read lease there stops writers only."""
    held, seen = _leasing(sandbox_user, world_tmp, "write", _daemon_reads, name="AGENTS.md")
    assert (held.stdout.split(), seen) == (["EPERM", "True"], "OK")
