"""Tunnels between plain sockets relayed by one thread outside trio's event loop.

Once a CONNECT is decided, audited and answered, nothing inspects its bytes: the two sockets
are handed to the pump, one thread for every tunnel of the process, which waits on them with
its own ``epoll`` (each socket registered once, its interest changed only when a direction
starts or stops waiting to write) and moves bytes with ``read``/``write`` for short exchanges
and ``splice(2)`` through the direction's own pipe once a read fills its buffer (a bulk
transfer). The handing task waits (:func:`pump`) without a pass through the event loop per
message; the thread wakes it once, when the tunnel has ended.

A tunnel ends when both directions have reached end of file (each half-closes the other side
when its source ends), when either side breaks, when no byte moved for ``idle_timeout``
seconds (on the real, monotonic clock: the thread's), or when the waiting task is cancelled:
the thread then drops the tunnel at once and wakes the task, which sees its cancellation.
Only the thread touches a tunnel's sockets while it is pumped; the caller closes them after.

Isolation: a tunnel's pipes are its own (made when a direction goes bulk, closed with the
tunnel); no buffer is shared between tunnels.

The thread also runs what :mod:`._fresh` gives it for the common fresh CONNECT (accepting,
reading the head, connecting upstream): descriptors watched with a callback
(:meth:`_Pump.watch`), one-shot timers (:meth:`_Pump.at`) and functions handed over from other
threads (:meth:`_Pump.call_soon`). Such a tunnel is added with an ``on_end`` callback, which
the thread calls when the tunnel ends, instead of a waiting task, and which closes its
sockets there and then (``closing``): the closes take them out of the epoll, and the last
direction to end leaves its FIN to the close. A tunnel the thread adds itself joins its set
at once; one from another thread is handed over (a queue and a lock), which a turn of the
thread looks at only when something is there.

With ``relay.c`` built (``libnonorelay.so``, ``make``), the thread waits through it: one call
waits on the epoll with the interpreter's lock given up and relays the short messages (and a
first end of file) of the tunnels Python holds nothing of itself ("routed": :meth:`_Pump.route`),
returning only what Python must do, each tunnel it concerns taken back first with its counts
(:meth:`_Pump._unrouted`). What Python then does is what its own loop does with the same
read; without the library the loop is Python's alone (:meth:`_Pump._turns`).
"""

from __future__ import annotations

import _socket
import contextlib
import ctypes
import errno
import fcntl
import functools
import heapq
import itertools
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Final, final

import outcome
import structlog
import trio

from .._descriptors import watermark

log = structlog.get_logger()

_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
_ERR: Final = select.EPOLLERR
_HUP: Final = select.EPOLLHUP
_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_NONBLOCK", 0) | getattr(os, "SPLICE_F_MOVE", 0)
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Linux), missing from older Pythons
#: A direction copies through userspace in reads of this size until one fills it.
_COPY_SIZE: Final = 1 << 16
#: What a bulk direction's pipe grows to (pipe pages count against the user's pipe quota, so
#: only bulk directions pay for it).
_BULK_PIPE: Final = 1 << 20
#: Bytes one direction moves per wake-up before the thread serves the other tunnels (epoll is
#: level-triggered: a socket still readable is reported again at once).
_TURN: Final = 1 << 22
#: The longest the thread waits without looking at its idle deadlines (a new tunnel's first
#: deadline is at least this far off unless its idle timeout is shorter: then it wakes it).
_MAX_WAIT: Final = 1.0
#: An empty view (of an empty, immutable ``bytes``: it holds no byte of any tunnel).
_NOTHING_HELD: Final = memoryview(b"")
#: ``relay.c`` built (``make``): the thread's wait and its tunnels' short messages in one
#: call without the interpreter's lock (:meth:`_Pump.route`); without it the loop is Python's
#: alone, relaying the same bytes the same way.
_NATIVE_LIBRARY: Final = "libnonorelay.so"
#: A record of ``nono_relay_wait`` (int64 fields): fd, events, peer (-1: it was not routed),
#: bytes moved from fd and from its peer while routed, the tunnel's last relay (ns), which
#: directions ended while routed (bit 0 fd's, bit 1 its peer's), kind, two arguments; at most
#: this many records per wait.
_RECORD: Final = 10
_RECORDS: Final = 64
# Record kinds (relay.c): an event to serve as polled; a source ended; a read or write error
# (errno, bytes read and not written); bytes read into the spill buffer (how many, how many of
# them written).
_PLAIN: Final = 0
_EOF: Final = 1
_ERROR: Final = 2
_SPILL: Final = 3
# Errors that mean the peer went away: the tunnel just ends.
_GONE: Final = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT,
                          errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNABORTED})


