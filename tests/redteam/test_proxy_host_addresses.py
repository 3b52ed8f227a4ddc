"""Red team, the proxy's resolver: an allowed name whose DNS answer is one of the host's own
public addresses.

The proxy runs in the daemon, in the host's network namespace. The special-range check refused
loopback, private and link-local answers, but a host with a public address on an interface
(a cloud VM, a server) serves every socket bound to ``0.0.0.0`` there as well: an allowed name
whose owner points it at that address (a wildcard entry, a rebinding DNS server) reached the
host's own services, the daemon's metrics endpoint or an SSH port, through the proxy.

The host here is a fresh network namespace with a public address on ``lo`` and a service bound
to ``0.0.0.0``; the proxy, its resolver (the DNS answer comes from an in-memory table) and the
client are real, with real sockets, run by ``unshare --net``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST_ADDRESS = "44.1.2.3"  # public, and this namespace's own
FAR_ADDRESS = "45.1.2.3"  # public, and no route to it here

INSIDE = r'''
import json, socket, subprocess, sys
import trio
from nonod.proxy import ProxyPolicy, Resolver, serve_proxy
from tests.proxy.conftest import fake_dns, read_head

HOST, FAR = sys.argv[1], sys.argv[2]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", f"{HOST}/32", "dev", "lo"], check=True)
# A whole range taken as the host's own by a `local` route (AnyIP), with no address on it.
subprocess.run(["ip", "route", "add", "local", "46.0.0.0/24", "dev", "lo"], check=True)

async def main():
    seen = []
    service = socket.socket()
    service.bind(("0.0.0.0", 0))
    service.listen()
    service.setblocking(False)
    port = service.getsockname()[1]

    async def accept_all():
        while True:
            await trio.lowlevel.wait_readable(service)
            conn, _ = service.accept()
            seen.append(conn.getsockname()[0])
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            conn.close()

    policy = ProxyPolicy(hosts=frozenset({"rebind.example.com", "far.example.com",
                                          "anyip.example.com"}),
                         addresses=frozenset({HOST}), ports=frozenset({80, 443, port}))
    resolver = Resolver(getaddrinfo=fake_dns({"rebind.example.com": [HOST],
                                              "far.example.com": [FAR],
                                              "anyip.example.com": ["46.0.0.5"]}))
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_all)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        proxy_port = listeners[0].socket.getsockname()[1]
        await nursery.start(lambda task_status: serve_proxy(
            listeners[0], policy=policy, resolver=resolver, events=events.append,
            task_status=task_status))

        async def status(raw):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy_port)
            await stream.send_all(raw)
            code = (await read_head(stream))[0]
            await stream.aclose()
            return str(code)

        out = {}
        for target in (f"rebind.example.com:{port}", f"{HOST}:{port}",
                       f"anyip.example.com:{port}", f"far.example.com:{port}"):
            out["CONNECT " + target] = await status(
                f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        for url in (f"http://rebind.example.com:{port}/", f"http://{HOST}:{port}/"):
            out["GET " + url] = await status(
                f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        nursery.cancel_scope.cancel()
    print(json.dumps({"status": out, "seen": seen,
                      "reasons": sorted({e.reason for e in events if e.decision == "deny"})}))

trio.run(main)
'''


@pytest.mark.root
def test_the_proxy_never_connects_to_the_hosts_own_public_address() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare(1) and ip(8) are needed")
    done = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", INSIDE, HOST_ADDRESS, FAR_ADDRESS],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    status = result["status"]
    # Before: 200 for each of the five, and the service saw five connections.
    refused = {key: value for key, value in status.items() if "far." not in key}
    assert set(refused.values()) == {"403"}, status
    assert result["seen"] == [], result
    assert "host_address" in result["reasons"], result
    # An answer that is public and not the host's own is still connected to (and fails
    # here only for want of a route): the check is no blanket refusal.
    far = next(value for key, value in status.items() if "far." in key)
    assert far == "502", status
