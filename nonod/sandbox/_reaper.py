"""The session's pid 1 once its program runs: ``nono-reaper``, a small static program built
from ``reaper.c`` and ``reaper_guard.c`` by ``make`` (see the Makefile), instead of a
resident Python interpreter.

The fork server loads the binary once into a sealed, execute-only memfd (:func:`load`) that
every launcher inherits. The init confines itself in Python as before, starts the program,
and then replaces itself with the reaper (``execveat`` on that memfd, :func:`become`): the
reaper forwards signals, reaps, answers the daemon's connect requests, serves the creation
guard's notifications (the decisions of ``_createserve``, from what the init prepared:
:func:`guard_config`) and reports the exit status, with every restriction the init had
(Landlock does not apply to a memfd's path, and the file is not readable, so the reaper is
not dumpable from its first instruction).

Without the binary (a wheel installed without building it, a kernel that refuses to execute
memfds) :func:`load` returns -1 and the init stays the Python loop, which does the same; so
does an init whose creation guard refuses a name that does not fold to ASCII (the reaper
compares names folded to ASCII only).
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from ._createserve import Supervisor

BINARY = Path(__file__).with_name("nono-reaper")
#: Where the init keeps the memfd after its descriptors are renumbered (``_launcher._stdio``).
FD = 6
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_U32 = struct.Struct("<I")
_IDENT = struct.Struct("<QQ")


def load(binary: Path = BINARY) -> int:
    """A close-on-exec memfd holding ``binary``, sealed and mode 0111; -1 if there is none."""
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
    their refused names, folded, and the directories with a layer-2 rule of their own (all
    little endian). None if a refused name does not fold to ASCII."""
    out = [b"NGC1", _U32.pack(len(supervisor.refused))]
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
    return b"".join(out)


def become(program: int, exit_w: int, control: int, ns_flags: int,
           supervisor: Supervisor | None = None) -> None:
    """Replace this process (the session's init, confined, its program started) with the
    reaper on :data:`FD`. Returns only if it cannot (no exec, or a creation guard it cannot
    serve): the caller then serves as the Python init, with the descriptors as they were."""
    subreaper = 0 if ns_flags else 1  # no namespaces: a child subreaper (see ``_mode``)
    argv = ["nono-reaper", str(program), str(exit_w), str(control), str(subreaper)]
    passed = [exit_w, control]
    config = -1
    if supervisor is not None:
        data = guard_config(supervisor)
        if data is None:
            return
        try:
            config = os.memfd_create("nono-guard", os.MFD_CLOEXEC)
            _write_all(config, data)
        except OSError:
            if config >= 0:
                os.close(config)
            return
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
