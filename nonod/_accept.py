"""One accept with the back-off every accept loop in nonod shares.

``accept(2)`` fails with ``EMFILE``, ``ENFILE``, ``ENOBUFS`` or ``ENOMEM`` when the process or
the system is short of descriptors or memory. That is not the listener's fault and will pass
when connections close, so an accept loop must not die of it; trio's ``serve_listeners``
pauses and retries, and so do our own loops (the control server's, the proxy's, the learn
proxy's and its forwarders'), which keep their own loops because they admit or refuse each
connection against caps before starting its task. Any other accept error propagates.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import structlog
import trio

log = structlog.get_logger()

#: accept(2) errors that mean "out of resources, try again later" (as trio.serve_listeners).
RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: How long to pause before accepting again after one of those.
PAUSE: Final = 0.1

T = TypeVar("T")


async def accept_retrying(accept: Callable[[], Awaitable[T]], *, event: str) -> T:
    """``await accept()``; on a shortage (``RETRY_ERRNOS``) log ``event``, pause, retry."""
    while True:
        try:
            return await accept()
        except OSError as exc:
            if exc.errno not in RETRY_ERRNOS:
                raise
            log.error(event, errno=errno.errorcode.get(exc.errno or 0),
                      error=os.strerror(exc.errno or 0), retry_in=PAUSE)
            await trio.sleep(PAUSE)
