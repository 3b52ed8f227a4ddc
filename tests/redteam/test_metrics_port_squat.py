"""Red team, the system daemon kept from starting by another local user holding its metrics
port: with ``[metrics] listen`` on a TCP port of the loopback (the documented
``127.0.0.1:9464``, above 1024: any user may bind it), a user who bound that port first (or in
the moment of a restart) made the system daemon refuse to start (``metrics.listen``): nono was
down for every user for as long as they held it. Now the system daemon starts without its
endpoint, says so, and binds the port once it is free (``serve_metrics``, ``wait_for_port``);
a user daemon still refuses to start, as the one user's own configuration mistake."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client
from tests.daemon.localusers import LocalUser, local_users, socket_group
from tests.redteam.conftest import free_port

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: Binds and listens on 127.0.0.1:PORT, prints "holding", holds it until its stdin closes.
HOLDER = r"""
import socket, sys
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def squatter(short_tmp: Path) -> Iterator[LocalUser]:
    with local_users(short_tmp, 1) as made:
        yield made[0]


def _scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert b"nono_sessions" in reply.read()
        return int(reply.status)


def test_another_user_holding_the_metrics_port_does_not_keep_the_daemon_down(
        squatter: LocalUser, short_tmp: Path) -> None:
    port = free_port()
    holder = subprocess.Popen([*squatter.prefix(), SYSTEM_PYTHON, "-c", HOLDER, str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    handle = DaemonThread(short_tmp, system=True, config=(
        f'[daemon]\nsocket_group = "{socket_group()}"\n'
        f'[metrics]\nenabled = true\nlisten = "127.0.0.1:{port}"\n'))
    try:
        handle.start()  # before: MetricsError, the daemon did not start
        status = raw_client(handle.socket, [hello(), {"type": "status"}])
        assert json.loads(status[-1])["type"] == "daemon_status", status
        holder.communicate("", timeout=30)  # the port is free again: the daemon takes it
        deadline = time.monotonic() + 30
        while True:
            try:
                assert _scrape(port) == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # polled: the daemon retries on its own schedule
    finally:
        if holder.poll() is None:
            holder.communicate("", timeout=30)
        handle.stop()