@final
class _Way:
    """One direction: bytes read from ``src`` and written to ``dst``."""

    # Until a step sets them: immutable class-level defaults, which an assignment shadows
    # per instance (a fresh request makes two directions: two stores each, not ten).
    #: _IN for its source, _OUT for its sink, 0 once it has ended
    waits = _IN
    pipe: tuple[int, int] | None = None
    chunk = _COPY_SIZE
    grown = False
    can_splice = True
    #: read, not yet written (copy mode); most directions start with nothing held
    held = _NOTHING_HELD
    piped = 0  # in the pipe, not yet spliced out (splice mode)
    moved = 0

    def __init__(self, src: int, dst: int, held: bytes = b"") -> None:
        self.src, self.dst = src, dst
        if held:
            self.held = memoryview(held)
            self.waits = _OUT


Sock = trio.socket.SocketType | _socket.socket


@final
class Tunnel:
    """Two connected sockets relayed by the pump. ``to_b``/``to_a``: bytes already read that
    the thread writes first (a CONNECT's trailing data, the rest of a short write). The
    thread calls ``on_end(tunnel)`` once the tunnel has ended (any thread's exception
    there is logged); ``error`` then holds an unexpected socket error, if any."""

    __slots__ = ("a", "b", "cancelled", "closing", "down", "ended", "error", "idle", "last",
                 "masks", "on_end", "routed", "socks", "up")

    def __init__(self, a: Sock, b: Sock, idle: float, on_end: Callable[[Tunnel], None], *,
                 to_b: bytes = b"", to_a: bytes = b"", closing: bool = False) -> None:
        self.a, self.b = fa, fb = a.fileno(), b.fileno()
        self.socks: dict[int, Sock] = {fa: a, fb: b}
        self.up, self.down = up, down = _Way(fa, fb, to_b), _Way(fb, fa, to_a)
        self.idle = idle
        self.last = time.monotonic()
        self.masks = (_IN, _IN) if not (to_a or to_b) else _masks(up, down)
        self.ended = False
        self.cancelled = False
        self.error: BaseException | None = None
        self.on_end = on_end
        #: ``on_end`` closes both sockets, in the thread, whatever happens: closing a socket
        #: takes it out of the epoll, so the thread spares the ``epoll_ctl`` calls.
        self.closing = closing
        #: Relayed by ``relay.c`` (:meth:`_Pump.route`): its counts and ``last`` are there.
        self.routed = False


def _routable(tunnel: Tunnel) -> bool:
    """Whether Python holds nothing of ``tunnel`` that ``relay.c`` would need: each direction
    has ended, or copies through userspace, holds nothing and waits to read; one has not
    ended."""
    up, down = tunnel.up, tunnel.down
    return (not tunnel.ended and (up.waits == _IN or down.waits == _IN)
            and (not up.waits or (up.waits == _IN and up.pipe is None and not up.held))
            and (not down.waits or (down.waits == _IN and down.pipe is None
                                    and not down.held)))


@functools.cache
def _native() -> ctypes.CDLL | None:
    """``libnonorelay.so`` beside this module, or None (not built: the loop stays Python's)."""
    path = Path(__file__).with_name(_NATIVE_LIBRARY)
    if not path.is_file():
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    return prototyped(lib)


