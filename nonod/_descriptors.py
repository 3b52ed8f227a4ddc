"""The daemon's descriptor table: sessions' traffic gets part of it, never all.

Every connection a session's program opens to its proxy costs the daemon a descriptor, and
every tunnel or upstream request one more. Each proxy admits 256 connections at once, but
all sessions share the daemon's one table: with the 1024 descriptors systemd gives a
service by default, two sessions holding tunnels filled it, and from then on the daemon
could not accept a control connection (``nonoctl ps`` timed out), open an audit file or
launch anything, for every user, for as long as the sessions held on.

Two things close that:

* :func:`raise_limit`, at start: the daemon takes its hard ``RLIMIT_NOFILE`` as its soft
  one (it polls, it never selects), and remembers the limit it was started with, which the
  fork server gets back (:func:`inherited`) so that sessions keep it.
* :func:`for_sessions`: a descriptor that a session's traffic would get (an accepted proxy
  client, an upstream socket) at or above :func:`watermark` is closed at once. The kernel
  hands out the lowest free number, so a number that high means the table is nearly full;
  the rest of it stays for the daemon's own work. Checked against the limit in force at
  each call (one ``getrlimit``), so it holds however the daemon was started.

Standard library only: the fork server's entry point reads :func:`inherited`'s answer.
"""

from __future__ import annotations

import resource
from typing import Final

#: At least this many descriptors stay for the daemon: control connections (256 by default,
#: ``[daemon] max_connections``), audit files, launches.
RESERVE_MIN: Final = 256
#: ... or this share of the table, whichever is more (but never more than half of it).
RESERVE_SHARE: Final = 8

_inherited: tuple[int, int] | None = None


def raise_limit() -> None:
    """Take the hard descriptor limit as the soft one (once, at start)."""
    global _inherited
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _inherited is None:
        _inherited = (soft, hard)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # a hard limit the kernel refuses (over fs.nr_open): keep the soft one


def inherited() -> tuple[int, int] | None:
    """The limit the daemon was started with, if :func:`raise_limit` changed it."""
    if _inherited is None or _inherited == resource.getrlimit(resource.RLIMIT_NOFILE):
        return None
    return _inherited


def watermark() -> int:
    """The lowest descriptor number kept from sessions' traffic."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20  # the kernel's own ceiling (fs.nr_open's default)
    reserve = min(max(RESERVE_MIN, soft // RESERVE_SHARE), soft // 2)
    return soft - reserve


def for_sessions(fd: int) -> bool:
    """May a session's traffic keep descriptor ``fd``? No if it lies in the reserve."""
    return fd < watermark()
