"""The session's network namespace: only lo, a proxy socket handed to the daemon, and
connections into the namespace opened by the session's init for --listen-port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Grant, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher

#: Every test here launches a session in new namespaces.
pytestmark = pytest.mark.userns

PORT = 28080


def _policy(work: Path, network: NetworkPolicy) -> ResolvedPolicy:
    return ResolvedPolicy(
        name="net",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(work), access=Access.READWRITE)),
        denials=(),
        network=network,
    )


SERVER = r"""
import socket, sys
# a webhook-style server inside the session, and a client of the proxy port
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 5001)); srv.listen(5)
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
c.sendall(b"hello proxy")
print(c.recv(100).decode(), flush=True)
conn, _ = srv.accept()
conn.sendall(b"pong:" + conn.recv(100))
conn.close()
try:
    socket.create_connection(("1.1.1.1", 443), timeout=2)
    print("DIRECT OK", flush=True)
except OSError as e:
    print("direct", e.errno, flush=True)
"""


async def test_proxy_socket_and_inbound_connection(world_tmp: Path) -> None:
    work = world_tmp
    (work / "srv.py").write_text(SERVER)
    out = work / "out.txt"
    policy = _policy(work, NetworkPolicy(restricted=True, allow_domain=("example.com",)))
    with open(out, "wb") as sink:
        async with open_launcher() as launcher:
            proc = await launcher.launch(
                policy,
                LaunchRequest(argv=(sys.executable if sys.executable.startswith("/usr")
                                    else "/usr/bin/python3", "-S", "srv.py", str(PORT)),
                              cwd=str(work), proxy_port=PORT),
                stdio=(0, sink.fileno(), sink.fileno()))
            assert proc.proxy_listener is not None
            assert proc.proxy_port == PORT
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(proc.proxy_listener))
            # The daemon's side: accept the program's connection on the handed-over socket.
            stream = await listener.accept()
            assert await stream.receive_some(100) == b"hello proxy"
            await stream.send_all(b"from the daemon")
            # --listen-port: a connection into the namespace to the program's server (which
            # listened before it connected to the proxy).
            with trio.fail_after(10):
                inbound = await proc.connect_inside(5001)
            await inbound.send_all(b"ping")
            assert await inbound.receive_some(100) == b"pong:ping"
            status = await proc.wait_exited()
            await stream.aclose()
            await listener.aclose()
    text = out.read_text()
    assert status.code == 0, text
    assert "from the daemon" in text
    assert "direct 101" in text  # ENETUNREACH: no route out of the namespace
    assert "DIRECT OK" not in text


async def test_blocked_network_has_no_proxy(world_tmp: Path) -> None:
    policy = _policy(world_tmp, NetworkPolicy(restricted=True, block=True))
    async with open_launcher() as launcher:
        proc = await launcher.launch(policy, LaunchRequest(argv=("/bin/true",),
                                                           cwd=str(world_tmp)))
        assert proc.proxy_listener is None
        assert (await proc.wait_exited()).code == 0


CLIENT = r"""
import socket, sys
for port in map(int, sys.argv[1:]):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        print(port, "CONNECTED", flush=True)
    except OSError as e:
        print(port, e.errno, flush=True)
"""


async def test_two_sessions_cannot_reach_each_other(world_tmp: Path) -> None:
    """Each session's proxy and listen ports live in its own namespace: session A reaching
    127.0.0.1:<B's proxy port> finds nothing there."""
    (world_tmp / "client.py").write_text(CLIENT)
    (world_tmp / "srv.py").write_text(SERVER)
    out = world_tmp / "out.txt"
    policy = _policy(world_tmp, NetworkPolicy(restricted=True, allow_domain=("example.com",)))
    py = "/usr/bin/python3"
    async with open_launcher() as launcher:
        with open(world_tmp / "b.txt", "wb") as b_sink:
            b = await launcher.launch(
                policy, LaunchRequest(argv=(py, "-S", "srv.py", str(PORT)), cwd=str(world_tmp),
                                      proxy_port=PORT), stdio=(0, b_sink.fileno(), 2))
        assert b.proxy_listener is not None
        b_listener = trio.SocketListener(trio.socket.from_stdlib_socket(b.proxy_listener))
        with open(out, "wb") as sink:
            a = await launcher.launch(
                policy, LaunchRequest(argv=(py, "-S", "client.py", str(PORT), "5001"),
                                      cwd=str(world_tmp), proxy_port=PORT + 1),
                stdio=(0, sink.fileno(), 2))
            with trio.fail_after(30):
                assert (await a.wait_exited()).code == 0
        b.kill()
        await b.wait_exited()
        await b_listener.aclose()
        if a.proxy_listener is not None:
            a.proxy_listener.close()
    lines = out.read_text().split()
    assert lines == [str(PORT), "111", "5001", "111"]  # ECONNREFUSED: nothing there
