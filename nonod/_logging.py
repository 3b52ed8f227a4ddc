"""Operational logging for the daemon: structlog, configured once, in ``main()``.

Importing this module configures nothing. :func:`configure_logging` sets up one pipeline for
both structlog and the standard library (trio, trio-websocket, keyring...): JSON lines when
stderr is not a terminal (the journal, a log file), a readable console format when it is.

Every event passes :func:`redact` before it is rendered, and tracebacks never include local
variables (``ExceptionDictTransformer(show_locals=False)``): a daemon that holds credentials
must not print them by accident. Modules log through ``structlog.get_logger()`` and bind
``session``/``conn`` with ``structlog.contextvars.bound_contextvars`` in the spawning task.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from typing import Any, Final, Literal, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]
REDACTED: Final = "[redacted]"

# Keys whose values are never logged, whatever they hold.
_SECRET_KEY = re.compile(
    r"(token|secret|passw|credential|authorization|api[_-]?key|cookie|private|^env$|environ)",
    re.IGNORECASE,
)
# Values that look like well-known credentials, wherever they appear.
_SECRET_VALUE = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|sk-[A-Za-z0-9_-]{16,}"
    r"|AIza[0-9A-Za-z_-]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    """Whether ``key`` names a secret: asked of every key of every line, and the keys are
    the code's own few names, so each is searched once (bounded for data's keys)."""
    return _SECRET_KEY.search(key) is not None


_STRUCTURAL = frozenset({"event", "level", "timestamp", "logger", "exc_info", "_record",
                         "_from_structlog"})


def _scrub(value: object, depth: int = 0) -> object:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _secret_key(k) else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace secret-looking keys and values with ``[redacted]``."""
    for key in list(event_dict):
        if key in _STRUCTURAL:
            if key == "event":
                event_dict[key] = _scrub(event_dict[key])
            continue
        if _secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _json_dumps(obj: Any, **_kw: Any) -> str:
    # JSONRenderer passes ``default=``, which msgspec does not take: map unknown objects to str.
    return msgspec.json.encode(obj, enc_hook=str).decode("utf-8")


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderers(*, console: bool) -> list[Processor]:
    """The last processors of every line, structlog's and the standard library's: the
    traceback rendered to data first, so that redaction sees exception messages too."""
    if console:
        return [
            structlog.processors.format_exc_info,
            redact,
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    return [
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        ),
        redact,
        structlog.processors.JSONRenderer(serializer=_json_dumps),
    ]


class _Direct:
    """What structlog's loggers write through: the standard library's logger of the same
    name for everything it is asked (name, effective level...), but a rendered line goes
    straight to the one handler :func:`configure_logging` installed, under that handler's
    lock, as its ``emit`` would write it.

    The standard library's way (a ``LogRecord``, copied again by ``ProcessorFormatter``, the
    handler's filters and ``Formatter.format`` for a line that is already the message) cost
    about two thirds of each structlog line's CPU. The line is the same: the processors are
    the formatter's, in the same order, on the same event dictionary. What is skipped is what
    configure_logging leaves empty: handlers of other loggers, filters, the handler's level
    (unset). ``logging.disable`` is still honoured."""

    __slots__ = ("_handler", "_logger", "name")

    def __init__(self, logger: logging.Logger, handler: logging.StreamHandler[TextIO]) -> None:
        self._logger = logger
        self._handler = handler
        self.name = logger.name  # ``add_logger_name``'s, at every line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    # ``filter_by_level``'s two questions, at every line.
    @property
    def disabled(self) -> bool:
        return self._logger.disabled

    def getEffectiveLevel(self) -> int:
        return self._logger.getEffectiveLevel()

    def _write(self, level: int, line: str) -> None:
        if self._logger.manager.disable >= level:
            return
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except Exception:  # noqa: BLE001 - as the handler's emit: reported, never raised
            handler.handleError(logging.makeLogRecord({"msg": line, "levelno": level}))
        finally:
            handler.release()

    def debug(self, line: str) -> None:
        self._write(logging.DEBUG, line)

    def info(self, line: str) -> None:
        self._write(logging.INFO, line)

    def warning(self, line: str) -> None:
        self._write(logging.WARNING, line)

    def error(self, line: str) -> None:
        self._write(logging.ERROR, line)

    exception = error

    def critical(self, line: str) -> None:
        self._write(logging.CRITICAL, line)

    warn = warning
    fatal = critical


class _DirectFactory(structlog.stdlib.LoggerFactory):
    """structlog's standard-library logger factory (the same names), each logger wrapped."""

    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        super().__init__()
        self._handler = handler

    def __call__(self, *args: Any) -> Any:
        return _Direct(super().__call__(*args), self._handler)


def configure_logging(
    *, level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library through one redacting renderer."""
    out = stream if stream is not None else sys.stderr
    final = _renderers(console=fmt == "console" or (fmt == "auto" and out.isatty()))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    # Per-frame chatter of the WebSocket library is noise even at debug level.
    logging.getLogger("trio-websocket").setLevel(max(numeric, logging.INFO))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            *final,
        ],
        logger_factory=_DirectFactory(handler),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def set_level(level: str) -> None:
    """Change the level after a configuration reload (structlog defers to the stdlib level)."""
    logging.getLogger().setLevel(logging.getLevelName(level.upper()))
