"""A nursery cut from outside leaves as a group of ``trio.Cancelled``, which an
``except trio.Cancelled`` that records the cut passes by: these let such a group out as the
one ``Cancelled`` it stands for (the proxy's request handlers, the approval asker's chain)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio


def raise_one_cancelled(group: BaseExceptionGroup[BaseException]) -> None:
    """If ``group`` holds nothing but cancellations, raise the first as the one
    ``trio.Cancelled`` it is; else return (the caller raises ``group``)."""
    cancelled, rest = group.split(trio.Cancelled)
    if rest is None and cancelled is not None:
        first: BaseException = cancelled
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


@contextlib.contextmanager
def one_cancelled() -> Iterator[None]:
    """Let a group of nothing but cancellations (a nursery inside, cancelled because the
    session ended) out as one ``trio.Cancelled``: a request's handler records the request
    in its ``except trio.Cancelled``, which a group passes by (before: no record of a
    request cut in such a nursery: the copying relay, a tunnel's first-flight wait, the
    reverse proxy's two-task body)."""
    try:
        yield
    except BaseExceptionGroup as group:
        raise_one_cancelled(group)
        raise
