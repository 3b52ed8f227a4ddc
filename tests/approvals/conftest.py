"""Fixtures of the approvals tests: a pinned fake HTTPS host and a daemon pinned to it."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from nonoctl.client import Client, EventStream
from nonod import protocol as p
from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.localusers import socket_group
from tests.daemon.test_cli import CLI, cli_env

HOST = "api.example.test"
EVENT_TIMEOUT = 90.0
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

#: The program in the session: fetch each URL through the proxy, one line per answer.
INSIDE = r'''
import os, ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[1])
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"https": os.environ["HTTPS_PROXY"],
                                 "http": os.environ["HTTP_PROXY"]}),
    urllib.request.HTTPSHandler(context=context))
for url in [arg for arg in sys.argv[2:] if not arg.startswith("--")]:
    try:
        with opener.open(url, timeout=120) as response:
            print(response.status, response.read().decode(), flush=True)
    except OSError as exc:
        print("refused", exc, flush=True)
'''


@dataclass
class FakeHost:
    """``api.example.test`` over TLS (a private CA), on a thread; it records each path."""

    port: int = 0
    ca_file: Path = Path()
    paths: list[str] = field(default_factory=list)
    ca: trustme.CA | None = None


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def https_server(ca: trustme.CA, name: str, handler: type[BaseHTTPRequestHandler]
                 ) -> Iterator[int]:
    """Serve ``handler`` over TLS as ``name`` (a certificate from ``ca``) on a thread; yields
    its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_host(short_tmp: Path) -> Iterator[FakeHost]:
    ca = trustme.CA()
    fake = FakeHost(ca_file=short_tmp / "ca.pem", ca=ca)
    ca.cert_pem.write_to_path(str(fake.ca_file))
    fake.ca_file.chmod(0o644)

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            fake.paths.append(self.path)
            self.reply(200, f"hello {self.path}".encode())

    with https_server(ca, HOST, Handler) as port:
        fake.port = port
        yield fake


@dataclass
class Setup:
    """A running daemon pinned to the fake host, and how to launch the fetching program."""

    base: Path
    daemon: DaemonThread
    fake: FakeHost
    cli: CLI

    def profile(self, network: dict[str, Any], name: str = "ask", **more: Any) -> Path:
        path = self.base / f"{name}.json"
        path.write_text(json.dumps({
            "meta": {"name": name},
            "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", str(self.base)]},
            "network": network,
            **more,
        }))
        path.chmod(0o644)
        return path

    def launch(self, profile: Path, *paths: str) -> subprocess.Popen[bytes]:
        """``nonoctl launch`` (attached) of the fetching program, for each path in turn."""
        urls = [f"https://{HOST}{path}" for path in paths]
        return self.cli.popen("launch", "--profile", str(profile), "--", PY, "-S",
                              str(self.base / "inside.py"), str(self.fake.ca_file), *urls)

    def client(self) -> Client:
        return Client(self.daemon.socket, autostart=False)

    def events(self, client: Client) -> EventStream:
        """The client's event stream, bounded: a launch that fails fails the test instead
        of leaving it waiting for an approval that never comes."""
        stream = client.events()
        stream._conn.sock.settimeout(EVENT_TIMEOUT)
        return stream

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line)["event"] for path in self.daemon.state_dir.rglob("audit.ndjson")
                for line in path.read_text().splitlines() if line.strip()]


def next_pending(events: EventStream) -> p.ApprovalInfo:
    """The next approval that is held (the subscription delivers it as it opens)."""
    for event in events:
        if isinstance(event, p.ApprovalEvent) and event.kind == "approval_pending":
            return event.approval
    raise AssertionError("the event stream ended without a pending approval")


def finish(proc: subprocess.Popen[bytes]) -> list[str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()


def daemon_setup(base: Path, fake: FakeHost, pins: dict[str, str] | None = None, *,
                 system: bool = False, extra_config: str = "") -> Setup:
    """A daemon pinned to ``fake`` (and to ``pins``; ``system``: a system daemon, its socket
    in ``socket_group()``), with the fetching program in ``base``."""
    (base / "inside.py").write_text(INSIDE)
    resolve = ", ".join(f'"{name}" = "{to}"' for name, to in
                        {HOST: f"127.0.0.1:{fake.port}", **(pins or {})}.items())
    config = (f'[network]\nresolve = {{{resolve}}}\nextra_ca_file = "{fake.ca_file}"\n'
              + extra_config)
    if system:  # root's own sessions run as root: the daemon must allow it
        config = (f'[daemon]\nsocket_group = "{socket_group()}"\n'
                  '[sessions]\nallow_root = true\n' + config)
    daemon = DaemonThread(base, config=config, system=system).start()
    return Setup(base=base, daemon=daemon, fake=fake, cli=CLI(cli_env(daemon.socket, base), base))


@pytest.fixture
def setup(short_tmp: Path, fake_host: FakeHost) -> Iterator[Setup]:
    ready = daemon_setup(short_tmp, fake_host)
    try:
        yield ready
    finally:
        ready.daemon.stop()