def prototyped(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` (a build of relay.c) with its entry points' argument and result types."""
    handle, fd, address = ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
    lib.nono_relay_new.argtypes = ()
    lib.nono_relay_new.restype = handle
    lib.nono_relay_route.argtypes = (handle, fd, fd, ctypes.c_int)
    lib.nono_relay_route.restype = ctypes.c_int
    lib.nono_relay_unroute.argtypes = (handle, fd, address)
    lib.nono_relay_unroute.restype = ctypes.c_int
    lib.nono_relay_last.argtypes = (handle, fd)
    lib.nono_relay_last.restype = ctypes.c_int64
    lib.nono_relay_wait.argtypes = (handle, fd, ctypes.c_double, address, ctypes.c_int, address)
    lib.nono_relay_wait.restype = ctypes.c_int
    lib.nono_relay_add.argtypes = (handle, fd, fd, fd)
    lib.nono_relay_add.restype = ctypes.c_int
    lib.nono_relay_accept.argtypes = (fd,)
    lib.nono_relay_accept.restype = ctypes.c_int
    return lib


@functools.cache
def _unprototyped() -> ctypes.CDLL:
    """The library again, for the calls a fresh request makes (``nono_relay_wait``,
    ``nono_relay_add``, ``nono_relay_accept``) without ``argtypes``: ctypes then converts
    nothing (a wait cost 8.1 us through the prototype, 4.9 us so, with ``epoll.poll``'s 2.8-3.8
    in the same loop). Only the pump calls them, with exactly: ints (descriptors, counts),
    the table as a ``c_void_p``, the deadline as a ``c_double``, its own ctypes buffers."""
    return ctypes.CDLL(str(Path(__file__).with_name(_NATIVE_LIBRARY)))


def _masks(up: _Way, down: _Way) -> tuple[int, int]:
    """What the epoll waits for on a (up's source, down's sink) and b (the other way round);
    0 where nothing waits (a hung-up socket would otherwise be reported again and again)."""
    return ((up.waits & _IN) | (down.waits & _OUT), (down.waits & _IN) | (up.waits & _OUT))


def _nothing() -> None:
    return None


def _ended(_: Tunnel) -> None:
    return None


@final
class _Timer:
    __slots__ = ("alive", "callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline, self.callback, self.alive = deadline, callback, True

    def cancel(self) -> None:
        # A cancelled timer stays in the heap until its deadline: its callback (a bound
        # method, holding the session's proxy, route table and real secrets) goes now.
        self.alive = False
        self.callback = _nothing


@final
class _Pump:
    """The thread and what it owns: its epoll, the tunnels by socket, the idle sweep.

    With ``native`` (by default when ``relay.c`` is built) the thread waits through
    ``relay.c``, which relays the short messages of the tunnels routed there itself
    (:meth:`route`); with ``native=False`` the loop is Python's alone."""

    def __init__(self, native: bool | None = None) -> None:
        lib = None if native is False else _native()
        if native and lib is None:
            raise RuntimeError(f"{_NATIVE_LIBRARY} is not built (make)")
        self._lib = lib
        #: relay.c's table of routes (the thread's own; it lives as long as the thread)
        self._relay: int | None = None if lib is None else lib.nono_relay_new()
        if lib is not None and not self._relay:
            raise MemoryError("relay.c's table")
        fast = None if lib is None else _unprototyped()
        self._table = ctypes.c_void_p(self._relay)
        #: ``accept4`` of a listener: a non-blocking descriptor, or -errno (None: Python's)
        self.accept: Callable[[int], int] | None = None if fast is None else \
            fast.nono_relay_accept
        self._add = None if fast is None else fast.nono_relay_add
        self._records = (ctypes.c_int64 * (_RECORD * _RECORDS))()
        self._counts = (ctypes.c_int64 * 4)()
        self._spill = ctypes.create_string_buffer(_COPY_SIZE)
        self._epoll = select.epoll()
        self._epoll_fd = self._epoll.fileno()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, _IN)
        self._tunnels: dict[int, Tunnel] = {}  # by socket, for the events
        self._live: set[Tunnel] = set()  # the thread's own
        self._watched: dict[int, Callable[[int], None]] = {}  # the thread's own
        self._timers: list[tuple[float, int, _Timer]] = []  # a heap; the thread's own
        self._seq = itertools.count()
        self._next_sweep = 0.0
        self._lock = threading.Lock()  # guards the four below
        self._wake_at = 0.0
        self._new: deque[Tunnel] = deque()
        self._cancelled: deque[Tunnel] = deque()
        self._calls: deque[Callable[[], None]] = deque()
        thread = threading.Thread(target=self._run, name="nonod-proxy-pump", daemon=True)
        thread.start()
        self._ident = thread.ident

    # the caller's side (trio's thread)

    def add(self, tunnel: Tunnel) -> None:
        """Relay ``tunnel`` (from any thread); one that has ended already (cancelled before
        the call that adds it ran) is not added: nothing would ever end it again."""
        if tunnel.ended:
            return
        if threading.get_ident() == self._ident:  # the thread's own (a fresh CONNECT's)
            self.add_here(tunnel)
            return
        self._tunnels[tunnel.a] = self._tunnels[tunnel.b] = tunnel
        with self._lock:
            self._new.append(tunnel)
            wake = tunnel.last + tunnel.idle < self._wake_at
        self._register(tunnel)
        if wake:
            os.eventfd_write(self._wake, 1)

    def add_here(self, tunnel: Tunnel) -> None:
        """Relay ``tunnel``, from the thread itself (a fresh CONNECT's): it joins the set at
        once, and its next wait is computed after this."""
        self._tunnels[tunnel.a] = self._tunnels[tunnel.b] = tunnel
        self._live.add(tunnel)
        deadline = tunnel.last + tunnel.idle
        if deadline < self._next_sweep:
            self._next_sweep = deadline
        if self._add is not None and tunnel.masks == (_IN, _IN):
            # Neither direction begun: routed, and both sockets added, in one call.
            error = self._add(self._table, self._epoll_fd, tunnel.a, tunnel.b)
            if error:  # (as a failed register: its owner ends it)
                raise OSError(-error, os.strerror(-error))
            tunnel.routed = True
            return
        self._register(tunnel)

    def _register(self, tunnel: Tunnel) -> None:
        mask_a, mask_b = tunnel.masks
        if mask_a:
            self._epoll.register(tunnel.a, mask_a)
        if mask_b:
            self._epoll.register(tunnel.b, mask_b)

    def cancel(self, tunnel: Tunnel) -> None:
        """End ``tunnel`` at once, as cancelled (from any thread)."""
        with self._lock:
            self._cancelled.append(tunnel)
        os.eventfd_write(self._wake, 1)

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` in the thread, soon (from any thread; calls run in order)."""
        with self._lock:
            self._calls.append(call)
        os.eventfd_write(self._wake, 1)

    # the thread's own (only from calls, watchers and timers)

    def watch(self, fd: int, mask: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(events)`` whenever ``fd`` is ready for ``mask``."""
        self._watched[fd] = callback
        self._epoll.register(fd, mask)

    def unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def at(self, deadline: float, callback: Callable[[], None]) -> _Timer:
        """Call ``callback()`` once at ``deadline`` (``time.monotonic``), unless cancelled."""
        timer = _Timer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._seq), timer))
        return timer

    def end(self, tunnel: Tunnel) -> None:
        """End ``tunnel`` now, as cancelled."""
        tunnel.cancelled = True
        self._end(tunnel)

    def route(self, tunnel: Tunnel) -> None:
        """Let ``relay.c`` relay ``tunnel``'s short messages (if built, and if Python holds
        nothing of it): its waits return only what Python must do, and the tunnel is unrouted
        first, its counts and last relay back in the tunnel (:meth:`_unrouted`)."""
        if (self._relay is not None and not tunnel.routed and _routable(tunnel)
                and self._lib is not None  # (for mypy: set with _relay)
                and self._lib.nono_relay_route(self._relay, tunnel.a, tunnel.b,
                                               (not tunnel.up.waits)
                                               | (not tunnel.down.waits) << 1) == 0):
            tunnel.routed = True

    def _unroute(self, tunnel: Tunnel) -> None:
        """Take ``tunnel`` back from ``relay.c`` (before Python touches its directions or
        closes its sockets)."""
        if tunnel.routed and self._lib is not None:
            counts = self._counts
            peer = self._lib.nono_relay_unroute(self._relay, tunnel.a, ctypes.addressof(counts))
            tunnel.routed = False
            if peer >= 0:
                self._unrouted(tunnel, tunnel.a, counts[0], counts[1], counts[2], counts[3])

    @staticmethod
    def _unrouted(tunnel: Tunnel, fd: int, moved: int, moved_peer: int, last: int,
                  ended: int) -> None:
        """``relay.c`` let go of ``tunnel`` (``fd`` one of its sockets): what it relayed,
        and the directions whose source ended there (their sinks half-closed, their sources
        out of the epoll: the masks follow)."""
        tunnel.routed = False
        way, other = (tunnel.up, tunnel.down) if fd == tunnel.a else (tunnel.down, tunnel.up)
        way.moved += moved
        other.moved += moved_peer
        if ended:
            if ended & 1:
                way.waits = 0
            if ended & 2:
                other.waits = 0
            tunnel.masks = _masks(tunnel.up, tunnel.down)
        if last:
            tunnel.last = max(tunnel.last, last / 1e9)

    # the thread

    def _run(self) -> None:
        turns = self._turns if self._relay is None else self._native_turns
        while True:
            try:
                turns()
            except Exception:  # a bug must not stop every tunnel of the process
                log.exception("proxy.pump_failed")

    def _not_watched(self, fd: int) -> None:
        """An event of neither a tunnel nor a watcher: the wake-up, or a stray (a closing
        tunnel's socket left open by a bug), unregistered so the loop never spins on it."""
        if fd == self._wake:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
        else:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def _turn_start(self) -> tuple[float, float]:
        """(now, when the next wait must end): what was handed over taken under the lock,
        or, in the common turn where nothing was, without it."""
        if self._new or self._cancelled or self._calls:
            return self._take()
        now = time.monotonic()
        wake_at = self._next_sweep  # (as _wake_time has it)
        if wake_at > now + _MAX_WAIT:
            wake_at = now + _MAX_WAIT
        timers = self._timers
        if timers and timers[0][0] < wake_at:
            wake_at = timers[0][0]
        self._wake_at = wake_at
        if self._new or self._cancelled or self._calls:
            # Handed over meanwhile: ``add`` may have read the old ``_wake_at``.
            return self._take()
        return now, wake_at

    def _turns(self) -> None:
        """Turn after turn, until a bug raises. (One loop, its lookups in locals: a fresh
        request takes about three turns.)"""
        poll, tunnels, watched, timers = self._epoll.poll, self._tunnels, self._watched, \
            self._timers
        monotonic, serve = time.monotonic, self._serve
        while True:
            now, wake_at = self._turn_start()
            # The watched descriptors first (a fresh request's accept, head and connect),
            # then the tunnels: a request's answer does not wait behind the end of an
            # earlier tunnel reported in the same turn.
            ready: list[tuple[Tunnel, int, int]] = []
            for fd, events in poll(wake_at - now if wake_at > now else 0.0):
                served = tunnels.get(fd)
                if served is not None:
                    ready.append((served, fd, events))
                    continue
                watcher = watched.get(fd)
                if watcher is not None:
                    _guarded(watcher, events)
                else:
                    self._not_watched(fd)
            for served, fd, events in ready:
                if served.ended:
                    continue
                try:
                    serve(served, fd, events)
                except Exception as exc:  # noqa: BLE001 - handed to the tunnel's owner
                    served.error = exc
                    self._end(served)
            now = monotonic()
            while timers and timers[0][0] <= now:
                _fire(heapq.heappop(timers)[2])
            if now >= self._next_sweep:
                self._sweep(now)
            # Nothing of this turn stays named while the next poll blocks: an ended
            # connection (its watcher a bound method of it) goes by reference counts now,
            # not at the next event, which may be a long time coming.
            watcher = served = None
            ready.clear()

    def _native_turns(self) -> None:
        """:meth:`_turns` with the wait (and the routed tunnels' short messages) in
        ``relay.c``: what it returns is served as :meth:`_turns` serves what it polls."""
        wait, table, epfd = _unprototyped().nono_relay_wait, self._table, self._epoll.fileno()
        records, spill = self._records, self._spill
        spilled = ctypes.addressof(spill)
        deadline = ctypes.c_double()
        fields = memoryview(records).cast("B").cast("q")
        tunnels, watched, timers = self._tunnels, self._watched, self._timers
        monotonic, serve, relayed, unrouted = (time.monotonic, self._serve, self._relayed,
                                               self._unrouted)
        while True:
            now, wake_at = self._turn_start()
            deadline.value = wake_at
            count = wait(table, epfd, deadline, records, _RECORDS, spill)
            if count < 0:
                raise OSError(-count, os.strerror(-count))
            ready: list[tuple[Tunnel, int, int, int, int, int, bytes]] = []
            got = fields[:count * _RECORD].tolist()
            for at in range(0, count * _RECORD, _RECORD):
                fd, events, peer, _, _, _, _, kind, arg1, arg2 = got[at:at + _RECORD]
                served = tunnels.get(fd)
                if served is not None:
                    if peer >= 0:
                        unrouted(served, fd, got[at + 3], got[at + 4], got[at + 5],
                                 got[at + 6])
                    # (the spill buffer is written again at the next wait: copied now)
                    data = ctypes.string_at(spilled, arg1) if kind == _SPILL else b""
                    ready.append((served, fd, events, kind, arg1, arg2, data))
                    continue
                watcher = watched.get(fd)
                if watcher is not None:
                    _guarded(watcher, events)
                else:
                    self._not_watched(fd)
            for served, fd, events, kind, arg1, arg2, data in ready:
                if served.ended:
                    continue
                try:
                    if served.routed:
                        # Never served while relay.c relays it: a record of a socket number
                        # that a watcher of this wait closed and gave to a tunnel it added.
                        self._unroute(served)
                    if kind == _PLAIN:
                        serve(served, fd, events)
                    else:
                        relayed(served, fd, kind, arg1, arg2, data)
                except Exception as exc:  # noqa: BLE001 - handed to the tunnel's owner
                    served.error = exc
                    self._end(served)
            # Routed again only once every record of this wait is served: a later record may
            # be of the same tunnel (its other socket, unrouted with it), and Python must not
            # serve a tunnel relay.c relays (it held bytes relay.c then passed by, or waited
            # on a socket relay.c had taken out of the epoll: bytes reordered, lost, a
            # tunnel stuck; the thirty-sixth pass).
            for served, *_ in ready:
                if not served.routed and not served.ended and _routable(served):
                    self.route(served)
            now = monotonic()
            while timers and timers[0][0] <= now:
                _fire(heapq.heappop(timers)[2])
            if now >= self._next_sweep:
                self._sweep(now)
            watcher = served = None  # (as in _turns)
            ready.clear()
            got.clear()
            data = b""

    def _relayed(self, tunnel: Tunnel, fd: int, kind: int, arg1: int, arg2: int,
                 data: bytes) -> None:
        """What ``relay.c`` did with a readable ``fd`` of ``tunnel`` and left to Python (the
        tunnel unrouted): as :meth:`_serve` would have gone on after the same read."""
        up, down = tunnel.up, tunnel.down
        way = up if fd == tunnel.a else down
        if kind == _EOF:
            try:
                self._source_ended(tunnel, way)
            except OSError as exc:  # (as in _move: the sink's peer gone ends the tunnel)
                if exc.errno not in _GONE:
                    raise
                self._end(tunnel)
                return
        elif kind == _ERROR:  # errno arg1, after arg2 bytes were read (as _move counts them)
            way.moved += arg2
            if arg1 in _GONE:
                self._end(tunnel)
                return
            raise OSError(arg1, os.strerror(arg1))
        elif not self._move(tunnel, way, data, arg2):  # _SPILL: read, arg2 of it written
            return
        if not up.waits and not down.waits:
            self._end(tunnel)
            return
        self._remask(tunnel)

    def _wake_time(self, now: float) -> float:
        """When the thread must wake at the latest: the next idle deadline or timer."""
        wake_at = min(self._next_sweep, now + _MAX_WAIT)
        if self._timers and self._timers[0][0] < wake_at:
            wake_at = self._timers[0][0]
        return wake_at

    def _take(self) -> tuple[float, float]:
        """Take what other threads handed over (new tunnels, cancellations, calls), run
        it, and publish when the thread wakes next: the time now and that."""
        cancelled: list[Tunnel] | None = None
        calls: list[Callable[[], None]] | None = None
        with self._lock:
            while self._new:
                tunnel = self._new.popleft()
                self._live.add(tunnel)
                self._next_sweep = min(self._next_sweep, tunnel.last + tunnel.idle)
                if self._relay is not None:
                    self.route(tunnel)
            if self._cancelled:
                cancelled = list(self._cancelled)
                self._cancelled.clear()
            if self._calls:
                calls = list(self._calls)
                self._calls.clear()
            now = time.monotonic()
            # What cancellations and calls do may want a turn sooner: no wait this time.
            wake_at = now if cancelled or calls else self._wake_time(now)
            self._wake_at = wake_at
        for tunnel in cancelled or ():
            # (each on its own: a failure of one must not lose the others, nor the calls
            # taken out of the queue with them, a tunnel's add among them)
            _guarded(self.end, tunnel)
        for call in calls or ():
            _guarded(call)
        return now, wake_at

    def _serve(self, tunnel: Tunnel, fd: int, events: int) -> None:
        up, down = tunnel.up, tunnel.down
        way = up if fd == tunnel.a else down
        if events == _IN and way.waits == _IN:
            # Readable only, and the direction reading from ``fd`` waits for that (a
            # message's turn): that direction alone; the epoll's masks stand while it waits
            # as before.
            if not self._move(tunnel, way) or way.waits == _IN:
                return
        else:
            if events & _ERR:
                error = tunnel.socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error in _GONE:
                    self._end(tunnel)
                    return
                if error:
                    raise OSError(error, os.strerror(error))
            hangup = events & _HUP
            for way in (up, down):
                if (way.waits and (hangup or fd == (way.src if way.waits == _IN else way.dst))
                        and not self._move(tunnel, way)):
                    return
        if not up.waits and not down.waits:
            self._end(tunnel)
            return
        self._remask(tunnel)

    def _remask(self, tunnel: Tunnel) -> None:
        """The epoll waits for what the tunnel's directions wait for now."""
        up, down = tunnel.up, tunnel.down
        masks = ((up.waits & _IN) | (down.waits & _OUT), (down.waits & _IN) | (up.waits & _OUT))
        if masks != tunnel.masks:  # (as _masks has them)
            for sock, old, new in zip((tunnel.a, tunnel.b), tunnel.masks, masks, strict=True):
                if old == new:
                    continue
                if not new:
                    self._epoll.unregister(sock)
                elif not old:
                    self._epoll.register(sock, new)
                else:
                    self._epoll.modify(sock, new)
            tunnel.masks = masks

    def _move(self, tunnel: Tunnel, way: _Way, data: bytes | None = None, sent: int = -1
              ) -> bool:
        """Move what can move now, then leave ``way.waits`` at what it waits for; False if
        the tunnel ended for a peer gone. ``data``: read already (by ``relay.c``), of which
        ``sent`` bytes were written."""
        try:
            if way.pipe is None and not way.held:
                # Copying, nothing held: read at once; a short read (a message, not a bulk
                # transfer) is written on straight away, with nothing kept past this call.
                if data is None:
                    try:
                        data = os.read(way.src, _COPY_SIZE)
                    except BlockingIOError:
                        way.waits = _IN
                        return True
                n = len(data)
                if n == 0:
                    self._source_ended(tunnel, way)
                    return True
                way.moved += n
                tunnel.last = time.monotonic()
                if n < _COPY_SIZE:
                    if sent < 0:
                        try:
                            sent = os.write(way.dst, data)
                        except BlockingIOError:
                            sent = 0
                    if sent == n:
                        way.waits = _IN
                    else:
                        way.held = memoryview(data)[sent:]
                        way.waits = _OUT
                    return True
                way.held = memoryview(data)  # a full read: a bulk transfer, perhaps
                if way.can_splice:
                    _go_bulk(way)
                self._bulk(tunnel, way, n)
            else:
                self._bulk(tunnel, way, 0)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._end(tunnel)
            return False
        return True

    def _bulk(self, tunnel: Tunnel, way: _Way, turn: int) -> None:
        """Write what ``way`` holds, and move on while its source has more and ``turn``
        (bytes moved in this turn so far) is under ``_TURN``."""
        emptied = False
        while True:
            if (way.held or way.piped) and not _flush(way):
                way.waits = _OUT
                return
            if emptied or turn >= _TURN:
                way.waits = _IN  # the source was emptied (or the turn is over): wait for it
                return
            got = _fill(way)
            if got is None:
                way.waits = _IN
                return
            if got == 0:
                self._source_ended(tunnel, way)
                return
            turn += got
            way.moved += got
            tunnel.last = time.monotonic()
            emptied = got < way.chunk

    @staticmethod
    def _source_ended(tunnel: Tunnel, way: _Way) -> None:
        """``way``'s source reached end of file (all it read is written): half-close its
        sink, unless the tunnel ends now and its sink is closed at once (the close sends the
        FIN; nothing is left unread on it, its own direction having ended)."""
        other = tunnel.down if way is tunnel.up else tunnel.up
        if other.waits or not tunnel.closing:
            tunnel.socks[way.dst].shutdown(socket.SHUT_WR)
        way.waits = 0

    def _sweep(self, now: float) -> None:
        """End the tunnels idle for their timeout; the next sweep is at the earliest of the
        others' deadlines."""
        earliest = now + _MAX_WAIT
        for tunnel in list(self._live):
            deadline = tunnel.last + tunnel.idle
            if deadline <= now and tunnel.routed and self._lib is not None:
                last = self._lib.nono_relay_last(self._relay, tunnel.a)  # relay.c's relays
                if last >= 0:
                    tunnel.last = max(tunnel.last, last / 1e9)
                    deadline = tunnel.last + tunnel.idle
            if tunnel.ended:
                self._live.discard(tunnel)
            elif deadline <= now:
                self._end(tunnel)
            else:
                earliest = min(earliest, deadline)
        with self._lock:
            self._next_sweep = earliest

    def _end(self, tunnel: Tunnel) -> None:
        if tunnel.ended:
            return
        if tunnel.routed:  # (most often unrouted already, by the record that ends it)
            self._unroute(tunnel)  # its counts back, before its sockets may be closed
        tunnel.ended = True
        self._live.discard(tunnel)
        for fd in (tunnel.a, tunnel.b):  # (not there: ended before its add was taken)
            if self._tunnels.get(fd) is tunnel:
                del self._tunnels[fd]
        if not tunnel.closing:
            for sock, mask in zip((tunnel.a, tunnel.b), tunnel.masks, strict=True):
                if mask:
                    with contextlib.suppress(OSError):  # never left waiting for want of this
                        self._epoll.unregister(sock)
        if tunnel.up.pipe is not None or tunnel.down.pipe is not None:
            for way in (tunnel.up, tunnel.down):
                if way.pipe is not None:
                    os.close(way.pipe[0])
                    os.close(way.pipe[1])
                    way.pipe = None
        on_end, tunnel.on_end = tunnel.on_end, _ended
        # (called once; let go of it: a fresh CONNECT's ``on_end`` holds its connection,
        # which holds the tunnel, a cycle that only the garbage collector would free)
        _guarded(on_end, tunnel)


