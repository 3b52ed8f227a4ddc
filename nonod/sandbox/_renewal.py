"""The fork server starts afresh once work is over and it carries nothing.

A fork server that served a burst keeps more memory than a fresh one, though it keeps
nothing of the burst: the modules the burst's launches imported, and the heap's pages that
a few long-lived blocks still pin after ``malloc_trim`` (``nonod._malloc``). After
bench/daemon.py's runs (100 live sessions, then a few hundred launches) that was 2 MiB of
anonymous memory, 8.9 -> 10.9 MiB (docs/benchmarks.md, "idle5"), which the next warm
launcher forked from it would also copy.

Its state is its children (the warm launchers, the sessions' inits it adopted, the guard
hub's repairs), what it holds for them, and its socket to the daemon. Once it has no child
left and holds nothing, a fresh start of its own program takes over all of it: the socket
(kept across the ``execve``; launch requests sent meanwhile wait in it) and the pid, which
is what the daemon knows it by. It then looks as it did when the daemon started it.

:class:`Renewal` decides when, from the server's loop whenever no launch is waiting: when
it has no child left and holds nothing (no warm launcher either: those go ``[sandbox]
warm_idle`` seconds after the last launch, and the exit of the last one wakes the loop), its
anonymous memory has grown by ``GROWTH`` over what it had when it started serving, and
neither the interpreter, nor any module it loaded, nor the reaper's binary has been
replaced on disk since it started (an upgrade in place: the fresh start would run code the
daemon was not started with; the server then stays as it is, for good). While anything is
held it looks at two attributes; with nothing held, for a child (one ``waitid``); then at
its memory (``/proc/self/status``).

The fresh start is the daemon's own start of the server again, with its window: until its
``main`` runs (the interpreter's start and its imports, 40 to 50 ms of CPU), the server is
dumpable again (``execve`` resets it) and its memory not yet locked; it holds no plan then,
only the socket (docs/security-model.md).
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Final, final

# KiB of anonymous memory over the start's beyond which a fresh start pays: one launch of a
# kind adds about 0.1 MiB (what its first use imported), a burst 1 to 3.
GROWTH: Final = 1024

_Stamp = tuple[int, int, int, int]


def anon_kib() -> int:
    """This process's resident anonymous memory (``RssAnon``), in KiB."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"RssAnon:"):
                return int(line.split()[1])
    return 0


def _files(more: tuple[str, ...] = ()) -> dict[str, _Stamp]:
    """Device, inode, size and modification time of the interpreter, of every module file
    loaded and of ``more`` (left out: those that are gone)."""
    paths = {sys.executable, *more}
    paths.update(f for m in list(sys.modules.values())
                 if isinstance(f := getattr(m, "__file__", None), str))
    out: dict[str, _Stamp] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[path] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def childless() -> bool:
    """Whether this process has no child at all, running or ended (none is reaped here)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return False


@final
class Renewal:
    """When to start afresh (see the module). Made when the server starts serving."""

    def __init__(self, *, growth: int | None = None, files: tuple[str, ...] = ()) -> None:
        """``files``: what else a fresh start reads (the reaper's binary)."""
        self._limit = anon_kib() + (GROWTH if growth is None else growth)
        self._more = files
        self._files = _files(files)

    def due(self, holds_nothing: bool) -> bool:
        """``holds_nothing``: the server's own account of what it holds (no launcher, guard
        client or launch in flight, no group left to remove)."""
        if not holds_nothing or not childless() or anon_kib() <= self._limit:
            return False
        if _files(self._more) != self._files:
            self._limit = sys.maxsize  # replaced on disk: never
            return False
        return True


def renew(keep: int, nofile: tuple[int, int] | None) -> None:
    """Run this process's own command line afresh, descriptor ``keep`` kept open and the
    descriptor limit it was started with (``nofile``) given back; returns only if the
    ``execve`` failed (the process is then as it was)."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    os.set_inheritable(keep, True)
    try:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
        os.execv(sys.executable, sys.orig_argv)
    except (OSError, ValueError):
        os.set_inheritable(keep, False)
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)
