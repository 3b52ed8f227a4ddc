"""A warm launcher that never becomes ready does not hold the fork server.

A launch takes a warm launcher and waits for its ``READY``, which normally comes within
milliseconds. A view path on a file system whose server stopped answering (a FUSE mount the
system daemon's caller made in their home) would hang the launcher's preparation forever, and
with it the fork server, which serves every user's launches and view-guard repairs (review of
the eighth session). The wait is bounded: past ``READY_PATIENCE`` the launcher is killed and the
launch is made cold, in a child the fork server does not wait for.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from nonod.sandbox import _forkserver


def test_a_warm_launcher_not_ready_in_time_is_killed_and_not_waited_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_forkserver, "READY_PATIENCE", 0.3, raising=False)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # A launcher stuck before READY: alive, holding its end of the socket, saying nothing.
    stuck = subprocess.Popen(["sleep", "60"], pass_fds=[theirs.fileno()])
    theirs.close()
    warm = object.__new__(_forkserver._Warm)
    warm.sock, warm.pid, warm.hello, warm.nicer, warm.hub_key = ours, stuck.pid, None, False, None
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(warm._wait_ready()), daemon=True)
    began = time.monotonic()
    try:
        waiter.start()
        waiter.join(5)
        assert not waiter.is_alive(), "the fork server still waits for the stuck launcher"
        assert got == [None] and time.monotonic() - began < 3
        assert stuck.wait(timeout=5) == -9  # killed, not left hanging
    finally:
        stuck.kill()
        stuck.wait()
        ours.close()
