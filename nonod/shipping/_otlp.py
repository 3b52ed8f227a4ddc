"""OpenTelemetry logs sink: OTLP/HTTP, binary protobuf, ``POST <url>`` (``/v1/logs``).

One ``ExportLogsServiceRequest`` per batch: one resource (``service.name`` = ``nonod``,
``host.name``), one scope (``nono.audit``), one ``LogRecord`` per record:

- ``time_unix_nano``: the record's ``ts``; ``observed_time_unix_nano``: when it was sent;
- ``severity_number`` WARN (13) for a refusal or failure, INFO (9) otherwise;
- ``event_name``: ``nono.audit.<kind>``;
- ``body``: the stored line as a string, byte for byte;
- attributes ``nono.record.id`` (``<session>:<seq>``, the id to deduplicate on),
  ``nono.session``, ``nono.seq`` (int), ``nono.hash``.

The messages are few and fixed, so they are encoded here (protobuf wire format: varint keys,
length-delimited submessages) rather than through a protobuf runtime the daemon would
otherwise not need; the tests decode them with the official ``opentelemetry-proto``
classes. A 2xx answer is acceptance (a partial-success body is not read: the records are
re-sent only on a non-2xx answer).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from typing import Final, final

from ._http import check_url, post
from ._source import ShipRecord

CONTENT_TYPE: Final = "application/x-protobuf"
SEVERITY_INFO: Final = 9
SEVERITY_WARN: Final = 13
_LEN, _VARINT, _I64 = 2, 0, 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes(number: int, data: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(data)) + data


def _str(number: int, text: str) -> bytes:
    return _bytes(number, text.encode())


def _uint(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _varint(value)


def _fixed64(number: int, value: int) -> bytes:
    return _key(number, _I64) + struct.pack("<Q", value)


def _attribute(key: str, value: str | int) -> bytes:
    any_value = _uint(3, value) if isinstance(value, int) else _str(1, value)  # int/string
    return _str(1, key) + _bytes(2, any_value)


def unix_nanos(ts: str) -> int:
    """An audit ``ts`` (``2025-06-01T12:00:00.005000Z``) in nanoseconds since the epoch."""
    when = dt.datetime.fromisoformat(ts)
    whole = int(when.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + when.microsecond * 1000


def log_record(record: ShipRecord, observed: int) -> bytes:
    severity = SEVERITY_WARN if record.notable else SEVERITY_INFO
    attributes = (("nono.record.id", record.id), ("nono.session", record.session),
                  ("nono.seq", record.seq), ("nono.hash", record.hash))
    return b"".join((
        _fixed64(1, unix_nanos(record.ts)),
        _uint(2, severity),
        _bytes(5, _str(1, record.line.decode())),
        *(_bytes(6, _attribute(k, v)) for k, v in attributes),
        _fixed64(11, observed),
        _str(12, f"nono.audit.{record.kind}"),
    ))


def export_request(records: Sequence[ShipRecord], *, hostname: str,
                   observed: int | None = None) -> bytes:
    """The ``ExportLogsServiceRequest`` for a batch."""
    now = time.time_ns() if observed is None else observed
    resource = b"".join(_bytes(1, _attribute(k, v))
                        for k, v in (("service.name", "nonod"), ("host.name", hostname)))
    scope = _str(1, "nono.audit")
    scope_logs = _bytes(1, scope) + b"".join(_bytes(2, log_record(r, now)) for r in records)
    resource_logs = _bytes(1, resource) + _bytes(2, scope_logs)
    return _bytes(1, resource_logs)


@final
class OtlpSink:
    sealed_only = False

    def __init__(self, name: str, url: str, *, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 10.0, headers: Sequence[tuple[str, str]] = (),
                 hostname: str | None = None) -> None:
        check_url(url)
        self.name, self.url = name, url
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.headers = tuple(headers)
        self.hostname = hostname or socket.gethostname()

    def __repr__(self) -> str:
        return f"OtlpSink({self.name!r}, {self.url})"

    async def deliver(self, records: Sequence[ShipRecord]) -> None:
        await post(self.url, export_request(records, hostname=self.hostname),
                   content_type=CONTENT_TYPE, headers=self.headers,
                   ssl_context=self.ssl_context, timeout=self.timeout)
