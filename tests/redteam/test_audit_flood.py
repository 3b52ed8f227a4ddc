"""Red team, the daemon's disk: every refused proxy request is an audit record, so a program
that loops on refused CONNECTs wrote ~560 KB/s into the daemon's state directory (2 GB an hour
per session, on this machine) with no bound, until the disk was full and every session's audit
failed. ``[audit] session_max_bytes`` bounds one session's file: reaching it stops the
session (reason ``audit_limit``), and the file still verifies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.audit import verify_session_file
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env

LIMIT = 1 << 20

FLOOD = r'''
import base64, os, socket
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
n = 0
while True:
    s = socket.create_connection((proxy.hostname, proxy.port))
    s.sendall(f"CONNECT refused-{n}.example.net:443 HTTP/1.1\r\nHost: x\r\n"
              f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    s.recv(100)
    s.close()
    n += 1
'''


@pytest.fixture
def run(short_tmp: Path) -> Iterator[CLI]:
    handle = DaemonThread(short_tmp, config=f"[audit]\nsession_max_bytes = {LIMIT}\n").start()
    yield CLI(cli_env(handle.socket, short_tmp), short_tmp)
    handle.stop()


def test_a_session_flooding_its_audit_file_is_stopped_at_the_limit(
        run: CLI, short_tmp: Path) -> None:
    (short_tmp / "flood.py").write_text(FLOOD)
    done = run("launch", "--allow-cwd", "--allow-domain", "example.com", "--",
               "/usr/bin/python3", "-S", "flood.py")
    assert done.returncode == 128 + 9, done.stderr  # killed at once (grace 0)
    detail = json.loads(run("inspect", "--json", run("ps", "-a", "-q").stdout.split()[0])
                        .stdout)
    assert detail["reason"] == "audit_limit"
    audit = next(short_tmp.rglob("audit.ndjson"))
    size = audit.stat().st_size
    assert LIMIT <= size < LIMIT + (256 << 10), size  # stopped within a few hundred records
    verify_session_file(audit, session=detail["id"])
    last = json.loads(audit.read_text().splitlines()[-2])  # the seal is the last line
    assert last["event"]["type"] == "session_ended"
    assert last["event"]["reason"] == "audit_limit"
