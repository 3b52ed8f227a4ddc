"""Envelope sink: each sealed session, once, as a signed envelope POSTed to a control plane.

The body is :func:`nonod.audit._envelope.build_envelope` (JSON, media type
``application/vnd.nono.audit-envelope.v1+json``), signed with the daemon's audit key; the
``Idempotency-Key`` header is the envelope's id (``<session>:<seal hash>``), so a control
plane that got it before (a retry after a lost answer) can answer 2xx without storing it
twice. ``nonoctl audit verify --envelope FILE`` is the receiver's check.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import final

import trio

from ..audit._envelope import MEDIA_TYPE, build_envelope
from ..audit._errors import AuditError
from ..audit._sign import Signer
from ._errors import ExportError
from ._http import check_url, post
from ._source import ShipRecord


@final
class EnvelopeSink:
    sealed_only = True

    def __init__(self, name: str, url: str, *, signer: Signer,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 30.0,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        check_url(url)
        self.name, self.url = name, url
        self.signer = signer
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.headers = tuple(headers)

    def __repr__(self) -> str:
        return f"EnvelopeSink({self.name!r}, {self.url})"

    async def deliver(self, records: Sequence[ShipRecord]) -> None:
        session = records[0].session
        lines = [r.line for r in records]

        def build() -> bytes:
            return build_envelope(session, lines, self.signer, where=f"session {session}")

        try:
            body = await trio.to_thread.run_sync(build)
        except AuditError as exc:
            raise ExportError(f"cannot build the envelope of session {session}: "
                              f"{exc.message}") from exc
        seal_hash = records[-1].hash
        await post(self.url, body, content_type=MEDIA_TYPE, ssl_context=self.ssl_context,
                   timeout=self.timeout,
                   headers=(("Idempotency-Key", f"{session}:{seal_hash}"), *self.headers))
