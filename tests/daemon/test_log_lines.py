"""The daemon's log lines: structlog's go straight to the one handler ``configure_logging``
installs (``_logging._Direct``), and are the lines the standard library's way (a record, the
handler, ``ProcessorFormatter``) writes for the same events, redaction and tracebacks
included; the standard library's own records still go that way."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog
from structlog.contextvars import bound_contextvars

from nonod import _logging

TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z")


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.disable(logging.NOTSET)
    structlog.reset_defaults()


def _through_the_standard_library(stream: io.StringIO, console: bool) -> None:
    """The reference: every structlog line as a record, formatted by the handler."""
    _logging.configure_logging(level="info", fmt="console" if console else "json",
                               stream=stream)
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *_logging._shared_processors(),
                    structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger, cache_logger_on_first_use=False)


def _events() -> None:
    log = structlog.get_logger("nonod.sessions._registry")
    with bound_contextvars(session="s-1", conn=3):
        log.info("session started", name="x", pid=12, argv0=["/bin/true"], uid=0,
                 token="abc", note="key ghp_" + "a" * 30)
        log.debug("not at info")
        log.warning("odd", when=1.5, what=None, nested={"password": "p", "ok": [1, "b"]})
        try:
            raise ValueError("boom with sk-" + "x" * 20)
        except ValueError:
            log.exception("failed", step="exec")
        log.error("positional %s", "arg")
    logging.getLogger("trio").warning("from %s", "the standard library")


def _lines(stream: io.StringIO, console: bool) -> list[object]:
    out: list[object] = []
    for line in stream.getvalue().splitlines():
        if console:
            out.append(TIME.sub("T", line))
        else:
            fields = json.loads(line)
            assert fields.pop("timestamp")
            out.append(fields)
    return out


@pytest.mark.parametrize("console", [False, True], ids=["json", "console"])
def test_the_lines_are_the_standard_librarys(console: bool) -> None:
    reference, direct = io.StringIO(), io.StringIO()
    _through_the_standard_library(reference, console)
    _events()
    _logging.configure_logging(level="info", fmt="console" if console else "json",
                               stream=direct)
    _events()
    assert _lines(direct, console) == _lines(reference, console)
    assert console or len(_lines(direct, console)) == 5  # (console: tracebacks take lines)
    assert "[redacted]" in direct.getvalue() and "ghp_" not in direct.getvalue()


def test_structlog_lines_make_no_record_and_follow_the_level() -> None:
    stream, records = io.StringIO(), []
    _logging.configure_logging(level="info", fmt="json", stream=stream)
    (handler,) = logging.getLogger().handlers
    handler.addFilter(lambda record: records.append(record) or True)
    log = structlog.get_logger("nonod.test")
    log.info("one")
    log.debug("hidden")
    _logging.set_level("debug")
    log.debug("shown")
    logging.disable(logging.CRITICAL)
    log.error("disabled")
    logging.disable(logging.NOTSET)
    logging.getLogger("trio").info("foreign")
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["one", "shown", "foreign"]
    assert [r.name for r in records] == ["trio"]  # only the standard library's own