def _fire(timer: _Timer) -> None:
    """A timer come due, once (its callback, :func:`_guarded`)."""
    if timer.alive:
        timer.alive = False
        _guarded(timer.callback)


def _guarded(call: Callable[..., None], *args: object) -> None:
    """``call(*args)``; an exception is a bug in it, logged: it must not stop every tunnel of
    the process."""
    try:
        call(*args)
    except Exception:
        log.exception("proxy.pump_call_failed")


def _fill(way: _Way) -> int | None:
    """Read from the direction's source (into its pipe once bulk): bytes read, 0 at end of
    file, None when nothing is there."""
    if way.pipe is None:
        try:
            data = os.read(way.src, _COPY_SIZE)
        except BlockingIOError:
            return None
        way.held = memoryview(data)
        if len(data) == _COPY_SIZE and way.can_splice:
            _go_bulk(way)
        return len(data)
    try:
        n = os.splice(way.src, way.pipe[1], way.chunk, flags=_SPLICE_FLAGS)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        # This socket type cannot splice: go on copying through userspace.
        os.close(way.pipe[0])
        os.close(way.pipe[1])
        way.pipe, way.can_splice, way.chunk = None, False, _COPY_SIZE
        return _fill(way)
    if n == way.chunk and not way.grown:
        way.grown = True
        with contextlib.suppress(OSError):  # over the user's pipe quota: keep the pipe
            way.chunk = fcntl.fcntl(way.pipe[1], _F_SETPIPE_SZ, _BULK_PIPE)
    way.piped = n
    return n


