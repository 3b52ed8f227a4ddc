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
import struct
import threading

import pytest

from nonod.sandbox._launcher import (
    Ready,
    View,
    _arm_guard,
    _receive_guard,
    _send_report,
    _start_guard,
)
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


def test_a_guard_that_could_not_start_ahead_is_set_up_again_at_launch() -> None:
    """A prepared launcher arms its guard before any plan (``_arm_guard``); when the hub
    cannot watch then (the user out of inotify instances, say), the launch that takes the
    launcher asks again with the report pipe (``_send_report``), as a cold launch would,
    and goes on once the hub watches: the shortage fails only the launches made during it.
    Here the test plays the hub: "E" (EMFILE) first, then "k"."""
    ops = (MountOp(MASK_DIR, "/nonexistent-nono-test/secret"),)  # nothing there to cover
    ready = Ready(View(mounts=ops, pinned=(), landlock=None, creation_refused=()), -1, ())
    init, outer = socket.socketpair()
    hub_ours, hub_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe()
    raised: list[BaseException] = []
    answers: list[bytes] = []

    def init_side() -> None:
        try:
            assert _arm_guard(init, ready).armed
            _send_report(init, ops, report_w, keep=True)
        except (OSError, AssertionError) as exc:
            raised.append(exc)

    def hub_side() -> None:
        for answer in (b"E" + struct.pack("<i", errno.EMFILE), b"k"):
            while True:  # "O" (the paths on the way), then "W" (the directories to watch)
                msg, fds, _, _ = socket.recv_fds(hub_theirs, 1 << 16, 200)
                for fd in fds:
                    os.close(fd)
                if msg[:1] == b"W":
                    break
            answers.append(answer)
            hub_theirs.send(answer)

    threads = [threading.Thread(target=init_side), threading.Thread(target=hub_side)]
    for thread in threads:
        thread.start()
    try:
        outer.settimeout(10)
        got = _receive_guard(outer, hub_ours)
    finally:
        for thread in threads:
            thread.join(10)
        for fd in (report_r, report_w):
            os.close(fd)
        for sock in (init, outer, hub_ours, hub_theirs):
            sock.close()
    assert answers == [b"E" + struct.pack("<i", errno.EMFILE), b"k"]
    assert got is not None and got[1] >= 0, got  # guarded, reporting on the pipe passed
    os.close(got[1])
    assert not raised, raised
