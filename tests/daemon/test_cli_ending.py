"""An attached ``nonoctl launch`` always ends (issue 19, item 6).

- The daemon dies under it (``kill -9``): it exits promptly, non-zero, saying the connection was
  lost (it used to spin at 100 % CPU on the closed socket, forever).
- SIGINT/SIGTERM before the session exists: it exits 130 (they used to be queued for a session
  that never came), and closing its connection is what tells the daemon to give up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import wsproto
import wsproto.events as ws_events

from nonod import protocol as p

from .conftest import wait_pid_gone
from .test_cli import cli_env
from .test_daemon_process import Nonod


def test_a_killed_daemon_ends_the_attached_launch(short_tmp: Path) -> None:
    nonod = Nonod(short_tmp)
    assert nonod.start().returncode == 0
    daemon_pid = nonod.pid()
    errors = short_tmp / "stderr"
    with errors.open("wb") as stderr:
        launch = subprocess.Popen(
            [sys.executable, "-m", "nonoctl", "launch", "--allow-cwd", "--", "sh", "-c",
             "echo started; exec sleep 120"],
            env=cli_env(nonod.socket, short_tmp), cwd=short_tmp, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=stderr,
        )
    try:
        assert launch.stdout is not None
        assert launch.stdout.readline() == b"started\n"  # attached, the session runs
        os.kill(daemon_pid, signal.SIGKILL)
        assert wait_pid_gone(daemon_pid)
        status = launch.wait(timeout=30)
    finally:
        launch.kill()
        launch.wait()
    assert status == 122
    message = errors.read_text()
    assert "closed the connection" in message or "lost the connection" in message, message
    assert "Traceback" not in message


class SilentDaemon:
    """Speaks the protocol up to ``welcome``, then takes a launch and never answers it."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.launch_received = threading.Event()
        self.client_closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        with conn:
            while data := conn.recv(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, ws_events.Request):
                        conn.sendall(ws.send(ws_events.AcceptConnection(subprotocol="nono.v1")))
                    elif isinstance(event, ws_events.TextMessage) and '"hello"' in event.data:
                        welcome = p.Welcome(protocol=p.PROTOCOL_VERSION, daemon="silent", pid=1,
                                            uid=os.geteuid(), system=False)
                        conn.sendall(ws.send(ws_events.Message(data=p.encode(welcome).decode())))
                    elif isinstance(event, ws_events.TextMessage) and '"launch"' in event.data:
                        self.launch_received.set()
            self.client_closed.set()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_session_exists_exits_130(short_tmp: Path, signum: int) -> None:
    run = short_tmp / "run"
    run.mkdir(mode=0o700)
    daemon = SilentDaemon(run / "nonod.sock")
    try:
        launch = subprocess.Popen(
            [sys.executable, "-m", "nonoctl", "launch", "--allow-cwd", "--", "true"],
            env=cli_env(run / "nonod.sock", short_tmp), cwd=short_tmp,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            assert daemon.launch_received.wait(30)
            launch.send_signal(signum)
            _, stderr = launch.communicate(timeout=30)
        finally:
            launch.kill()
            launch.wait()
        assert launch.returncode == 130, stderr
        assert b"interrupted before the session started" in stderr
        assert daemon.client_closed.wait(30)
    finally:
        daemon.close()
