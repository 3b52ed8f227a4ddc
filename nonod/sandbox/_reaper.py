"""A session's processes once its program runs: ``nono-reaper``, a small static program
built from ``reaper*.c`` by ``make`` (see the Makefile), instead of resident Python
interpreters.

The fork server loads the binary once into a sealed, execute-only memfd (:func:`load`) that
every launcher inherits. The init confines itself in Python as before, starts the program,
and once it has run ``_launcher.REAPER_AFTER`` replaces itself with the reaper (``execveat``
on that memfd, :func:`become`): the reaper forwards signals, reaps, answers the daemon's
connect requests, serves the creation
guard's notifications (the decisions of ``_createserve``, from what the init prepared:
:func:`guard_config`) and reports the exit status, with every restriction the init had
(Landlock does not apply to a memfd's path, and the file is not readable, so the reaper is
not dumpable from its first instruction).

The launcher's outer process does the same with ``--outer`` (:func:`become_outer`,
``reaper_outer.c``): the view guard, once the Python code has set it up, where the outer
stays (no pid namespace, or an init that stays Python). Elsewhere it leaves the session to the
fork server (``_launcher.hands_over``), whose hub runs ``--repair`` (:func:`repair_argv`) for
each change on the way to a guarded path.

With ``--init`` (``reaper_init.c``, ``_cinit``) the binary is a warm direct launcher's whole
init, from its first instruction, where the fork server's flat form covers the view.

Without the binary (a wheel installed without building it, a kernel that refuses to execute
memfds) :func:`load` returns -1 and both stay the Python loops, which do the same; so does an
init whose creation guard refuses a name that does not fold to ASCII (the reaper compares
names folded to ASCII only).
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
from pathlib import Path

from . import _libc
from ._createserve import Supervisor
from ._viewguard import ViewGuard

BINARY = Path(__file__).with_name("nono-reaper")
#: Where the init keeps the memfd after its descriptors are renumbered (``_launcher._stdio``).
FD = 6
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_U32 = struct.Struct("<I")
_IDENT = struct.Struct("<QQ")
_OP = struct.Struct("<IIq")  # kind, absent, the id of the mount on its target (-1: none)


#: Names another build in the fork server's environment (the daemon's, set by whoever starts
#: it; a session's environment is built from its request and never reaches here): the tests
#: run the sanitized build (``make reaper-asan``) this way.
OVERRIDE = "NONO_REAPER_BINARY"


def load(binary: Path | None = None) -> int:
    """A close-on-exec memfd holding ``binary`` (default :data:`BINARY`, or what
    :data:`OVERRIDE` names), sealed and mode 0111; -1 if there is none."""
    if binary is None:
        binary = Path(os.environ.get(OVERRIDE) or BINARY)
    try:
        data = binary.read_bytes()
    except OSError:
        return -1
    if not data.startswith(b"\x7fELF"):
        return -1
    try:
        fd = os.memfd_create("nono-reaper", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return -1
    try:
        _write_all(fd, data)
        os.fchmod(fd, 0o111)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError:
        os.close(fd)
        return -1
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _names(names: frozenset[str]) -> bytes | None:
    if not all(name.isascii() for name in names):
        return None
    out = [_U32.pack(len(names))]
    for name in sorted(names):
        raw = name.encode()
        out += [_U32.pack(len(raw)), raw]
    return b"".join(out)


def guard_config(supervisor: Supervisor) -> bytes | None:
    """What ``reaper_guard.c`` reads: the guarded directories by identity and by path with
    their refused names, folded, the directories with a layer-2 rule of their own, then
    what the init learnt of nested domains (``_createserve.Domains``: whether it stopped
    emulating, the processes marked confined, the child subreapers; each process as pid and
    start time), all little endian. None if a refused name does not fold to ASCII."""
    out = [b"NGC2", _U32.pack(len(supervisor.refused))]
    for (dev, ino), names in supervisor.refused.items():
        packed = _names(names)
        if packed is None:
            return None
        out += [_IDENT.pack(dev, ino), packed]
    out.append(_U32.pack(len(supervisor.refused_at)))
    for path, names in supervisor.refused_at.items():
        packed = _names(names)
        if packed is None:
            return None
        out += [_U32.pack(len(path)), path, packed]
    out.append(_U32.pack(len(supervisor.ruled)))
    out += [_IDENT.pack(dev, ino) for dev, ino in sorted(supervisor.ruled)]
    domains = supervisor.domains  # what the init has seen of nested domains so far
    out.append(bytes([domains.lost]))
    for marks in (domains.confined, domains.subreapers):
        out.append(_U32.pack(len(marks)))
        out += [_IDENT.pack(pid, start) for pid, start in sorted(marks)]
    return b"".join(out)


def become(program: int, exit_w: int, control: int, ns_flags: int,
           supervisor: Supervisor | None = None,
           handover: tuple[int, int] | None = None) -> None:
    """Replace this process (the session's init, confined, its program started) with the
    reaper on :data:`FD`. Returns only if it cannot (no exec, or a creation guard it cannot
    serve): the caller then serves as the Python init, with the descriptors as they were.
    ``handover``: the init's end of the fork server's hub socket (its lifeline once the outer
    launcher has left) and of the socket to the outer launcher, on which the reaper says
    when the outer may leave (``reaper.c``, ``_launcher.hands_over``)."""
    subreaper = 0 if ns_flags else 1  # no namespaces: a child subreaper (see ``_mode``)
    lifeline, outer = handover if handover is not None else (-1, -1)
    argv = ["nono-reaper", str(program), str(exit_w), str(control), str(subreaper),
            str(lifeline), str(outer)]
    passed = [exit_w, control, *(handover or ())]
    config = -1
    if supervisor is not None:
        data = guard_config(supervisor)
        if data is None:
            return
        try:
            memfd = os.memfd_create("nono-guard", os.MFD_CLOEXEC)
        except OSError:
            return
        try:
            _write_all(memfd, data)
            config = _above_stdio(memfd)
        except OSError:
            return
        finally:
            os.close(memfd)
        argv += [str(supervisor.fileno()), str(config)]
        passed += [supervisor.fileno(), config, *supervisor.keep]
    for fd in passed:
        os.set_inheritable(fd, True)
    try:
        os.execve(FD, argv, {})
    except OSError:
        for fd in passed:
            os.set_inheritable(fd, False)
        if config >= 0:
            os.close(config)


def _str(value: str) -> bytes:
    raw = value.encode()
    return _U32.pack(len(raw)) + raw


def outer_config(view: ViewGuard) -> bytes:
    """What ``reaper_outer.c`` reads: each guarded operation with the id of the mount on its
    target, and each directory on the way with its identity when last watched."""
    out = [b"NGO1", _U32.pack(len(view.ops))]
    for op in view.ops:
        out += [_OP.pack(op.kind, int(op.absent), view.mounted(op.target)), _str(op.target),
                _str(op.source)]
    out.append(_U32.pack(len(view.dirs)))
    for directory, (dev, ino) in zip(view.dirs, view.watched, strict=True):
        out += [_str(directory), _IDENT.pack(dev, ino)]
    return b"".join(out)


def become_outer(reaper: int, init: int, guarded: tuple[int, ViewGuard, int] | None,
                 ns_flags: int, server: int) -> None:
    """Replace the launcher's outer process with ``nono-reaper --outer`` on ``reaper``, the
    view guard set up (``guarded``: the hub's socket, the guard, the report pipe; None when
    there is nothing to guard). Returns only if it cannot: the caller goes on in Python."""
    hub = report = config = -1
    passed: list[int] = []  # ours: copies numbered 3 and above (_above_stdio)
    if guarded is not None:
        hub, view, report = guarded
        try:
            config = os.memfd_create("nono-outer", os.MFD_CLOEXEC)
            passed.append(config)
            _write_all(config, outer_config(view))
            for fd in (hub, report, config):
                passed.append(_above_stdio(fd))
        except OSError:
            _close(passed)
            return
        os.close(passed.pop(0))
        hub, report, config = passed
    try:
        if ns_flags:
            _libc.keep_capabilities_across_exec()  # the guard mounts in the session
    except OSError:
        _close(passed)
        return
    for fd in passed:
        os.set_inheritable(fd, True)
    if not ns_flags:  # the fork server's death (SIGHUP) waits for the reaper's signalfd
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    argv = ["nono-outer", "--outer", str(init), str(hub), str(report),
            str(0 if ns_flags else 1), str(server), str(config)]
    try:
        os.execve(reaper, argv, {})
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        _close(passed)


def repair_argv(server: int, serve: bool = False) -> list[str]:
    """``nono-reaper --repair`` (``reaper_outer.c``): one round of a session's view guard, run
    by the fork server's hub once the session's outer launcher has left (``_guardhub``), with
    the init's pidfd, the session's hub socket, its exit pipe and the guard's state on 3 to 6;
    ``serve``: a repair server, spawned ahead of need, which takes those four (``J`` and the
    job's number) on 3, for any session, and runs each job in a child of its own."""
    return ["nono-repair", "--repair", str(server), *(("--serve",) if serve else ())]


def _above_stdio(fd: int) -> int:
    """A close-on-exec copy of ``fd`` numbered 3 or above. The launcher's processes run with
    0-2 closed, so a descriptor handed to the reaper may get one of those numbers, where a
    stray write to standard error (a libc or sanitizer message) would corrupt it."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
