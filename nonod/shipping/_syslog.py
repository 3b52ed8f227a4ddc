"""Syslog sink: RFC 5424 messages, octet-counted (RFC 6587) over TCP, or TLS (RFC 5425).

One message per record::

    <PRI>1 TS HOST nonod PID KIND [nono@32473 id=".." session=".." seq=".." hash=".."] LINE

``PRI`` is the facility (default 13, "log audit") times 8 plus the severity: 4 (warning) for a
refusal or failure, 6 (informational) otherwise. ``MSGID`` is the event kind, ``TIMESTAMP``
the record's own ``ts``, and the message is the stored line, byte for byte (a receiver can
verify the chain from the messages). 32473 is the private enterprise number RFC 5612 reserves
for documentation; nono has none of its own.

Syslog has no acknowledgement. A batch is one connection: the exporter writes every message,
then ends its side (TCP: a FIN; TLS: a close_notify) and waits for the receiver to close its
side, which it does only after reading everything before the end. The batch counts as
delivered then. What the receiver does next (queue, disk) is outside that: a receiver that
crashes after reading may lose the batch; see docs/operations.md.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Sequence
from typing import Final, final

import trio

from ._errors import SinkError, describe
from ._source import ShipRecord

FACILITIES: Final = {
    "kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10, "audit": 13,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21,
    "local6": 22, "local7": 23,
}
SD_ID: Final = "nono@32473"
WARNING: Final = 4
INFORMATIONAL: Final = 6


def _printable(text: str, limit: int) -> str:
    """RFC 5424 PRINTUSASCII (33-126), at most ``limit`` characters, ``-`` if empty."""
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def _param(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_message(record: ShipRecord, *, facility: int, hostname: str, procid: str) -> bytes:
    """The RFC 5424 message for ``record`` (without framing)."""
    severity = WARNING if record.notable else INFORMATIONAL
    sd = (f'[{SD_ID} id="{_param(record.id)}" session="{_param(record.session)}" '
          f'seq="{record.seq}" hash="{record.hash}"]')
    header = (f"<{facility * 8 + severity}>1 {record.ts} {hostname} nonod {procid} "
              f"{_printable(record.kind, 32)} {sd} ")
    return header.encode("ascii") + record.line


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: the length, a space, the message."""
    return b"%d %s" % (len(message), message)


@final
class SyslogSink:
    """Delivers batches to one syslog receiver (``ssl_context`` set: over TLS)."""

    sealed_only = False

    def __init__(self, name: str, host: str, port: int, *, facility: int = 13,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 timeout: float = 10.0, hostname: str | None = None) -> None:
        self.name = name
        self.host, self.port = host, port
        self.facility = facility
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.timeout = timeout
        self.hostname = _printable(hostname or socket.gethostname(), 255)
        self.procid = str(os.getpid())

    def __repr__(self) -> str:
        scheme = "tls" if self.ssl_context else "tcp"
        return f"SyslogSink({self.name!r}, {scheme}://{self.host}:{self.port})"

    async def deliver(self, records: Sequence[ShipRecord]) -> None:
        payload = b"".join(frame(format_message(r, facility=self.facility,
                                                hostname=self.hostname, procid=self.procid))
                           for r in records)
        try:
            with trio.fail_after(self.timeout):
                await self._send(payload)
        except trio.TooSlowError as exc:
            raise SinkError(f"{self!r}: no answer within {self.timeout:g} s") from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise SinkError(f"{self!r}: {describe(exc)}") from exc

    async def _send(self, payload: bytes) -> None:
        tcp = await trio.open_tcp_stream(self.host, self.port)
        if self.ssl_context is None:
            async with tcp:
                await tcp.send_all(payload)
                await tcp.send_eof()
                await _until_closed(tcp)
            return
        tls = trio.SSLStream(tcp, self.ssl_context, server_hostname=self.server_hostname)
        async with tls:
            await tls.do_handshake()
            await tls.send_all(payload)
            # unwrap() sends close_notify and waits for the receiver's (rsyslog answers
            # one). A receiver that closes the connection cleanly after our close_notify,
            # without one of its own, has read everything too; a reset means it may not have.
            try:
                raw, _ = await tls.unwrap()
            except trio.BrokenResourceError as exc:
                if isinstance(exc.__cause__, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                    return
                raise
            await _until_closed(raw)


async def _until_closed(stream: trio.abc.ReceiveStream) -> None:
    """Read (and drop) whatever the receiver says until it closes its side."""
    while await stream.receive_some(4096):
        pass
