"""The fork server's poller (``_poller.EPoller``): ``select.poll``'s behaviour where the fork
server and its guard hub rely on it, on an epoll set whose wake-ups cost what is ready, not
what is registered."""

from __future__ import annotations

import os
import select
import socket
import time

import pytest

from nonod.sandbox._poller import EPoller


def test_it_reports_the_ready_descriptor_among_many_idle_ones() -> None:
    poller = EPoller()
    pairs = [socket.socketpair() for _ in range(500)]
    try:
        for ours, _ in pairs:
            poller.register(ours, select.POLLIN)
        assert poller.poll(0) == []
        pairs[321][1].send(b"x")
        assert poller.poll(1000) == [(pairs[321][0].fileno(), select.POLLIN)]
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
        poller.close()


def test_register_again_changes_the_mask_and_unregister_of_a_stranger_is_a_key_error() -> None:
    poller = EPoller()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        poller.register(ours, select.POLLIN)
        assert poller.poll(0) == []
        poller.register(ours, select.POLLOUT)  # as poll's: the mask replaced, no error
        assert poller.poll(0) == [(ours.fileno(), select.POLLOUT)]
        poller.unregister(ours)
        with pytest.raises(KeyError):
            poller.unregister(ours)
    poller.close()


def test_the_timeout_is_in_milliseconds() -> None:
    poller = EPoller()
    r, w = os.pipe()
    try:
        poller.register(r, select.POLLIN)
        began = time.monotonic()
        assert poller.poll(30) == []
        assert 0.025 <= time.monotonic() - began < 5
    finally:
        os.close(r)
        os.close(w)
        poller.close()


def test_a_descriptor_unregistered_then_closed_is_not_reported_while_a_child_holds_it() -> None:
    """The fork server's children hold copies of its descriptors for a while after the fork:
    one it unregistered and closed is never reported again, even under a number a new
    descriptor took meanwhile."""
    poller = EPoller()
    ours, theirs = socket.socketpair()
    poller.register(ours, select.POLLIN)
    child = os.fork()
    if child == 0:  # holds its copies until killed
        time.sleep(60)
        os._exit(0)
    try:
        poller.unregister(ours)
        ours.close()
        r, w = os.pipe()  # (likely under the closed one's number)
        try:
            poller.register(r, select.POLLIN)
            theirs.send(b"x")  # the old file is readable now, in the child
            assert poller.poll(50) == []
            os.write(w, b"y")
            assert poller.poll(1000) == [(r, select.POLLIN)]
        finally:
            os.close(r)
            os.close(w)
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        theirs.close()
        poller.close()
