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
read and waiting, the one being sent, its frame).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, cast

import h11
import msgspec
import trio
import wsproto.utilities
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    wrap_client_stream,
    wrap_server_stream,
)

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
                offer = await wrap_server_stream(
                    program_side, Replayed(client, _replay_head(request) + trailing),
                    message_queue_size=0, max_message_size=limits.max_websocket_message_bytes)
        except (trio.TooSlowError, HandshakeError, ConnectionClosed, trio.BrokenResourceError,
                trio.ClosedResourceError):
            program_side.cancel_scope.cancel()
            return WebSocketOutcome(status=0, reason="bad_request")
        outcome: WebSocketOutcome | None = None
        failed: WebSocketOutcome | None = None
        try:
            async with trio.open_nursery() as upstream_side:
                with trio.fail_after(limits.response_timeout):
                    outward = await wrap_client_stream(
                        # trio-websocket annotates SocketStream | SSLStream, uses any Stream
                        upstream_side, cast("trio.SocketStream", upstream), route.authority,
                        resource,
                        subprotocols=offer.proposed_subprotocols, extra_headers=extra,
                        message_queue_size=0,
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
