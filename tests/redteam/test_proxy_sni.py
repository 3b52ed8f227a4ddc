"""Red team, the proxy's blind tunnels: a CONNECT allowed for one name carrying a TLS
ClientHello for another, or a plain HTTP request for another.

A shared front end (a CDN serving an allowed package registry, say) picks the site by the
ClientHello's ``server_name`` (and, for plain HTTP, by each request's ``Host``): a tunnel
opened for the allowed name, with a ClientHello or a request for the attacker's site behind
the same front, reached that site. Here the front is a real server in a
second network namespace, at a public address behind a veth pair; the proxy (with its real
resolver over an in-memory DNS table), the client and its ClientHellos (made by Python's
``ssl``) are real, all run by ``unshare --net``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FRONT = r'''
import json, socket, sys, threading
sys.stdin.readline()  # the veth end is here
for args in (["link", "set", "lo", "up"], ["addr", "add", "44.0.0.2/24", "dev", "v1"],
             ["link", "set", "v1", "up"]):
    __import__("subprocess").run(["ip", *args], check=True)

def report(port, got):
    print(json.dumps({"port": port, "bytes": got}), flush=True)

def tls_site(conn):  # answers once a ClientHello came, like a TLS front would
    conn.settimeout(5)
    got = b""
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            got += data
            conn.sendall(b"front-answer")
    except OSError:
        pass
    report(443, len(got))

def ssh_site(conn):  # speaks first, then echoes
    conn.settimeout(5)
    conn.sendall(b"SSH-2.0-front\r\n")
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
    except OSError:
        pass
    report(22, 0)

def serve(port, handler):
    server = socket.create_server(("0.0.0.0", port))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()

threading.Thread(target=serve, args=(443, tls_site), daemon=True).start()
threading.Thread(target=serve, args=(22, ssh_site), daemon=True).start()
threading.Thread(target=serve, args=(80, tls_site), daemon=True).start()  # answers anything
print("ready", flush=True)
sys.stdin.readline()
'''

INSIDE = r'''
import json, os, ssl, subprocess, sys
import trio
from nonod.proxy import ProxyPolicy, Resolver, serve_proxy
from tests.proxy.conftest import fake_dns

front = subprocess.Popen(["unshare", "--net", "--", sys.executable, "-c", sys.argv[1]],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
for args in (["link", "set", "lo", "up"],
             ["link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns",
              str(front.pid)],
             ["addr", "add", "44.0.0.1/24", "dev", "v0"], ["link", "set", "v0", "up"]):
    subprocess.run(["ip", *args], check=True)
front.stdin.write("go\n")
front.stdin.flush()
assert front.stdout.readline().strip() == "ready"

def hello(name):
    outgoing = ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing,
                                                   server_hostname=name)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()

async def main():
    policy = ProxyPolicy(hosts=frozenset({"front.example.com"}),
                         ports=frozenset({443, 80, 22}))
    resolver = Resolver(getaddrinfo=fake_dns({"front.example.com": ["44.0.0.2"]}))
    events = []
    out = {}
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await nursery.start(lambda task_status: serve_proxy(
            listeners[0], policy=policy, resolver=resolver, events=events.append,
            task_status=task_status))

        async def tunnel(target, first=None):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
                                  .encode())
            got = b""
            while b"\r\n\r\n" not in got:
                got += await stream.receive_some(4096)
            head, _, got = got.partition(b"\r\n\r\n")
            if first is not None:
                await stream.send_all(first)
            with trio.move_on_after(5):
                while data := await stream.receive_some(4096):
                    got += data
                    if got.endswith((b"front-answer", b"\r\n")):
                        break
            await stream.aclose()
            report = json.loads(await trio.to_thread.run_sync(front.stdout.readline))
            return {"status": head.split(b" ")[1].decode(), "client_got": got.decode(),
                    "front_got": report["bytes"]}

        for name in ("evil.example.net", "front.example.com", "FRONT.example.com."):
            out[name] = await tunnel("front.example.com:443", hello(name))
        out["ssh"] = await tunnel("front.example.com:22")
        out["http"] = await tunnel("front.example.com:80",
                                   b"GET / HTTP/1.1\r\nHost: evil.example.net\r\n\r\n")
        nursery.cancel_scope.cancel()
    print(json.dumps({"out": out, "reasons": sorted({e.reason for e in events
                                                     if e.decision == "deny"})}))

trio.run(main)
front.stdin.write("end\n")
front.stdin.flush()
front.wait(10)
'''


@pytest.mark.root
def test_a_tunnel_carries_no_client_hello_for_another_name() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare(1) and ip(8) are needed")
    done = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", INSIDE, FRONT],
                          cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    out = result["out"]
    # Before: the front received the ClientHello for evil.example.net and answered it.
    assert out["evil.example.net"]["front_got"] == 0, out
    assert out["evil.example.net"]["client_got"] == "", out
    assert out["http"]["front_got"] == 0, out
    assert "403" in out["http"]["client_got"], out
    assert "plain_http_in_tunnel" in out["http"]["client_got"], out
    assert result["reasons"] == ["plain_http_in_tunnel", "sni_mismatch"], result
    # The allowed name, in any spelling, and a server that speaks first, still pass.
    for name in ("front.example.com", "FRONT.example.com."):
        assert out[name]["front_got"] > 0 and out[name]["client_got"] == "front-answer", out
    assert out["ssh"]["client_got"] == "SSH-2.0-front\r\n", out
