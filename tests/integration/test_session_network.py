"""A real session behind the real proxy: the allowlist, the refused escapes, and credential
injection with a phantom token, against local TLS fake upstreams pinned by the daemon config."""

from __future__ import annotations

import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme

from nonod import _session_services
from nonod.policy import Access, CustomCredential, Grant, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher

REAL_TOKEN = "ghp_REAL_SECRET_TOKEN_0123456789abcdef"
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

INSIDE = r'''
import base64, json, os, socket, ssl, sys, urllib.request
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()

def connect(target):
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
              f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return s, head.split(b" ")[1].decode() if head else "EOF"

out = {}
s, status = connect("api.github.com:443")
out["allowed_status"] = status
if status == "200":
    ctx = ssl.create_default_context(cafile=sys.argv[1])
    t = ctx.wrap_socket(s, server_hostname="api.github.com")
    t.sendall(b"GET /zen HTTP/1.1\r\nHost: api.github.com\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := t.recv(4096):
        data += chunk
    out["allowed_body"] = data.split(b"\r\n\r\n", 1)[1].decode()
for target in ("example.com:443", "169.254.169.254:80", "127.0.0.1:443", "[::1]:443",
               "0x7f000001:443", "2130706433:443", "[::ffff:127.0.0.1]:443"):
    out[target] = connect(target)[1]
for name, fam, addr in (("tcp", socket.AF_INET, ("1.1.1.1", 443)),
                        ("host_loopback", socket.AF_INET, ("127.0.0.1", int(sys.argv[2])))):
    try:
        socket.create_connection(addr, timeout=3).close()
        out[name] = "CONNECTED"
    except OSError as e:
        out[name] = e.errno
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x00\x00\x01\x00\x01",
             ("8.8.8.8", 53))
    out["udp_dns"] = "SENT"
except OSError as e:
    out["udp_dns"] = e.errno
try:
    icmp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    icmp.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", ("8.8.8.8", 0))
    out["ping"] = "SENT"
except OSError as e:
    out["ping"] = e.errno
# the credential route: the phantom token goes in, the upstream echoes what it received
req = urllib.request.Request(os.environ["GITHUB_BASE_URL"] + "/echo",
                             headers={"Authorization": "Bearer " + os.environ["GITHUB_TOKEN"]})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
out["echo"] = json.loads(opener.open(req, timeout=10).read())
out["token_seen"] = os.environ["GITHUB_TOKEN"]
out["environ_has_real"] = any("ghp_REAL" in v for v in os.environ.values())
print(json.dumps(out))
'''


async def _fake_github(server_ctx: ssl.SSLContext,
                       task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """api.github.com stand-in: /zen answers, /echo reflects the Authorization it got."""
    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n")[0].decode()
            path = head.split(" ")[1]
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
            if path.endswith("/echo"):
                body = json.dumps({"authorization": headers.get("Authorization", "")}).encode()
            else:
                body = b"Keep it logically awesome."
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                  b"Content-Type: application/json\r\nConnection: close\r\n\r\n"
                                  % len(body) + body)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_ssl_over_tcp_listeners(0, server_ctx, host="127.0.0.1")
    task_status.started(listeners[0].transport_listener.socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("api.github.com")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_github, ctx)
        yield port, ca_file
        nursery.cancel_scope.cancel()


# What a direct escape gets: in a private network namespace there is no route and the
# session's own lo has nothing; in the Landlock fallback, Landlock refuses the connect and
# seccomp the UDP socket.
EXPECTED = {"namespaces": {"tcp": 101, "host_loopback": 111, "udp_dns": 101},
            "landlock": {"tcp": 13, "host_loopback": 13, "udp_dns": 1}}


