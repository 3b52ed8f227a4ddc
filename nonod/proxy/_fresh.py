"""The common fresh CONNECT, served by the pump thread from accept to relay.

A proxied request costs its client the proxy's time between the connection and the first
relayed byte. On trio's path that is the accept loop's wake-up, a handler task, several passes
through the event loop and two hand-overs between trio's thread and the pump's. Here the pump
thread (:mod:`._pump`) watches the listener itself and, for each connection it accepts:

1. admits it against the session's connection cap (:meth:`ProxyServer._admit`, shared with
   trio's path; over the cap, trio's path answers 503);
2. reads the head: at once if it is there, else when the socket becomes readable, at most
   until the head timeout;
3. takes it only if it is a plain CONNECT (:func:`._connect_head.parse_connect`) that the
   usual checks allow, in their usual order (:meth:`ProxyServer.fresh_plan`: authentication,
   the header count, no body, :func:`._decide.decide`, and the address of a pinned name or an
   address literal, checked by :meth:`Resolver.resolve_now`);
4. connects to exactly that address without blocking (within the connect timeout; the next
   address after a failure), answers ``200``, reports the tunnel open, and relays it; when the
   tunnel ends, closes both sockets and reports it closed with its totals.

Anything else, including every refusal the checks would make, a name that needs a DNS lookup,
an approval, a head that is not complete in its first read, or a head that did not come in
time, is handed to trio's path with the bytes already read (:meth:`ProxyServer.adopt`),
which answers exactly as it does for a connection it accepted itself. A connect failure or
timeout after the checks is answered here with the same response, built by the same code
(:func:`refusal`), and the same event.

Events go to the session's ``events`` in trio's thread, in order, within ``REPORT_DELAY``
(:meth:`_Acceptor.post`; :meth:`ProxyServer.report` counts them as trio's path counts its
own), and always before any event trio's path reports later: each is posted in one step with
the action the client sees (the 200, the close), and trio's path delivers what was posted
before each of its own events (``ProxyServer.deliver_fresh``). The sockets are closed, and
the connection released from the cap, when the tunnel ends, before its ``close`` event
reaches ``events``.

Cancelling :func:`serve_fresh` stops accepting and closes every connection it holds, as
cancelling trio's path does: a request already decided (a tunnel, a connection under way)
gets a ``close`` event with reason ``session_ended`` and the bytes it moved.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import functools
import os
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NoReturn, TypeAlias, final

import h11
import outcome
import structlog
import trio

from .._accept import PAUSE, RETRY_ERRNOS
from .._descriptors import watermark
from ._allowlist import ProxyPolicy
from ._buffers import bound_buffers
from ._connect_head import ESTABLISHED, ConnectHead, parse_connect
from ._decide import Decision, Reason
from ._events import Exchange, NetworkEvent, open_template
from ._http import error_response
from ._pump import Tunnel, _Pump, _Timer, the_pump
from ._resolve import Resolved, start_connect

if TYPE_CHECKING:
    from ._server import ProxyServer

log = structlog.get_logger()

_READ_SIZE: Final = 1 << 16
#: How long events wait in the pump thread for others to go to trio's thread with them (each
#: delivery is a wake-up of trio's loop and a few hand-overs of the GIL between the threads,
#: during which the pump waits: 2 ms cost a fresh request about 50 us of CPU time more than
#: 50 ms; 10 ms: about 20 us). An audit record comes at most this late; the session's end
#: delivers what is posted at once.
REPORT_DELAY: Final = 0.05
#: Plans kept per proxy, and the longest head kept: at most 64 KiB per session. Reading and
#: checking a head costs a fresh request about 40 us on this path (in place, caches cold).
_PLANS: Final = 32
_PLANNED_HEAD: Final = 2048

#: A request's head, its decision, where to connect, and its tunnel's open event for the
#: first of those addresses but for the time (:func:`._events.open_template`; None without
#: an address).
_Plan: TypeAlias = tuple[ConnectHead, Decision, Resolved, NetworkEvent | None]
#: A socket's type for a descriptor made non-blocking by its ``accept4``: the socket object
#: takes it as non-blocking without a system call of its own.
_NONBLOCKING_STREAM: Final = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


def fresh_available() -> bool:
    """Whether this system relays tunnels in the pump (as :func:`._relay.relay` does)."""
    return hasattr(os, "splice")


def refusal(conn: h11.Connection | ConnectHead, status: int, reason: Reason) -> bytes:
    """Our error response to the request read by ``conn``, as h11 writes it; empty when h11
    cannot answer in its state (the connection is then just closed)."""
    response, body = error_response(status, reason)
    if isinstance(conn, ConnectHead):
        conn = conn.h11()
    try:
        data = conn.send(response) or b""
        data += conn.send(h11.Data(data=body)) or b""
        return data + (conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError:
        return b""


def address_text(address: str, port: int) -> str:
    """``address:port`` for an event, IPv6 in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def serve_fresh(server: ProxyServer, listener: int, nursery: trio.Nursery) -> NoReturn:
    """Accept on the listening socket ``listener`` in the pump thread for ``server`` until
    cancelled (see the module docstring); connections handed over are served in tasks of
    ``nursery``. An accept error other than a shortage of resources is raised here. The
    caller keeps ``listener`` open until this returns."""
    acceptor = _Acceptor(server, listener, the_pump(), nursery)
    acceptor.pump.call_soon(acceptor.start)

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        acceptor.pump.call_soon(acceptor.stop)
        return trio.lowlevel.Abort.FAILED  # woken once the thread has let go of everything

    await trio.lowlevel.wait_task_rescheduled(abort)
    if acceptor.error is not None:
        raise acceptor.error
    await trio.lowlevel.checkpoint_if_cancelled()
    raise AssertionError("the pump let go of a listener that was not cancelled")