def _go_bulk(way: _Way) -> None:
    """Give ``way`` its pipe for ``splice``; without one (its descriptors would lie in the
    daemon's reserve, ``nonod._descriptors``, or the table is full) it copies through
    userspace from now on: a session's tunnels never take the descriptors the daemon serves
    its control connections and launches with."""
    try:
        pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        way.can_splice = False
        return
    if max(pipe) >= watermark():
        os.close(pipe[0])
        os.close(pipe[1])
        way.can_splice = False
        return
    way.pipe = pipe


def _flush(way: _Way) -> bool:
    """Write what the direction holds to its sink: True once all of it is written."""
    try:
        while way.held:
            way.held = way.held[os.write(way.dst, way.held):]
        while way.piped and way.pipe is not None:
            way.piped -= os.splice(way.pipe[0], way.dst, way.piped, flags=_SPLICE_FLAGS)
    except BlockingIOError:
        return False
    return True


_pump: _Pump | None = None
_pump_lock = threading.Lock()


def the_pump() -> _Pump:
    """The process's pump (started at the first call)."""
    global _pump
    if _pump is None:
        with _pump_lock:
            if _pump is None:
                _pump = _Pump()
    return _pump


@final
class Moved:
    """Bytes a relay moved each way, kept when it is cancelled (for the audit record of a
    tunnel cut by its session's end)."""

    __slots__ = ("to_client", "to_upstream")

    def __init__(self) -> None:
        self.to_upstream = 0
        self.to_client = 0


