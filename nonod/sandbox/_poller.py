"""The fork server's poller: ``select.poll``'s interface on an epoll set.

The fork server watches a few descriptors of its own and several for every live session
(the guard hub's client socket, the adopted init's pidfd...): about five per session, 4500
with 900 sessions live. ``poll(2)`` hands the kernel every one of them at each wake-up and
the kernel asks each file whether it is ready, so the server's cost per launch grew with
the sessions alive (at 900 live, the polls were about 45% of its CPU: docs/benchmarks.md,
``fleet2``). An epoll set is told once and reports the ready ones only.

What differs from ``select.poll`` and matters here: a descriptor must be unregistered before
it is closed (a child forked meanwhile may still hold the file, and epoll would go on
reporting it under the old number); every caller of the fork server's poller does so
already, as a closed descriptor left in a ``select.poll`` set is reported (POLLNVAL) at
every wake-up. ``register`` of a registered descriptor changes its mask, as ``poll``'s does.
"""

from __future__ import annotations

import errno
import math
import select
from typing import Protocol, final


class FileLike(Protocol):
    def fileno(self) -> int: ...


class Poller(Protocol):
    """What the fork server and its guard hub use of a poller (``select.poll`` has it)."""

    def register(self, fd: int | FileLike, eventmask: int = ..., /) -> None: ...

    def unregister(self, fd: int | FileLike, /) -> None: ...

    def poll(self, timeout: float | None = ..., /) -> list[tuple[int, int]]: ...


def _fd(fd: int | FileLike) -> int:
    return fd if isinstance(fd, int) else fd.fileno()


@final
class EPoller:
    """``select.poll`` on epoll: ``poll`` takes milliseconds (None or negative: no bound);
    the event bits are poll's (``EPOLLIN`` is ``POLLIN``...)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()  # close-on-exec: no launcher keeps it

    def register(self, fd: int | FileLike,
                 eventmask: int = select.POLLIN | select.POLLPRI | select.POLLOUT) -> None:
        try:
            self._epoll.register(_fd(fd), eventmask)
        except FileExistsError:
            self._epoll.modify(_fd(fd), eventmask)

    def unregister(self, fd: int | FileLike) -> None:
        """Raises KeyError for a descriptor that is not registered, as ``poll``'s."""
        try:
            self._epoll.unregister(_fd(fd))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EBADF):
                raise KeyError(_fd(fd)) from None
            raise

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        wait = -1.0 if timeout is None or timeout < 0 else math.ceil(timeout) / 1000
        return self._epoll.poll(wait)

    def close(self) -> None:
        self._epoll.close()
