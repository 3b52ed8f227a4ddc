"""The guard socket between a session's init and its outer launcher carries the guarded
operations (a length-prefixed list) or, when there are none, an empty header, after which the
same stream carries the init's word that the outer may leave (``_launcher.hands_over``). The
outer must tell the two apart whatever the list's length: a one-byte marker once matched the
first byte of a length (0x36e, a daemon policy's list), and the outer took a real list for
"nothing", leaving the init waiting on a closed socket (the launch refused at step guard)."""

from __future__ import annotations

import errno
import os
import socket
import threading

import pytest

from nonod.sandbox._launcher import _receive_guard, _start_guard
from nonod.sandbox._mounts import MASK_DIR, MountOp


def _exchange(ops: tuple[MountOp, ...]) -> tuple[object, bytes, BaseException | None]:
    """The init's ``_start_guard`` and the outer's ``_receive_guard`` (without a hub: it
    refuses a real list with EBADF) on a socket pair, then the init's ``h``: what the outer
    made of the first message, what it read next, and what the init raised."""
    init, outer = socket.socketpair()
    report_r, report_w = os.pipe()
    raised: list[BaseException] = []

    def init_side() -> None:
        try:
            _start_guard(init, ops, report_w, keep=True)
            init.sendall(b"h")
        except OSError as exc:
            raised.append(exc)
            init.sendall(b"h")

    thread = threading.Thread(target=init_side)
    thread.start()
    try:
        outer.settimeout(10)
        got = _receive_guard(outer, None)
        after = outer.recv(1)
    finally:
        outer.close()  # an init still waiting for an answer gets its end
        thread.join()
        for fd in (report_r, report_w):
            os.close(fd)
        init.close()
    return got, after, raised[0] if raised else None


def test_nothing_to_guard_leaves_the_init_word_for_the_outer() -> None:
    assert _exchange(()) == (None, b"h", None)


@pytest.mark.parametrize("low_byte", range(0, 256, 5))
def test_a_guard_list_is_never_taken_for_nothing(low_byte: int) -> None:
    """Lists whose encoded length starts with each byte value in turn (every fifth): the
    outer reads the whole list (and answers; here, without a hub, with an error), never the
    empty header's reading."""
    pad = next(n for n in range(600) if len(_payload("a" * n)) % 256 == low_byte)
    got, after, raised = _exchange((MountOp(MASK_DIR, "/x" + "a" * pad),))
    assert got is None and after == b"h"
    assert isinstance(raised, OSError) and raised.errno == errno.EBADF, raised


def _payload(pad: str) -> bytes:
    import msgspec

    return msgspec.msgpack.encode((MountOp(MASK_DIR, "/x" + pad),))
