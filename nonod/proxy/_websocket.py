"""WebSocket on a credential route: ``Upgrade: websocket`` to ``/<route>/<path>``.

The reverse proxy has already checked the route, the phantom token, the endpoint rules and
the secret, and connected (and TLS-verified) the upstream. Here, with trio-websocket on both
sides:

1. the program's handshake is answered by a server-side WebSocket over its connection (h11
   has read the request head already, so the head is replayed, followed by whatever the
   program sent after it);
2. the upstream handshake goes out over the verified connection with the program's own
   end-to-end headers, minus the phantom token and proxy artefacts, plus the real credential
   (:func:`websocket_headers`), offering the program's subprotocols;
3. if the upstream refuses, the program gets the same status (without the upstream's body,
   which could quote the credential); if its ``101`` is not a valid answer to the handshake
   (a wrong accept token, a subprotocol or extension nobody offered), or it fails or stalls,
   the program gets ``502``/``504``, never a closed connection; if it accepts, the program is
   accepted with the subprotocol the upstream chose;
4. messages are relayed both ways until either side closes (the close code is passed on) or
   nothing moves for ``idle_timeout``; messages from the upstream are scrubbed of the secret.

Messages are held whole in the daemon's memory (to be scrubbed), outside the session's memory
limit: each is at most ``max_websocket_message_bytes`` (larger ones close that side with 1009,
"message too big"), no message waits in a queue (``message_queue_size=0``: a side that does
not read stops the other side's reading), and a session relays at most ``max_websockets`` at
once (:class:`ReverseHandler`). About three messages per direction are held at worst (the one
read and waiting, the one being sent, its frame). A message is read in pieces (its
fragments, cut where the socket's reads end), passed on joined into pieces of at least
``_SHORT_PIECE`` (:class:`_JoiningConnection`), so what a message in tiny fragments holds
stays near its size too (before, two-byte fragments held some 30 times the message's size).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import h11
import msgspec
import trio
import wsproto.events
import wsproto.utilities
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
)
from wsproto import ConnectionType, WSConnection

from ..credentials import PhantomToken, Route, Scrubber, Secret
from ._inject import websocket_headers
from ._pump import Moved
from ._relay import Counter
from ._replayed import Replayed

if TYPE_CHECKING:
    from ._server import ProxyLimits

#: Close codes that describe a connection state and may not be sent in a close frame.
_UNSENDABLE: Final = frozenset({1005, 1006, 1015})
#: What an upstream's unacceptable ``101`` (an accept token, subprotocol or extension the
#: handshake did not offer) raises: wsproto refuses it, and trio-websocket then tries to
#: answer the upstream with a server's refusal on the client's h11 connection, which h11
#: refuses in turn (``role=CLIENT state=SEND_BODY``). The program gets 502 either way.
_HANDSHAKE_BUGS: Final = (h11.ProtocolError, wsproto.utilities.ProtocolError)
#: A message's pieces are passed on joined into pieces at least this long (each piece is a
#: Python object of its own, some 40 bytes beyond its payload, until the message ends).
_SHORT_PIECE: Final = 1024


class _JoiningConnection(WebSocketConnection):
    """A WebSocket that holds a message's short pieces aside until they come to
    ``_SHORT_PIECE`` and passes them on joined: trio-websocket keeps every piece wsproto
    reads (a fragment, or what one read of the socket held of it) as an object of its own
    until the message's last, and counts only their payload against ``max_message_size``,
    so a message in tiny fragments held many times its size. Each byte is joined once.
    An empty piece is dropped: it counts nothing against the limit, so a program streaming
    empty fragments made the daemon hold an entry for each, without end. A text message is
    held to the limit in its UTF-8 bytes, not its characters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._short: list[Any] = []  # bytes-like, or str: pieces of one message
        self._short_size = 0

    async def _handle_message_event(
            self, event: wsproto.events.BytesMessage | wsproto.events.TextMessage) -> None:
        if not event.data and not event.message_finished:
            return  # an empty fragment (or a character's first bytes): nothing to hold
        if not event.message_finished and self._short_size + len(event.data) < _SHORT_PIECE:
            self._short.append(event.data)
            self._short_size += len(event.data)
            return
        if self._short:
            pieces, self._short, self._short_size = [*self._short, event.data], [], 0
            if isinstance(event, wsproto.events.TextMessage):
                event = dataclasses.replace(event, data="".join(pieces))
            else:
                event = dataclasses.replace(event, data=b"".join(pieces))
        if isinstance(event.data, str) and not event.data.isascii():
            # trio-websocket counts a text piece's characters: its bytes beyond them too, so
            # the limit is in bytes (before, four-byte characters made 4 times the limit).
            self._message_size += len(event.data.encode("utf-8", "surrogatepass")) - len(
                event.data)
        await super()._handle_message_event(event)