@final
class _Acceptor:
    """One proxy's listener in the pump thread, and the connections it holds. Every method
    but the constructor runs in the pump thread."""

    def __init__(self, server: ProxyServer, listener: int, pump: _Pump,
                 nursery: trio.Nursery) -> None:
        self.server = server
        self._nursery = nursery
        self.pump = pump
        self.limits = server._limits
        self.error: OSError | None = None
        self.live: set[_Fresh] = set()
        self._fd = os.dup(listener)  # ours: the caller closes its own after we let go
        self._listener = socket.socket(fileno=self._fd)
        self._family = int(self._listener.family)
        self._retry: _Timer | None = None
        self._stopped = False
        #: Whether the listener passes ``TCP_NODELAY`` and the buffers' bound on to the
        #: connections the kernel completes (it copies its options into each).
        self.inherits = False
        self._queued = 0  # connections queued before it did (at most)
        self._posted: deque[NetworkEvent] = deque()
        self._plans: dict[bytes, tuple[ProxyPolicy, _Plan]] = {}  # the pump thread's
        #: Held by the pump thread across a client-visible step and the post of its event,
        #: and by trio's thread while it takes what was posted (re-entrant: ``post`` in it).
        self.posting = threading.RLock()
        server.deliver_fresh = self._deliver  # before each event of trio's path
        self._task = trio.lowlevel.current_task()
        self._trio = trio.lowlevel.current_trio_token()

    def start(self) -> None:
        if not self._stopped:
            self._listener.setblocking(False)
            # The sockets it accepts inherit them from the listener (the kernel copies the
            # listener's options into each connection it completes): calls per proxy rather
            # than per connection, except for those completed before, already in its queue,
            # which get them one by one. (The program runs before the daemon serves its
            # listener: what it connected meanwhile has the kernel's own buffers, and a
            # stalled upload through it held up to tcp_rmem's maximum.)
            self.inherits = _no_delay(self._listener) and bound_buffers(self._listener)
            self._queued = _queue_length(self._listener) if self.inherits else 0
            self.pump.watch(self._fd, select.EPOLLIN, self._accept)

    def stop(self) -> None:
        """Let go of the listener and close every connection held; wake the waiting task."""
        if self._stopped:
            return
        self._stopped = True
        self.pump.unwatch(self._fd)
        if self._retry is not None:
            self._retry.cancel()
        with contextlib.suppress(OSError):  # no more connections: refused from now on
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for fresh in list(self.live):
            fresh.drop()
        self._send()  # what was posted, before the waiting task wakes
        try:
            self._trio.run_sync_soon(trio.lowlevel.reschedule, self._task, outcome.Value(None))
        except trio.RunFinishedError:
            pass

    def plan(self, data: bytes) -> _Plan | None:
        """The head in ``data``, the decision and where to connect, if this path takes the
        request (:meth:`ProxyServer.fresh_plan`). Plans of heads that came alone are kept
        (at most ``_PLANS``, for the policy in force): a client sends the very same head for
        each connection to a host, and the same bytes get the same plan."""
        policy = self.server.policy
        kept = self._plans.get(data)
        if kept is not None and kept[0] is policy:
            return kept[1]
        head = parse_connect(data, self.limits.max_head_bytes) if data else None
        decided = None if head is None else self.server.fresh_plan(head)
        if head is None or decided is None:
            return None
        decision, resolved = decided
        first = resolved.addresses[0] if resolved.addresses else None
        plan = (head, decision, resolved,
                None if first is None else open_template(decision, address_text(*first)))
        if not head.trailing and len(data) <= _PLANNED_HEAD:
            if len(self._plans) >= _PLANS:
                self._plans.clear()
            self._plans[data] = (policy, plan)
        return plan

    def hand_over(self, client: _socket.socket, data: bytes | None, accepted: float,
                  admitted: bool, conn: int) -> None:
        """Trio's path serves ``client`` from here (:meth:`ProxyServer.adopt`), as the
        standard library's socket that trio takes."""
        sock = socket.socket(self._family, socket.SOCK_STREAM, 0, client.detach())
        try:
            self._trio.run_sync_soon(self.server.adopt, self._nursery, sock, data, accepted,
                                     admitted, conn)
        except trio.RunFinishedError:
            sock.close()
            self.server.release(not admitted)

    def post(self, event: NetworkEvent) -> None:
        """``event`` goes to the proxy's ``events`` in trio's thread within
        ``REPORT_DELAY``, after every event posted before it (one wake-up of trio's loop for
        all those posted meanwhile). The caller holds ``posting``: each event is posted in
        one step with the action the client sees."""
        posted = self._posted
        posted.append(event)
        if len(posted) == 1:  # else a delivery is on its way already
            self.pump.at(time.monotonic() + REPORT_DELAY, self._send)

    def _send(self) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # then no one is left to tell
            self._trio.run_sync_soon(self._deliver)

    def _deliver(self) -> None:  # in trio's thread
        with self.posting:
            posted = list(self._posted)
            self._posted.clear()
        for event in posted:
            try:
                self.server.report(event)
            except Exception:  # a run_sync_soon callback must not raise
                log.exception("proxy.event_failed")

    def _accept(self, _: int) -> None:
        """One connection per wake-up: the listener's epoll is level-triggered, so more
        waiting connections wake the thread again at once (after its tunnels' turn), and a
        fresh request is spared the ``accept`` that finds none, and its exception."""
        accept = self.pump.accept
        try:
            if accept is not None:  # relay.c's: non-blocking already, no peer address made
                fd = accept(self._fd)
                if fd < 0:
                    raise OSError(-fd, os.strerror(-fd))
                kind = _NONBLOCKING_STREAM
            else:
                # (not ``accept()``: it makes enums of the listener's family and type)
                fd, _peer = self._listener._accept()  # type: ignore[attr-defined]
                kind = socket.SOCK_STREAM
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):  # (relay.c's BlockingIOError)
                return
            if exc.errno not in RETRY_ERRNOS:
                self.error = exc
                self.stop()
                return
            log.error("proxy.accept_backoff", errno=errno.errorcode.get(exc.errno or 0),
                      error=os.strerror(exc.errno or 0), retry_in=PAUSE)
            self.pump.unwatch(self._fd)
            self._retry = self.pump.at(time.monotonic() + PAUSE, self.start)
            return
        # The C type, not its ``socket.socket`` subclass: no Python steps to make or close it
        # (a request handed to trio's path gets the subclass then). Non-blocking from here.
        try:
            sock = _socket.socket(self._family, kind, 0, fd)
        except OSError:
            os.close(fd)
            raise
        if kind != _NONBLOCKING_STREAM:
            sock.setblocking(False)
        if not self.inherits or self._queued > 0:
            self._queued -= 1
            _no_delay(sock)
            bound_buffers(sock)
        below = watermark()  # one look at the descriptor limit for both of its sockets
        admitted, conn = self.server._admit(fd, below)
        if admitted is None:
            sock.close()  # a flood, or the daemon's reserve: not even a 503 for this one
        elif not admitted:
            self.hand_over(sock, None, time.monotonic(), False, conn)
        else:
            fresh = _Fresh(self, sock, conn, below)
            fresh.guarded(fresh.begin)