@pytest.mark.parametrize("isolation", ["namespaces", "landlock"])
async def test_session_reaches_only_its_hosts_and_never_sees_the_real_key(
        upstream: tuple[int, Path], world_tmp: Path, isolation: str) -> None:
    port, ca_file = upstream
    work = world_tmp
    (work / "inside.py").write_text(INSIDE)
    (work / "ca.pem").write_bytes(ca_file.read_bytes())
    out_file = work / "out.json"
    policy = ResolvedPolicy(
        name="gitbot-test",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(work), access=Access.READWRITE)),
        denials=(),
        network=NetworkPolicy(
            restricted=True, allow_domain=("api.github.com",),
            credentials=("github",),
            custom_credentials=(("github", CustomCredential(
                upstream="https://api.github.com", credential_key="env://GITHUB_TOKEN",
                env_var="GITHUB_TOKEN",
                inject_header="Authorization", credential_format="Bearer {}")),)),
        network_isolation=isolation,
        allow_degraded=("network_ports",) if isolation == "landlock" else (),
    )
    settings = _session_services.NetworkSettings(resolve={"api.github.com": f"127.0.0.1:{port}"},
                                         extra_ca_file=str(ca_file))
    events: list[object] = []
    prepared = await _session_services.prepare(
        policy, LaunchRequest(argv=(PY, "-S", "inside.py", str(work / "ca.pem"), str(port)),
                              cwd=str(work)),
        settings=settings, environ={"GITHUB_TOKEN": REAL_TOKEN})
    assert prepared.request is not None
    assert all(REAL_TOKEN not in v for _, v in prepared.request.extra_env)
    with open(out_file, "wb") as sink:
        async with open_launcher() as launcher, trio.open_nursery() as nursery:
            proc = await launcher.launch(policy, prepared.request,
                                         stdio=(0, sink.fileno(), 2))
            await nursery.start(_session_services.serve, prepared, proc, events.append)
            network = next(x for x in proc.enforcement.layers if x.name == "network")
            assert network.state == ("partial" if isolation == "landlock" else "applied")
            with trio.fail_after(60):
                status = await proc.wait_exited()
            nursery.cancel_scope.cancel()
    assert status.code == 0, out_file.read_text()
    out = json.loads(out_file.read_text())
    assert out["allowed_status"] == "200"
    assert out["allowed_body"] == "Keep it logically awesome."
    for target in ("example.com:443", "169.254.169.254:80", "127.0.0.1:443", "[::1]:443",
                   "0x7f000001:443", "2130706433:443", "[::ffff:127.0.0.1]:443"):
        assert out[target] == "403", (target, out[target])
    assert out["ping"] != "SENT"  # ICMP: no socket (ping_group_range, seccomp) or no route
    for key, errno_value in EXPECTED[isolation].items():
        assert out[key] == errno_value, (key, out[key])
    # The upstream received the real key; the program saw only its phantom token.
    assert out["echo"]["authorization"] != f"Bearer {REAL_TOKEN}"
    assert out["echo"]["authorization"] == "Bearer " + out["token_seen"]
    assert len(out["token_seen"]) == 64 and out["token_seen"] != REAL_TOKEN
    assert out["environ_has_real"] is False
    assert REAL_TOKEN not in repr(events)
    assert out["token_seen"] not in repr(events)
    decisions = {(getattr(e, "host", ""), getattr(e, "decision", "")) for e in events}
    assert ("example.com", "deny") in decisions
    assert ("api.github.com", "allow") in decisions


WEBHOOK = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(5)
print("listening", flush=True)
conn, _ = srv.accept()
data = conn.recv(1000)
conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nwebhook")
conn.close()
"""


async def test_listen_port_reaches_the_server_inside(world_tmp: Path) -> None:
    """--listen-port P: a connection to the host's 127.0.0.1:P reaches the session's
    127.0.0.1:P (the webhook case), and is recorded as an inbound event."""
    import socket as _socket

    with _socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (world_tmp / "hook.py").write_text(WEBHOOK)
    policy = ResolvedPolicy(
        name="webhook",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(world_tmp), access=Access.READWRITE)),
        denials=(),
        network=NetworkPolicy(restricted=True, allow_domain=("api.github.com",),
                              listen_ports=(port,)),
    )
    events: list[object] = []
    prepared = await _session_services.prepare(
        policy, LaunchRequest(argv=(PY, "-S", "hook.py", str(port)), cwd=str(world_tmp)),
        settings=_session_services.NetworkSettings(), environ={}, listen_ports=(port,))
    assert prepared.request is not None
    out_r, out_w = os.pipe()
    async with open_launcher() as launcher, trio.open_nursery() as nursery:
        proc = await launcher.launch(policy, prepared.request, stdio=(0, out_w, 2))
        os.close(out_w)
        await nursery.start(_session_services.serve, prepared, proc, events.append)
        ready = trio.lowlevel.FdStream(out_r)
        with trio.fail_after(20):
            assert b"listening" in await ready.receive_some(100)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"POST /webhook HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := await stream.receive_some(1000):
                reply += chunk
            await stream.aclose()
            assert (await proc.wait_exited()).code == 0
            # The forward's event comes when its connection is over on both sides.
            while not any(isinstance(e, _session_services.InboundEvent) and e.port == port
                          for e in events):
                await trio.sleep(0.01)
        await ready.aclose()
        nursery.cancel_scope.cancel()
    assert reply.endswith(b"webhook")