async def pump(a: trio.socket.SocketType, b: trio.socket.SocketType, *,
               idle_timeout: float, moved: Moved | None = None) -> tuple[int, int]:
    """Relay between the connected sockets ``a`` (the client's) and ``b`` (the upstream's) in
    the pump thread until the tunnel ends (see the module docstring); returns ``(bytes a to
    b, bytes b to a)``, also left in ``moved``. Cancelled, it returns only once the thread has
    let go of both sockets (at once) and then raises ``Cancelled``, with what was moved until
    then in ``moved``; an unexpected socket error is raised here."""
    await trio.lowlevel.checkpoint_if_cancelled()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def wake(_: Tunnel) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Value(None))

    tunnel = Tunnel(a, b, idle_timeout, wake)
    pump_ = the_pump()
    pump_.add(tunnel)

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        pump_.cancel(tunnel)
        return trio.lowlevel.Abort.FAILED  # the thread wakes us once it has let go

    await trio.lowlevel.wait_task_rescheduled(abort)
    if moved is not None:
        moved.to_upstream, moved.to_client = tunnel.up.moved, tunnel.down.moved
    if tunnel.error is not None:
        raise tunnel.error
    if tunnel.cancelled:
        await trio.lowlevel.checkpoint_if_cancelled()
    return tunnel.up.moved, tunnel.down.moved
