"""The shipping area's errors: ``export.*`` codes.

``SinkError`` is a delivery that did not happen (connection refused, a non-2xx status, a
timeout): the exporter keeps its cursor and retries after a backoff. ``ExportError`` is a
fault of the exporter's own state (a cursor file it cannot read or write, a session file
whose chain does not verify): it is logged and that sink, or that session, waits.
"""

from __future__ import annotations

from ..errors import NonoError


class ExportError(NonoError):
    code = "export.error"


class SinkError(ExportError):
    """A sink did not accept a batch; nothing was marked delivered."""

    code = "export.sink"


class CursorError(ExportError):
    """A sink's cursor file cannot be read or written."""

    code = "export.cursor"


def describe(exc: BaseException) -> str:
    """What went wrong, for a log line: trio's stream errors often carry it in their cause
    (a TLS verification failure is a ``BrokenResourceError`` from an ``SSLError``)."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    inner = str(cause) if cause is not None else ""
    if inner and inner not in text:
        text = f"{text}: {inner}" if text else inner
    return text or type(exc).__name__
