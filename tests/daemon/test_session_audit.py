"""Through the daemon: a network-restricted session is refused what its profile does not
allow, and leaves a sealed audit file that verifies and records those decisions."""

from __future__ import annotations

import json
from pathlib import Path

from nonod.audit import verify_session_file

from .conftest import DaemonThread
from .test_cli import CLI, cli_env

PROBE = r"""
import base64, os, socket
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
s = socket.create_connection((proxy.hostname, proxy.port), timeout=5)
s.sendall(f"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n"
          f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
print("proxy answered", s.recv(12).decode().split(" ")[1])
try:
    socket.create_connection(("1.1.1.1", 443), timeout=3)
    print("direct connected")
except OSError as e:
    print("direct refused", e.errno)
raise SystemExit(3)
"""


def test_restricted_session_through_the_daemon_is_audited(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    (short_tmp / "probe.py").write_text(PROBE)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "audited"},
        "workdir": {"access": "readwrite"},
        "groups": {"include": ["python_runtime"]},
        "network": {"allow_domain": ["api.github.com"]},
    }))
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "probe.py")
    assert done.returncode == 3, done.stderr
    assert "proxy answered 403" in done.stdout
    assert "direct refused 101" in done.stdout
    files = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    assert files, sorted(str(p) for p in daemon_thread.state_dir.rglob("*"))
    assert len(files) == 1
    result = verify_session_file(files[0])
    kinds = [json.loads(line)["event"]["type"] for line in files[0].read_text().splitlines()]
    assert kinds[0] == "session_started"
    assert "enforcement" in kinds
    network = [json.loads(line)["event"] for line in files[0].read_text().splitlines()
               if json.loads(line)["event"]["type"] == "network"]
    assert any(e["host"] == "evil.example" and e["decision"] == "deny" for e in network)
    ended = [json.loads(line)["event"] for line in files[0].read_text().splitlines()
             if json.loads(line)["event"]["type"] == "session_ended"]
    assert ended and ended[0]["exit_code"] == 3
    assert result is not None