@final
class _Fresh:
    """One admitted connection until it is handed over, refused or its tunnel has ended."""

    # Until a step sets them (immutable class-level defaults: fewer steps per request).
    head: ConnectHead | None = None
    addresses: list[tuple[str, int]]  # set with the plan, before any connect
    deadline = 0.0
    upstream: _socket.socket | None = None
    watching: int | None = None
    timer: _Timer | None = None
    tunnel: Tunnel | None = None
    #: the plan's open event for its first address (set with the plan), then the one sent
    opened: NetworkEvent | None = None
    closed = False

    def __init__(self, owner: _Acceptor, sock: _socket.socket, conn: int, below: int
                 ) -> None:
        self.owner = owner
        self.below = below
        self.server = owner.server
        self.pump = owner.pump
        self.client = sock
        self.conn = conn
        self.accepted = now = time.monotonic()
        self.exchange = Exchange(started=now, clock=time.monotonic)
        owner.live.add(self)

    # the head

    def begin(self) -> None:
        try:
            data = self.client.recv(_READ_SIZE)  # (as _read, without its call)
        except BlockingIOError:
            self._wait(self.client.fileno(), select.EPOLLIN, self._readable,
                       self.accepted + self.owner.limits.head_timeout, self._too_slow)
            return
        except OSError:
            data = b""  # the client is gone: trio's path reads its end, as it would
        self._plan(data)

    def _read(self) -> bytes | None:
        try:
            return self.client.recv(_READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""  # the client is gone: trio's path reads its end, as it would

    def _readable(self, _: int) -> None:
        data = self._read()
        if data is not None:
            self._settle()
            self.guarded(self._plan, data)

    def _too_slow(self) -> None:
        self.guarded(self._hand_over)

    def _plan(self, data: bytes) -> None:
        plan = self.owner.plan(data)
        if plan is None:
            self._hand_over(data)
            return
        self.head, decision, resolved, self.opened = plan
        exchange = self.exchange  # filled as trio's path fills it
        exchange.method, exchange.mode = "CONNECT", "connect"
        exchange.host, exchange.port, exchange.decision = decision.host, decision.port, decision
        self.addresses = list(resolved.addresses)
        self.deadline = time.monotonic() + self.owner.limits.connect_timeout
        self._connect_next()

    def _hand_over(self, data: bytes | None = None) -> None:
        """Trio's path serves the connection from here (after the head timeout: with its
        deadline passed, so it answers 408)."""
        self._settle()
        self.owner.live.discard(self)
        self.closed = True  # trio's path owns it, and releases it
        self.owner.hand_over(self.client, data, self.accepted, True, self.conn)

    # the upstream

    def _connect_next(self) -> None:
        while self.addresses:
            address, port = self.addresses.pop(0)
            try:
                upstream, connected = start_connect(
                    address, port, below=self.below, owner=self.server.upstream_owner,
                    kind=_socket.socket)
            except OSError:
                continue
            if connected:
                self._established(upstream, address, port)
            else:
                self.upstream = upstream
                self._wait(upstream.fileno(), select.EPOLLOUT,
                           functools.partial(self.guarded, self._connected_or_not, address,
                                             port),
                           self.deadline, functools.partial(self.guarded, self._connect_timeout))
            return
        self._refuse(Reason.CONNECT_FAILED)

    def _connected_or_not(self, address: str, port: int, _: int = 0) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        try:
            upstream.getpeername()
            connected = True
        except OSError:
            connected = False
            if not upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                # Still connecting: the readiness was reported for an earlier socket of this
                # number, closed in the same turn of the thread. Wait on.
                return
        self._settle()
        self.upstream = None
        if connected:
            self._established(upstream, address, port)
        else:
            upstream.close()
            self._connect_next()

    def _connect_timeout(self) -> None:
        self._settle()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self._refuse(Reason.CONNECT_TIMEOUT)

    def _refuse(self, reason: Reason) -> None:
        """Answer 502 after a failed connect (allowed, but unreachable), as trio's path."""
        status = 0
        data = b"" if self.head is None else refusal(self.head, 502, reason)
        try:
            if data and self.client.send(data) == len(data):
                status = 502
        except OSError:
            pass  # the client went away (or its buffer is full): it gets no answer
        self._close(self.exchange.close("allow", reason, status))

    def _established(self, upstream: _socket.socket, address: str, port: int) -> None:
        exchange = self.exchange
        exchange.address = text = address_text(address, port)
        template = self.opened
        opened = (exchange.opened(template) if template is not None and template.address == text
                  else exchange.event("allow", exchange.reason, 200, "open"))
        self.upstream = upstream
        # The 200 as soon as the upstream is connected, the tunnel made and added after it:
        # the client reads the 200 and writes its first message (in its own process, on the
        # other CPU if it is free) while this thread adds the tunnel (two ``epoll_ctl``s);
        # its message waits in the socket until the tunnel's first wait, which comes after
        # this step. The 200 and its event in one step for trio's thread (which delivers
        # what was posted before its own events): no event of a later request of the client,
        # refused on trio's path, goes to ``events`` ahead of this tunnel's open.
        with self.owner.posting:
            try:
                sent = self.client.send(ESTABLISHED)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = -1
            if sent >= 0:
                self.owner.post(opened)
        if sent < 0:  # the client went away: no tunnel; _close closes both sockets
            self._close(exchange.close("allow", exchange.reason, 0))
            return
        self.opened = opened
        exchange.status = 200
        _no_delay(upstream)  # (nothing goes to it before the tunnel's first turn)
        trailing = b"" if self.head is None else self.head.trailing
        exchange.bytes_out = len(trailing)  # counted from here, as on trio's path
        # (the rest of a short 200 goes first, ahead of anything the upstream sends)
        self.tunnel = tunnel = Tunnel(
            self.client, upstream, self.owner.limits.idle_timeout, self._ended, to_b=trailing,
            to_a=ESTABLISHED[sent:] if sent < len(ESTABLISHED) else b"", closing=True)
        self.pump.add_here(tunnel)  # (nothing is relayed before this step returns)

    def _ended(self, tunnel: Tunnel) -> None:
        """The tunnel's ``on_end`` (within this connection's boundary, as :meth:`guarded`
        steps are: without a call of it)."""
        try:
            exchange = self.exchange
            if tunnel.cancelled:  # by stop(): the session ended with the tunnel open
                exchange.bytes_out += tunnel.up.moved
                exchange.bytes_in += tunnel.down.moved
                self._close(exchange.close("allow", Reason.SESSION_ENDED, exchange.status))
                return
            if tunnel.error is not None:
                try:
                    raise tunnel.error
                except Exception:  # noqa: BLE001 - logged with its traceback, as trio's path
                    self.server.failed(exchange)
                self._close(exchange.close("deny", Reason.INTERNAL_ERROR, 0))
                return
            exchange.bytes_out += tunnel.up.moved
            exchange.bytes_in += tunnel.down.moved
            opened = self.opened
            self._close(exchange.close("allow", exchange.reason, 200) if opened is None
                        else exchange.closed(opened, 200))
        except Exception:  # noqa: BLE001 - logged by failed()
            self._broke()

    # the end

    def guarded(self, step: Callable[..., None], *args: object) -> None:
        """``step(*args)`` within this connection's boundary, as trio's path has one: a bug
        is logged with its traceback, reported as ``internal_error`` (unless the request was
        reported already) and closes this connection, and nothing else."""
        try:
            step(*args)
        except Exception:  # noqa: BLE001 - logged by failed()
            self._broke()

    def _broke(self) -> None:
        """The boundary's handling of the exception being handled (:meth:`guarded`)."""
        self.server.failed(self.exchange)
        done = self.exchange.done
        event = None if done else self.exchange.close("deny", Reason.INTERNAL_ERROR, 0)
        if self.tunnel is not None and not self.tunnel.ended:
            self.tunnel.on_end = lambda _: None
            self.pump.end(self.tunnel)
        self._close(event, always=True)

    def _close(self, event: NetworkEvent | None, *, always: bool = False) -> None:
        """Close, and report ``event`` (if any); ``always``: even if a step closed it."""
        if self.closed and not always:
            return
        if self.watching is not None or self.timer is not None:  # (not at a tunnel's end)
            self._settle()
        owner = self.owner
        owner.live.discard(self)
        with owner.posting:  # the end the client sees and its event: one step
            # The client's first: its close sends the client's FIN (about 17 us on this VM,
            # the upstream's about 9), which a client reading to the end waits for.
            self.client.close()
            if self.upstream is not None:
                self.upstream.close()
            if not self.closed:
                self.closed = True
                self.server.release()
            if event is not None:
                owner.post(event)

    def drop(self) -> None:
        """Close at once (the session ends, its proxy stops): no answer; a request that was
        decided gets its ``session_ended`` record, with what its tunnel moved, as on trio's
        path (before, none: a tunnel cut by the end left only its ``open``, without bytes)."""
        if self.tunnel is not None and not self.tunnel.ended:
            self.pump.end(self.tunnel)  # calls _ended, which closes and reports
        elif self.exchange.host and not self.exchange.done:
            self._close(self.exchange.close("allow", Reason.SESSION_ENDED,
                                            self.exchange.status))
        else:
            self._close(None)

    # waiting

    def _wait(self, fd: int, mask: int, ready: Callable[[int], None], deadline: float,
              expired: Callable[[], None]) -> None:
        self.watching = fd
        self.pump.watch(fd, mask, ready)
        self.timer = self.pump.at(deadline, expired)

    def _settle(self) -> None:
        """Stop waiting (for readiness and for the deadline)."""
        if self.watching is not None:
            self.pump.unwatch(self.watching)
            self.watching = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _queue_length(listener: socket.socket) -> int:
    """How many connections wait in ``listener``'s accept queue (``tcpi_unacked`` of a
    listening socket's ``TCP_INFO``); a great many if the kernel does not say."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    except OSError:
        return 1 << 30
    return int.from_bytes(info[24:28], sys.byteorder) if len(info) >= 28 else 1 << 30


def _no_delay(sock: _socket.socket) -> bool:
    """Small writes go out at once, as on trio's path (``trio.SocketStream`` sets it);
    whether the option is set."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True
