"""Red team, the proxy from inside a real session: every way to name a host-local or
metadata address, absolute-form requests, request smuggling on the credential route, another
session's (or a guessed) phantom token, route-name confusion. All were already refused; they
stay as one regression battery (statuses as the program sees them)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from nonod import _session_services
from nonod.policy import Access, CustomCredential, Grant, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from tests.integration.test_session_network import PY, REAL_TOKEN
from tests.integration.test_session_network import upstream as upstream  # the fixture

INSIDE = r'''
import base64, json, os, socket, sys
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
base = urlsplit(os.environ["GITHUB_BASE_URL"])
token = os.environ["GITHUB_TOKEN"]

def status(raw, port=None):
    s = socket.create_connection((proxy.hostname, port or proxy.port), timeout=10)
    s.sendall(raw)
    head = b""
    try:
        while b"\r\n" not in head:
            chunk = s.recv(1)
            if not chunk:
                break
            head += chunk
    except OSError:
        pass
    s.close()
    parts = head.split(b" ")
    return parts[1].decode() if len(parts) > 1 else "EOF"

def connect(target):
    return status(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
                  f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())

out = {"connect": {}, "absolute": {}, "route": {}}
for target in sys.argv[1:]:
    out["connect"][target] = connect(target)
for url in ("http://127.0.0.1/", "http://api.github.com@127.0.0.1/", "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/", "http://localhost:80/",
            "http://0x7f.1/", "http://api.github.com:22/"):
    out["absolute"][url] = status(f"GET {url} HTTP/1.1\r\nHost: x\r\n"
                                  f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
route = base.path.rstrip("/")
bearer = f"Authorization: Bearer {token}\r\n"
for name, raw in {
    "no_token": f"GET {route}/echo HTTP/1.1\r\nHost: x\r\n\r\n",
    "guessed_token": f"GET {route}/echo HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {'ab' * 32}\r\n\r\n",
    "cl_and_te": f"POST {route}/echo HTTP/1.1\r\nHost: x\r\n{bearer}Content-Length: 4\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two_lengths": f"POST {route}/echo HTTP/1.1\r\nHost: x\r\n{bearer}Content-Length: 1\r\n"
                   "Content-Length: 30\r\n\r\nx",
    "obs_fold": f"GET {route}/echo HTTP/1.1\r\nHost: x\r\n{bearer}X-A: a\r\n b\r\n\r\n",
    "bare_lf": f"GET {route}/echo HTTP/1.1\nHost: x\n{bearer.strip()}\n\n",
    "te_identity": f"POST {route}/echo HTTP/1.1\r\nHost: x\r\n{bearer}"
                   "Transfer-Encoding: identity\r\n\r\n",
    "suffix_route": f"GET {route}.evil/echo HTTP/1.1\r\nHost: x\r\n{bearer}\r\n",
    "dot_segments": f"GET {route}/../echo HTTP/1.1\r\nHost: x\r\n{bearer}\r\n",
    "encoded_dots": f"GET {route}/%2e%2e/echo HTTP/1.1\r\nHost: x\r\n{bearer}\r\n",
}.items():
    out["route"][name] = status(raw.encode(), base.port)
print(json.dumps(out))
'''

TARGETS = {
    "localhost:443": "403", "LOCALHOST.:443": "403", "[::ffff:7f00:1]:443": "403",
    "[0:0:0:0:0:ffff:127.0.0.1]:443": "403", "0177.0.0.1:443": "403", "127.1:443": "403",
    "0:443": "403", "[::]:443": "403", "metadata.google.internal:80": "403",
    "169.254.169.254.:80": "403", "[fe80::1%25lo]:443": "403",
    "[64:ff9b::7f00:1]:443": "403", "[2002:7f00:1::]:443": "403", "[::127.0.0.1]:443": "403",
    "api.github.com@127.0.0.1:443": "400", "api.github.com:22": "403",
}


async def test_the_proxy_refuses_every_way_around_it(upstream: tuple[int, Path],
                                                    world_tmp: Path) -> None:
    port, ca_file = upstream
    (world_tmp / "inside.py").write_text(INSIDE)
    policy = ResolvedPolicy(
        name="redteam-proxy",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(world_tmp), access=Access.READWRITE)),
        denials=(),
        network=NetworkPolicy(
            restricted=True, allow_domain=("api.github.com",), credentials=("github",),
            custom_credentials=(("github", CustomCredential(
                upstream="https://api.github.com", credential_key="env://GITHUB_TOKEN",
                env_var="GITHUB_TOKEN", inject_header="Authorization",
                credential_format="Bearer {}")),)),
    )
    prepared = await _session_services.prepare(
        policy, LaunchRequest(argv=(PY, "-S", "inside.py", *TARGETS), cwd=str(world_tmp)),
        settings=_session_services.NetworkSettings(
            resolve={"api.github.com": f"127.0.0.1:{port}"}, extra_ca_file=str(ca_file)),
        environ={"GITHUB_TOKEN": REAL_TOKEN})
    assert prepared.request is not None
    events: list[object] = []
    out_file = world_tmp / "out.json"
    with open(out_file, "wb") as sink:
        async with open_launcher() as launcher, trio.open_nursery() as nursery:
            proc = await launcher.launch(policy, prepared.request, stdio=(0, sink.fileno(), 2))
            await nursery.start(_session_services.serve, prepared, proc, events.append)
            with trio.fail_after(60):
                status = await proc.wait_exited()
            nursery.cancel_scope.cancel()
    assert status.code == 0, out_file.read_text()
    out = json.loads(out_file.read_text())
    assert out["connect"] == TARGETS
    assert all(code in ("400", "403") for code in out["absolute"].values()), out["absolute"]
    # Folded and bare-LF heads are parsed into one request (h11 unfolds them) and sent on
    # re-serialised: the session's own token, its own route, nothing smuggled.
    assert out["route"] == {
        "no_token": "401", "guessed_token": "401", "cl_and_te": "400", "two_lengths": "400",
        "obs_fold": "200", "bare_lf": "200", "te_identity": "400", "suffix_route": "404",
        "dot_segments": "400", "encoded_dots": "400"}
    assert REAL_TOKEN not in repr(events)
