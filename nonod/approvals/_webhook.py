"""The webhook backend: an HTTPS POST of a signed JSON body; the response decides.

The body says what is held: ``version`` (1) and the fields ``nonoctl approvals inspect``
shows (``Pending.public``: approval id, session, host, port, method and path, the session's
program, backend, profile, times). Two headers sign it: ``X-Nono-Timestamp`` (Unix seconds) and
``X-Nono-Signature: sha256=<hex>``, the HMAC-SHA256 under the backend's key (a credential
reference resolved at launch) of ``<timestamp>.<body>``, so a receiver can check both origin
and freshness. The answer must be ``200`` with a JSON object whose ``decision`` is ``once``,
``session`` or ``deny``; anything else (another status, a bad or oversized body, a TLS or
connection failure) is a denial. Only ``https://`` is spoken; the server is verified against
the system roots and the daemon's ``[network] extra_ca_file``; ``[network] resolve`` pins
apply to its host as to the proxy's.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from typing import Final, Literal, final

import h11
import msgspec
import trio

from ..policy import ApprovalBackend
from ..proxy import _h11_lines  # noqa: F401 - a webhook's answer read in linear time
from ._asker import Said
from ._queue import Pending

#: The largest answer read from a webhook.
MAX_RESPONSE_BYTES: Final = 64 * 1024


class WebhookAnswer(msgspec.Struct, frozen=True, kw_only=True):
    decision: Literal["once", "session", "deny"]


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Nono-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@final
class WebhookCaller:
    """Asks webhook backends (``SessionAsker``'s ``webhook``). ``keys`` holds each backend's
    signing key by backend name, resolved when the session was launched."""

    def __init__(self, *, keys: Mapping[str, bytes], extra_ca_file: str | None = None,
                 pins: Mapping[str, str] | None = None) -> None:
        self._keys = dict(keys)
        self._pins = dict(pins or {})
        self._context = ssl.create_default_context()
        if extra_ca_file:
            self._context.load_verify_locations(cafile=extra_ca_file)

    async def __call__(self, backend: ApprovalBackend, pending: Pending,
                       deadline: float) -> Said:
        who = f"webhook:{backend.name}"
        key = self._keys.get(backend.name)
        url = urllib.parse.urlsplit(backend.url or "")
        if key is None or url.scheme != "https" or not url.hostname:
            return "deny", f"{who}:misconfigured"
        body = msgspec.json.encode({"version": 1, **pending.public()})
        stamp = str(int(time.time()))
        headers = [("Host", url.netloc), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(body))), ("Connection", "close"),
                   ("X-Nono-Timestamp", stamp), ("X-Nono-Signature", sign(key, stamp, body))]
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        try:
            status, answer = await self._post(url.hostname, url.port or 443, target, headers,
                                              body)
        except (OSError, ssl.SSLError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            return "deny", f"{who}:error:{type(exc).__name__}"
        if status != 200:
            return "deny", f"{who}:status:{status}"
        try:
            decision = msgspec.json.decode(answer, type=WebhookAnswer).decision
        except (msgspec.DecodeError, msgspec.ValidationError):
            return "deny", f"{who}:bad_answer"
        return decision, who

    async def _post(self, host: str, port: int, target: str, headers: list[tuple[str, str]],
                    body: bytes) -> tuple[int, bytes]:
        address, _, pinned_port = self._pins.get(host, "").rpartition(":")
        tcp = await trio.open_tcp_stream(address or host,
                                         int(pinned_port) if address else port)
        stream = trio.SSLStream(tcp, self._context, server_hostname=host,
                                https_compatible=True)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            await stream.send_all(conn.send(h11.Request(method="POST", target=target,
                                                        headers=headers)) or b"")
            await stream.send_all(conn.send(h11.Data(data=body)) or b"")
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            status = 0
            data = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(MAX_RESPONSE_BYTES)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    data += event.data
                    if len(data) > MAX_RESPONSE_BYTES:
                        return 0, b""
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, bytes(data)
