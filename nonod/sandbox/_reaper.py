"""The session's pid 1 once its program runs: ``nono-reaper``, a small static program built
from ``reaper.c`` by ``make`` (see the Makefile), instead of a resident Python interpreter.

The fork server loads the binary once into a sealed, execute-only memfd (:func:`load`) that
every launcher inherits. The init confines itself in Python as before, starts the program,
and then replaces itself with the reaper (``execveat`` on that memfd, :func:`become`): the
reaper forwards signals, reaps, answers the daemon's connect requests and reports the exit
status, with every restriction the init had (Landlock does not apply to a memfd's path, and
the file is not readable, so the reaper is not dumpable from its first instruction).

Without the binary (a wheel installed without building it, a kernel that refuses to execute
memfds) :func:`load` returns -1 and the init stays the Python loop, which does the same.
The creation guard's supervisor is Python (``_createserve``): an init that serves it stays.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

BINARY = Path(__file__).with_name("nono-reaper")
#: Where the init keeps the memfd after its descriptors are renumbered (``_launcher._stdio``).
FD = 6
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


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
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o111)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError:
        os.close(fd)
        return -1
    return fd


def become(program: int, exit_w: int, control: int, ns_flags: int) -> None:
    """Replace this process (the session's init, confined, its program started) with the
    reaper on :data:`FD`. Returns only if the exec failed: the caller then serves as the
    Python init, with the descriptors as they were."""
    subreaper = 0 if ns_flags else 1  # no namespaces: a child subreaper (see ``_mode``)
    for fd in (exit_w, control):
        os.set_inheritable(fd, True)
    try:
        os.execve(FD, ["nono-reaper", str(program), str(exit_w), str(control), str(subreaper)],
                  {})
    except OSError:
        for fd in (exit_w, control):
            os.set_inheritable(fd, False)
