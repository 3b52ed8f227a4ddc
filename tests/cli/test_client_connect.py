"""nonoctl's connect to a busy daemon: a full accept queue is waited out, not an error."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from nonoctl.client import _connect_unix


def test_a_full_accept_queue_is_retried_until_the_daemon_accepts(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(0)
    queued = []
    try:
        while True:  # fill the queue: the kernel now answers EAGAIN at once
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(path))
            except BlockingIOError:
                s.close()
                break
            queued.append(s)
        with pytest.raises(BlockingIOError):
            _connect_unix(path, 0.05)  # gives up at its timeout, with the kernel's error

        def drain() -> None:
            time.sleep(0.2)
            server.settimeout(2)
            for _ in range(len(queued) + 1):
                server.accept()[0].close()

        thread = threading.Thread(target=drain)
        thread.start()
        started = time.monotonic()
        connected = _connect_unix(path, 5)
        waited = time.monotonic() - started
        connected.close()
        thread.join()
        assert 0.1 < waited < 5
    finally:
        for s in queued:
            s.close()
        server.close()
