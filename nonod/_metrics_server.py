"""The metrics endpoint: ``GET /metrics`` over a tiny HTTP/1.1 server (h11 on trio).

It listens where ``[metrics] listen`` says: a TCP port (loopback unless ``allow_remote``; the
configuration refuses anything else) or a Unix socket (mode 0600, prepared like the control
socket). One request per connection, a bounded head, a deadline per connection and a cap on
concurrent connections, of which one local uid may hold only a few (so that one user holding
idle connections cannot keep the scraper out), and a rate of new connections per local uid (so
that one user connecting and closing in a loop cannot keep the daemon's event loop busy; a peer
that has closed its socket before it is served is closed unread): a scraper that misbehaves
costs the daemon little, and a request that fails ends its own connection, never the daemon.
Nothing but ``/metrics`` is served, and error pages never carry exception text.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections import Counter
from pathlib import Path
from typing import Final, final

import h11
import structlog
import trio

from ._accept import accept_retrying
from ._config import metrics_endpoint
from ._loopback_peers import tcp_peer_uid
from ._metrics import Metrics
from ._subids import owner_of
from .control import bind_control_socket
from .control._limits import ConnectionRate
from .errors import NonoError
from .proxy import _h11_lines  # noqa: F401 - h11's header lines read in linear time

log = structlog.get_logger()

PATH: Final = b"/metrics"
#: Scrapes served at once; more connections are closed at once.
MAX_CONNECTIONS: Final = 16
#: ... of which one uid (the peer socket's owner, on a loopback port) may hold this many.
MAX_PER_UID: Final = 4
#: New connections one local uid (root too) may open at once, and per second after that; a
#: scraper opens one every few seconds.
NEW_CONNECTIONS_BURST: Final = 16
NEW_CONNECTIONS_PER_SECOND: Final = 4.0
#: Seconds between the system daemon's tries of a metrics port another process holds.
PORT_RETRY: Final = 2.0
#: Seconds a connection has to send its request and read the answer.
REQUEST_TIMEOUT: Final = 10.0
#: Largest request head, in bytes.
MAX_HEAD: Final = 8 * 1024
_READ_SIZE: Final = 4096


class MetricsError(NonoError):
    """The metrics endpoint could not listen where ``[metrics] listen`` says."""

    code = "metrics.listen"


@final
class _Endpoint:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._active = 0
        self._by_uid: Counter[int] = Counter()
        self._rate = ConnectionRate(NEW_CONNECTIONS_BURST, NEW_CONNECTIONS_PER_SECOND,
                                    waiting=0, spare_root=False)

    async def serve(self, listener: trio.SocketListener) -> None:
        """Accept connections until cancelled: each admitted one is served in a task of its
        own; a refused one is closed at once, before a task or a byte is spent on it."""
        async with trio.open_nursery() as nursery:
            while True:
                sock, _ = await accept_retrying(listener.socket.accept,
                                                event="metrics accept failed; retrying")
                admitted, uid = self._admit(sock)
                if admitted:
                    nursery.start_soon(self.handle, trio.SocketStream(sock), uid)
                else:
                    sock.close()

    def _admit(self, sock: trio.socket.SocketType) -> tuple[bool, int | None]:
        """Count ``sock`` in (True) or say it must be closed (False); and its peer's uid."""
        try:
            uid = _local_peer_uid(sock)
        except _PeerGone:
            return False, None  # nobody is left to read an answer
        if self._active >= MAX_CONNECTIONS or (uid is not None and (
                self._by_uid[uid] >= MAX_PER_UID
                or self._rate.delay(uid, trio.current_time()) is None)):
            return False, uid
        self._active += 1
        if uid is not None:
            self._by_uid[uid] += 1
        return True, uid

    async def handle(self, stream: trio.abc.Stream, uid: int | None) -> None:
        """Serve one admitted connection (counted in by :meth:`_admit`), then close it."""
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                await self._exchange(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass  # the scraper went away, or broke the exchange: nothing to answer
        except Exception:
            # Boundary, like the control server's: a failed scrape ends its connection only,
            # never the daemon.
            log.exception("metrics request failed")
        finally:
            self._active -= 1
            if uid is not None:
                self._by_uid[uid] -= 1
            await trio.aclose_forcefully(stream)

    async def _exchange(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            request = await _read_request(stream, conn)
        except h11.RemoteProtocolError as exc:
            await _send(stream, conn, exc.error_status_hint, b"bad request\n")
            return
        if request is None:
            return
        target = request.target.split(b"?", 1)[0]
        if target != PATH:
            await _send(stream, conn, 404, b"not found: metrics are at /metrics\n")
        elif request.method not in (b"GET", b"HEAD"):
            await _send(stream, conn, 405, b"method not allowed\n",
                        extra=[(b"allow", b"GET, HEAD")])
        else:
            accept = b", ".join(v for k, v in request.headers if k == b"accept")
            body, content_type = self._metrics.exposition(accept.decode("latin-1"))
            await _send(stream, conn, 200, body, content_type=content_type.encode(),
                        head_only=request.method == b"HEAD")


class _PeerGone(Exception):
    """The peer has closed its socket already."""


def _local_peer_uid(sock: trio.socket.SocketType) -> int | None:
    """Who holds the other end of a TCP connection from this host (``sock_diag``); None for
    a Unix socket (only the daemon's user may connect there) or a remote peer. _PeerGone
    when the peer of this host has closed its socket."""
    if sock.family == socket.AF_UNIX:
        return None
    try:
        return owner_of(tcp_peer_uid(sock))  # a subordinate uid counts as its user
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise _PeerGone from exc
        return None


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # the peer closed before a whole request


async def _send(stream: trio.abc.Stream, conn: h11.Connection, status: int, body: bytes, *,
                content_type: bytes = b"text/plain; charset=utf-8",
                extra: list[tuple[bytes, bytes]] | None = None,
                head_only: bool = False) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)),
               (b"connection", b"close"), *(extra or [])]
    data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if not head_only:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def serve_metrics(metrics: Metrics, listen: str, *, wait_for_port: bool = False,
                        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``metrics`` on ``listen`` until cancelled; ``started()`` gets the address.
    Raises MetricsError (before ``started``) if it cannot listen there, except, with
    ``wait_for_port`` (the system daemon), for a TCP port another process holds: any local
    user may bind a port above 1024 first, and that must not keep the daemon from starting.
    It starts without the endpoint, says so, and takes the port once it is free."""
    endpoint = metrics_endpoint(listen)
    bound = None
    waited = False
    try:
        if isinstance(endpoint, str):
            bound = bind_control_socket(Path(endpoint), default_location=False)
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(bound.sock))]
        else:
            listeners, waited = await _tcp_listeners(endpoint, listen, wait_for_port,
                                                     task_status)
    except (OSError, NonoError) as exc:
        detail = exc.message if isinstance(exc, NonoError) else exc.strerror or str(exc)
        raise MetricsError(f"cannot serve metrics on {listen}: {detail}",
                           hint="[metrics] listen in nonod.toml") from exc
    try:
        async with trio.open_nursery() as nursery:
            server = _Endpoint(metrics)
            for listener in listeners:
                nursery.start_soon(server.serve, listener)
            log.info("serving metrics", listen=listen)
            if not waited:
                task_status.started(listen)
    finally:
        if bound is not None:
            bound.release()


async def _tcp_listeners(endpoint: tuple[str, int], listen: str, wait_for_port: bool,
                         task_status: trio.TaskStatus[str]
                         ) -> tuple[list[trio.SocketListener], bool]:
    """Listeners on the TCP ``endpoint``, and whether ``task_status`` was told to go on
    without them: with ``wait_for_port``, a port in use is tried again every
    :data:`PORT_RETRY` seconds meanwhile."""
    try:
        return await trio.open_tcp_listeners(endpoint[1], host=endpoint[0]), False
    except OSError as exc:
        if not wait_for_port or exc.errno != errno.EADDRINUSE:
            raise
    log.error("metrics.listen: another process holds the metrics port; serving no metrics "
              "until it is free", listen=listen, retry_every=PORT_RETRY)
    task_status.started(listen)
    while True:
        await trio.sleep(PORT_RETRY)
        with contextlib.suppress(OSError):  # the daemon runs: never fatal from here on
            return await trio.open_tcp_listeners(endpoint[1], host=endpoint[0]), True
