"""Shared pieces of the export tests: a real rsyslogd, waiting on a condition, parsing."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest
import trio

#: RFC 5424 as rsyslog's RSYSLOG_SyslogProtocol23Format writes it back.
SYSLOG_LINE = re.compile(
    rb"^<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    rb"(?P<sd>\[[^\]]*\]) (?P<msg>.*)$"
)
SD_PARAM = re.compile(rb'(\w+)="([^"]*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 15.0,
                     what: str = "condition") -> None:
    """Poll an outside process's effect (a file rsyslogd writes) until it shows."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Rsyslog:
    port: int
    out: Path
    process: subprocess.Popen[bytes]

    def lines(self) -> list[bytes]:
        try:
            return self.out.read_bytes().splitlines()
        except FileNotFoundError:
            return []


@contextmanager
def rsyslogd(tmp: Path, *, tls: tuple[Path, Path, Path] | None = None,
             port: int | None = None) -> Iterator[Rsyslog]:
    """A Debian rsyslogd listening on a loopback port (TLS with ``(ca, cert, key)``) and
    writing every message it gets, as RFC 5424, to a file."""
    binary = shutil.which("rsyslogd")
    if binary is None:
        pytest.skip("rsyslogd is not installed (Debian package rsyslog)")
    work = tmp / "rsyslog"
    work.mkdir(exist_ok=True)
    port, out = port or free_port(), work / "received.log"
    if tls is None:
        module = 'module(load="imtcp")'
        drivers = ""
    else:
        ca, cert, key = tls
        module = ('module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                  'StreamDriver.AuthMode="anon")')
        drivers = (f'global(DefaultNetstreamDriverCAFile="{ca}" '
                   f'DefaultNetstreamDriverCertFile="{cert}" '
                   f'DefaultNetstreamDriverKeyFile="{key}")\n')
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}" maxMessageSize="64k")\n{drivers}{module}\n'
        f'input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="ship")\n'
        f'ruleset(name="ship") {{ action(type="omfile" file="{out}" '
        'template="RSYSLOG_SyslogProtocol23Format") }\n'
    )
    process = subprocess.Popen([binary, "-n", "-f", str(conf), "-i", str(work / "pid")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, process)
        yield Rsyslog(port=port, out=out, process=process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"rsyslogd exited: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("rsyslogd did not listen")


def parse_syslog(line: bytes) -> dict[str, bytes]:
    match = SYSLOG_LINE.match(line)
    assert match is not None, line[:200]
    fields = match.groupdict()
    fields.update({k.decode(): v for k, v in SD_PARAM.findall(fields["sd"])})
    return fields


def audit_lines(path: Path | str) -> list[bytes]:
    return Path(path).read_bytes().splitlines()


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, 9)
        process.wait()


@dataclass
class Received:
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """A small HTTP(S) server (h11, trio) that keeps every request it answered 2xx to.
    ``status`` is what it answers next (set it to 503 to refuse)."""

    port: int = 0
    status: int = 200
    requests: list[Received] | None = None

    async def serve(self, ssl_context: ssl.SSLContext | None = None, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.requests = [] if self.requests is None else self.requests
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        if ssl_context is not None:
            listeners = [trio.SSLListener(listener, ssl_context) for listener in listeners]
        self.port = listeners[0].transport_listener.socket.getsockname()[1] \
            if ssl_context is not None else listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(our_role=h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        try:
            async with stream:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(65536)))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None and self.requests is not None
                status = self.status
                if 200 <= status < 300:
                    self.requests.append(Received(
                        target=request.target.decode(),
                        headers={k.decode().lower(): v.decode() for k, v in request.headers},
                        body=bytes(body)))
                await stream.send_all(conn.send(h11.Response(
                    status_code=status, headers=[("Content-Length", "0"),
                                                 ("Connection", "close")]))
                    + conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, h11.ProtocolError, OSError):
            return
