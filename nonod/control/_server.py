"""The control server: WebSocket connections over the daemon's Unix socket.

Shape (as trio's ``serve_listeners``): one accept loop; each accepted socket goes to a handler
task that owns it and closes it in ``finally``. ``EMFILE``/``ENFILE``/``ENOBUFS``/``ENOMEM`` on
accept are logged and retried after a pause; other accept errors propagate.

Each connection, in order:

1. **Who is it?** ``SO_PEERCRED`` gives the peer's pid, uid and gid. A user daemon serves only
   its own uid; a system daemon serves root and members of its ``socket_group``. A peer whose
   user, mount, network or pid namespace is neither the daemon's nor the host's (pid 1's):
   a program inside a session, a container, is refused even with the right uid.
   ``SO_PEERPIDFD`` pins the peer process while its ``/proc`` entries are read, so a recycled
   pid cannot pass for it.
2. **WebSocket handshake** (trio-websocket) and ``Hello``/``Welcome`` within
   ``handshake_timeout``. A refused peer still gets a typed ``ErrorReply`` before the close.
   So does one over ``max_connections`` or ``max_connections_per_uid`` (``_limits``).
3. **Requests**, answered in order (see ``protocol`` for the streaming ones). Malformed,
   unknown or ill-typed messages get an ``ErrorReply`` and the connection stays usable; a
   message over ``max_message_bytes`` closes it with code 1009. A connection with no request
   for ``idle_timeout`` is closed (code 1001), and one that does not take a message within
   ``send_timeout`` is dropped: a client that stops reading holds at most the socket's buffer
   and one message, and releases what it holds (an attached session) with its connection.

The modules: ``_transport`` (the socket, passed descriptors), ``_peers`` (who connects),
``_errors`` (what is answered when a request fails), ``_conversation`` (one connection's
requests and handlers; ``_keys`` the secret and trust ones, ``_approvals`` the approval
ones), ``_contracts`` (what the daemon injects: settings, profiles, secrets, trust keys),
and this one: the accept loop and the refusals.

The per-connection handler is one of the two places in the daemon that catch ``Exception``:
a bug triggered by one client ends that client's connection (with an ``internal`` error reply)
and nothing else.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable
from typing import Final, final

import structlog
import trio
from structlog.contextvars import bound_contextvars
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from .. import protocol as p
from .. import sessions
from .._accept import accept_retrying
from .._limits import LimitSettings
from ..errors import NonoError
from ..proxy import _h11_lines  # noqa: F401 - the handshake's header lines in linear time
from ._contracts import DaemonInfo, PolicySource, SecretStore, ServerSettings, TrustService
from ._conversation import CLOSE_TIMEOUT, Conversation
from ._errors import AuthRefused, error_reply
from ._limits import (
    RECEIVE_BUDGET_MESSAGES,
    REFUSAL_SLOTS,
    REFUSAL_TIMEOUT,
    ConnectionCounter,
    ConnectionRate,
    LaunchShares,
    ReceiveBudget,
    TooManyConnections,
)
from ._peers import PeerCheck, peer_uid
from ._timeouts import Timeouts
from ._transport import UnixConnection

log = structlog.get_logger()

_POLICY_VIOLATION: Final = 1008

_conn_ids = itertools.count(1)


@final
class ControlServer:
    """Accepts control connections and serves each in its own task."""

    def __init__(
        self,
        *,
        registry: sessions.Registry,
        policies: PolicySource,
        info: DaemonInfo,
        settings: Callable[[], ServerSettings],
        limits: Callable[[], LimitSettings] = LimitSettings,
        request_shutdown: Callable[[], None],
        group_gid: int | None = None,
        secrets: SecretStore,
        trust: TrustService,
        launcher_state: Callable[[], str] = lambda: "not started",
        session_root: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.policies = policies
        self.info = info
        self.settings = settings
        #: ``[limits]``: defaults and ceilings applied to every launch (``nonod._limits``).
        self.limits = limits
        self.request_shutdown = request_shutdown
        self.secrets = secrets
        self.trust = trust
        self._launcher_state = launcher_state
        self._peers = PeerCheck(system=info.system, group_gid=group_gid,
                                session_root=session_root)
        self._counter = ConnectionCounter(shared=info.system)
        #: Unread request bytes per uid, on the daemon its users share (``_limits``).
        self._budget = ReceiveBudget(
            lambda: RECEIVE_BUDGET_MESSAGES * self.settings().max_message_bytes
        ) if info.system else None
        #: Launches worked on at once per uid, on the daemon its users share (``_limits``).
        self.launch_shares = LaunchShares() if info.system else None
        #: New connections per uid and second, likewise.
        self._rate = ConnectionRate() if info.system else None
        self._refused_logged_at = -1e9
        self._refused_quiet = 0
        #: The connections' idle and send timeouts (not a trio deadline per wait: ``_timeouts``).
        self.timeouts = Timeouts()

    def status(self, caller: sessions.Caller | None = None) -> p.DaemonStatus:
        """The daemon's status; session counts are ``caller``'s own (root's: all)."""
        live, total = self.registry.statistics(caller)
        info = self.info
        return p.DaemonStatus(
            pid=info.pid, version=info.version, protocol=p.PROTOCOL_VERSION, uid=info.uid,
            system=info.system, socket=info.socket, started_at=info.started_at,
            state_dir=info.state_dir, config=info.config, sessions_live=live,
            sessions_total=total, launcher=self._launcher_state(),
        )

    def statistics(self) -> dict[str, int]:
        return {"active_connections": self._counter.total}

    async def serve(
        self,
        listener: socket.socket,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled."""
        sock = trio.socket.from_stdlib_socket(listener)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.timeouts.run, name="nonod control timeouts")
            task_status.started()
            while True:
                conn, _ = await accept_retrying(sock.accept, event="accept failed; retrying")
                uid = peer_uid(conn)
                wait = 0.0 if self._rate is None else self._rate.delay(uid, trio.current_time())
                if wait is None:
                    # Closed unread: telling it why would cost what serving it does.
                    self._quiet_warning("a user opens control connections too fast; closing "
                                        "a new one", uid=uid)
                    conn.close()
                elif wait:
                    nursery.start_soon(self._admit_later, nursery, conn, uid, wait)
                else:
                    self._admit(nursery, conn, uid)

    async def _admit_later(self, nursery: trio.Nursery, conn: trio.socket.SocketType, uid: int,
                           wait: float) -> None:
        """Admit ``conn`` once its uid's rate allows (``_limits.ConnectionRate``)."""
        try:
            await trio.sleep(wait)
        except BaseException:
            conn.close()
            raise
        self._admit(nursery, conn, uid)

    def _admit(self, nursery: trio.Nursery, conn: trio.socket.SocketType, uid: int) -> None:
        """Serve ``conn``, or refuse it when it is over a cap."""
        settings = self.settings()
        refusal = self._counter.admit(uid, total_cap=settings.max_connections,
                                      per_uid_cap=settings.max_connections_per_uid)
        if refusal is None:
            nursery.start_soon(self._run_connection, conn, uid)
            return
        self._quiet_warning("too many control connections; refusing a new one",
                            reason=refusal.message)
        if self._counter.refusing >= REFUSAL_SLOTS:
            conn.close()
            return
        self._counter.refusing += 1
        nursery.start_soon(self._run_refusal, conn, refusal, settings)

    async def _run_refusal(
        self, sock: trio.socket.SocketType, refusal: TooManyConnections, settings: ServerSettings
    ) -> None:
        """Tell a connection over a cap why it is refused, within REFUSAL_TIMEOUT."""
        stream = UnixConnection(sock)
        try:
            with trio.move_on_after(REFUSAL_TIMEOUT):
                async with trio.open_nursery() as ws_nursery:
                    ws = await self._handshake(ws_nursery, stream, settings)
                    if ws is not None:
                        await self._refuse(ws, refusal)
                    ws_nursery.cancel_scope.cancel()
        finally:
            self._counter.refusing -= 1
            await trio.aclose_forcefully(stream)

    def _quiet_warning(self, event: str, **fields: object) -> None:
        """Log at most one such warning per second, counting the ones left out."""
        now = trio.current_time()
        if now - self._refused_logged_at >= 1.0:
            log.warning(event, suppressed=self._refused_quiet, **fields)
            self._refused_logged_at = now
            self._refused_quiet = 0
        else:
            self._refused_quiet += 1

    async def _run_connection(self, sock: trio.socket.SocketType, uid: int) -> None:
        stream = UnixConnection(sock, budget=self._budget, uid=uid)
        with bound_contextvars(conn=next(_conn_ids)):
            try:
                await self._converse(stream)
            except Exception:
                # Boundary: one client's failure ends its connection and nothing else.
                log.exception("control connection failed")
            finally:
                self._counter.release(uid)
                await trio.aclose_forcefully(stream)

    async def _converse(self, stream: UnixConnection) -> None:
        refusal: AuthRefused | None = None
        caller: sessions.Caller | None = None
        try:
            caller = self._peers.identify(stream.socket)
        except AuthRefused as exc:
            refusal = exc
        except OSError as exc:
            refusal = AuthRefused(f"cannot identify the connecting process: {exc.strerror}")
        settings = self.settings()
        hello_deadline = trio.current_time() + settings.handshake_timeout
        async with trio.open_nursery() as ws_nursery:
            ws = await self._handshake(ws_nursery, stream, settings)
            if ws is None:
                ws_nursery.cancel_scope.cancel()
                return
            try:
                if refusal is not None or caller is None:
                    reason = refusal or AuthRefused("unknown peer")
                    self._quiet_warning("refused a control connection", code=reason.code,
                                        reason=reason.message)
                    await self._refuse(ws, reason)
                    return
                with bound_contextvars(peer_uid=caller.uid, peer_pid=caller.pid):
                    conversation = Conversation(self, ws, stream, caller, settings,
                                                 hello_deadline)
                    await conversation.run()
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.aclose()
            finally:
                ws_nursery.cancel_scope.cancel()

    async def _refuse(self, ws: WebSocketConnection, reason: NonoError) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await ws.send_message(p.encode(error_reply(reason)).decode("utf-8"))
                await ws.aclose(code=_POLICY_VIOLATION, reason=reason.code)
            except ConnectionClosed:
                return

    async def _handshake(
        self, nursery: trio.Nursery, stream: UnixConnection, settings: ServerSettings
    ) -> WebSocketConnection | None:
        """The WebSocket opening handshake, or None if the peer left or was too slow."""
        result: list[WebSocketConnection] = []
        with trio.move_on_after(settings.handshake_timeout):
            async with trio.open_nursery() as race:

                async def handshake() -> None:
                    request = await wrap_server_stream(
                        nursery, stream, message_queue_size=1,
                        max_message_size=settings.max_message_bytes,
                    )
                    if request.path != p.WS_RESOURCE:
                        await request.reject(404, body=b"unknown resource\n")
                    elif p.WS_SUBPROTOCOL not in request.proposed_subprotocols:
                        await request.reject(400, body=b"subprotocol nono.v1 required\n")
                    else:
                        result.append(await request.accept(subprotocol=p.WS_SUBPROTOCOL))
                    race.cancel_scope.cancel()

                async def peer_gone() -> None:
                    await stream.peer_gone.wait()
                    race.cancel_scope.cancel()

                race.start_soon(handshake)
                race.start_soon(peer_gone)
        return result[0] if result else None