async def _wrap_server(nursery: trio.Nursery, stream: trio.abc.Stream, *,
                       max_message_size: int) -> WebSocketRequest:
    """trio-websocket's ``wrap_server_stream`` (no message queue) with a joining connection."""
    connection = _JoiningConnection(stream, WSConnection(ConnectionType.SERVER),
                                    message_queue_size=0, max_message_size=max_message_size)
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()


async def _wrap_client(nursery: trio.Nursery, stream: trio.abc.Stream, host: str,
                       resource: str, *, subprotocols: Sequence[str],
                       extra_headers: list[tuple[bytes, bytes]],
                       max_message_size: int) -> WebSocketConnection:
    """trio-websocket's ``wrap_client_stream`` (no message queue) with a joining connection."""
    connection = _JoiningConnection(
        stream, WSConnection(ConnectionType.CLIENT), host=host, path=resource,
        client_subprotocols=subprotocols, client_extra_headers=extra_headers,
        message_queue_size=0, max_message_size=max_message_size)
    nursery.start_soon(connection._reader_task)
    await connection._open_handshake.wait()
    return connection


class WebSocketOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a proxied WebSocket went: ``status`` the handshake status the program got (101,
    or the upstream's refusal), ``reason`` the audit code, bytes of message payload."""

    status: int
    reason: str
    bytes_in: int = 0
    bytes_out: int = 0


def _replay_head(request: h11.Request) -> bytes:
    """The request head as bytes again (h11 checked it when it parsed it)."""
    client = h11.Connection(h11.CLIENT)
    return client.send(request) or b""


async def relay_websocket(
    *,
    client: trio.abc.Stream,
    request: h11.Request,
    trailing: bytes,
    route: Route,
    secret: Secret | None,
    token: PhantomToken,
    upstream: trio.abc.Stream,
    resource: str,
    scrubber: Scrubber | None,
    limits: ProxyLimits,
    moved: Moved | None = None,
) -> WebSocketOutcome:
    """Run one proxied WebSocket to its end. ``resource`` is the upstream target (it holds
    the credential in ``url_path``/``query_param`` modes: never log it).

    trio-websocket reports an upstream's refusal from its reader task, so through the
    nursery that runs it: the upstream side gets a nursery of its own, whose failures become
    an answer to the program here and never travel further (a refusal carries the upstream's
    body, which could quote the credential).

    ``moved`` gets the message bytes relayed each way, also when this is cancelled (the
    session ended with the WebSocket open: its record still counts them).
    """
    extra = websocket_headers(route, secret, token, request.headers)
    async with trio.open_nursery() as program_side:
        try:
            with trio.fail_after(limits.head_timeout):
                offer = await _wrap_server(
                    program_side, Replayed(client, _replay_head(request) + trailing),
                    max_message_size=limits.max_websocket_message_bytes)
        except (trio.TooSlowError, HandshakeError, ConnectionClosed, trio.BrokenResourceError,
                trio.ClosedResourceError):
            program_side.cancel_scope.cancel()
            return WebSocketOutcome(status=0, reason="bad_request")
        outcome: WebSocketOutcome | None = None
        failed: WebSocketOutcome | None = None
        try:
            async with trio.open_nursery() as upstream_side:
                with trio.fail_after(limits.response_timeout):
                    outward = await _wrap_client(
                        upstream_side, upstream, route.authority, resource,
                        subprotocols=_offered(offer, token), extra_headers=extra,
                        max_message_size=limits.max_websocket_message_bytes)
                try:
                    inward = await offer.accept(subprotocol=outward.subprotocol)
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    outcome = WebSocketOutcome(status=0, reason="client_gone")
                else:
                    counter = await _relay(inward, outward, scrubber, limits.idle_timeout,
                                           moved or Moved())
                    outcome = WebSocketOutcome(status=101, reason="forwarded",
                                               bytes_in=counter.to_client,
                                               bytes_out=counter.to_upstream)
                upstream_side.cancel_scope.cancel()
        except* ConnectionRejected as group:
            status = next((e.status_code for e in _leaves(group)
                           if isinstance(e, ConnectionRejected)), 502)
            status = status if 400 <= status <= 599 else 502
            failed = WebSocketOutcome(status=status, reason="upstream_rejected")
        except* trio.TooSlowError:
            failed = WebSocketOutcome(status=504, reason="upstream_timeout")
        except* (HandshakeError, ConnectionClosed, trio.BrokenResourceError,
                 trio.ClosedResourceError, *_HANDSHAKE_BUGS):
            failed = failed or WebSocketOutcome(status=502, reason="upstream_error")
        if failed is not None and outcome is None:
            await _reject(offer, failed.status)
            outcome = failed
        program_side.cancel_scope.cancel()
    return outcome or WebSocketOutcome(status=0, reason="upstream_error")


def _offered(offer: WebSocketRequest, token: PhantomToken) -> list[str]:
    """The program's subprotocols for the upstream handshake, without any that holds the
    phantom token, as written or base64-encoded: a client that carries its token there
    (Kubernetes' ``base64url.bearer.authorization.k8s.io.<token in unpadded base64url>``)
    sent it upstream, the one handshake header the proxy passed on unfiltered. The upstream
    can only choose among what it was offered."""
    phantom = token.reveal()
    spellings = {spelling for spelling in (phantom, *_base64_of(phantom)) if spelling}
    return [name for name in offer.proposed_subprotocols
            if not any(spelling in name for spelling in spellings)]


def _base64_of(text: str) -> tuple[str, str]:
    """``text`` in base64url and in base64, cut to its whole 4-character groups: the same
    however the encoder pads (and whatever follows it) when the token starts a group."""
    whole = len(text.encode()) // 3 * 4
    return (base64.urlsafe_b64encode(text.encode()).decode()[:whole],
            base64.b64encode(text.encode()).decode()[:whole])


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _reject(offer: WebSocketRequest, status: int) -> None:
    try:
        await offer.reject(status)
    except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the program went away; it gets no answer


async def _relay(inward: WebSocketConnection, outward: WebSocketConnection,
                 scrubber: Scrubber | None, idle: float, moved: Moved) -> Counter:
    with trio.CancelScope(deadline=trio.current_time() + idle) as scope:
        counter = Counter(scope, idle)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, inward, outward, None, counter, True, scope)
                nursery.start_soon(_pump, outward, inward, scrubber, counter, False, scope)
        finally:
            moved.to_upstream, moved.to_client = counter.to_upstream, counter.to_client
    for side in (inward, outward):
        with trio.move_on_after(1, shield=True):
            await side.aclose()
    return counter


async def _pump(source: WebSocketConnection, sink: WebSocketConnection,
                scrubber: Scrubber | None, counter: Counter, upstream: bool,
                scope: trio.CancelScope) -> None:
    try:
        while True:
            message = await source.get_message()
            if scrubber is not None:
                if isinstance(message, str):
                    message = scrubber.replace_all(message.encode("utf-8")).decode("utf-8")
                else:
                    message = scrubber.replace_all(bytes(message))
            await sink.send_message(message)
            counter.moved(len(message), upstream=upstream)
    except ConnectionClosed as closed:
        why = closed.reason
        code = why.code if why is not None and why.code not in _UNSENDABLE else 1000
        reason = why.reason if why is not None else None
        if reason and scrubber is not None:
            reason = scrubber.replace_all(reason.encode("utf-8")).decode("utf-8", "replace")
        try:
            await sink.aclose(code=code, reason=reason)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # both sides are gone
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # a transport broke under the WebSocket: the relay ends
    scope.cancel()
