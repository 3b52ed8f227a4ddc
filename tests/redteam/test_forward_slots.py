"""Red team, a session's forwarded port kept from its owner by another local user: the daemon
forwards at most 256 connections at once into a session's ``listen_ports``, and any local
user may connect to the host's side. One user holding 256 idle connections left the
session's owner unable to reach the service it forwarded (its connections were closed at
once). Now one uid other than the session's (the kernel's answer for the peer socket,
``sock_diag``) holds at most a quarter of them."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import hold_tcp, workdir
from tests.redteam.test_listen_ports import _free_ports

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: The session's service: echoes one line per connection, many connections at once.
ECHO = r"""
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())
socketserver.ThreadingTCPServer.request_queue_size = 512
socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""


def _echo(port: int, prefix: list[str]) -> str:
    code = ("import socket, sys\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=20)\n"
            "s.sendall(b'ping\\n')\n"
            "print(s.recv(16).decode().strip() or 'CLOSED')\n")
    done = subprocess.run([*prefix, SYSTEM_PYTHON, "-c", code], capture_output=True,
                          text=True, timeout=60, cwd="/", check=False)
    return done.stdout.strip() or done.stderr.strip()[-200:]


def test_another_user_cannot_take_every_place_of_a_forwarded_port(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (owner, other) = two_users
    port = _free_ports(1)[0]
    work = workdir(owner)
    launch = {"type": "launch", "argv": ["/usr/bin/python3", "-c", ECHO, str(port)],
              "cwd": str(work), "env": session_env(work), "detach": True, "stdio": "null",
              "name": "svc", "options": {"allow_cwd": True, "block_net": True,
                                         "listen_ports": [port]}}
    reply = json.loads(raw_client(handle.socket, [hello(), launch], prefix=owner.prefix())[1])
    assert reply["type"] == "launched", reply
    try:
        deadline = time.monotonic() + 60  # the service starts inside: its first answer
        while _echo(port, owner.prefix()) != "ping":
            assert time.monotonic() < deadline, "the session's service never answered"
        holder = hold_tcp(other, port, 256)
        try:
            assert _echo(port, owner.prefix()) == "ping"  # before: CLOSED
        finally:
            holder.communicate(timeout=30)
    finally:
        raw_client(handle.socket, [hello(), {"type": "stop", "session": "svc", "force": True}],
                   prefix=owner.prefix())
