"""Red team, eighth pass: the Landlock network mode (every restricted session of the
landlock-only mode, and ``linux.sandbox_policy = "landlock"``) reported "TCP connect only to
the proxy on 127.0.0.1:<port>", but Landlock's TCP rules (ABI 4 to 7) name ports, not
addresses: the session connected to the same port on another address (here 127.0.0.2; as well
a server of the attacker's, which can listen on every port) and sent bytes past the proxy,
its allow list and its audit. The kernel offers no address rule without a network namespace,
so the launch now says so: it is refused unless the profile accepts ``network_ports`` by name,
and the report says what the rule allows."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.policy import NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest
from tests.conftest import SandboxUser
from tests.redteam import _landlock_only as landlock_only
from tests.redteam._landlock_only import PYTHON

CONNECT = r"""
import socket, sys
s = socket.create_connection(("127.0.0.2", int(sys.argv[1])), timeout=10)
s.sendall(b"past the proxy")
print("sent")
"""


@pytest.fixture
def proxy_and_elsewhere() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The 'proxy' on 127.0.0.1:N and another server on the same port of another address."""
    proxy = socket.create_server(("127.0.0.1", 0))
    elsewhere = socket.create_server(("127.0.0.2", proxy.getsockname()[1]))
    yield proxy, elsewhere
    proxy.close()
    elsewhere.close()


def _policy(work: Path, accept: tuple[str, ...]) -> ResolvedPolicy:
    return landlock_only.policy(
        work, network=NetworkPolicy(restricted=True, allow_domain=("example.com",)),
        network_isolation="landlock", accept=(*landlock_only.ACCEPTED, *accept))


def test_port_rules_are_refused_unless_accepted_and_reported_as_they_are(
        sandbox_user: SandboxUser, world_tmp: Path,
        proxy_and_elsewhere: tuple[socket.socket, socket.socket]) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)
    proxy, elsewhere = proxy_and_elsewhere
    port = proxy.getsockname()[1]
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", CONNECT, str(port)), cwd=str(work),
                            proxy_port=port)

    refused = sandbox_user.run_request(_policy(work, ()), request, nouserns=True)

    # Before: it ran, reported "TCP connect only to the proxy on 127.0.0.1:N" and sent.
    assert refused.code == 125 and "sent" not in refused.stdout, refused.stdout
    assert "network_ports" in refused.stderr and "not addresses" in refused.stderr
    assert f"TCP connect to port {port} of any host" in refused.stderr
    assert '"allow_degraded": ["network_ports"]' in refused.stderr

    accepted = sandbox_user.run_request(_policy(work, ("network_ports",)), request,
                                        nouserns=True)

    assert accepted.code == 0, accepted.stderr
    report = next(x for x in accepted.stderr.splitlines() if x.startswith("ENFORCEMENT "))
    assert f"TCP connect only to port {port}, the proxy's on 127.0.0.1 and the same port of " \
           "any other host" in report, report
    # The residual the profile accepted, as the report says: the same port elsewhere.
    assert accepted.stdout == "sent\n"
    elsewhere.settimeout(10)
    conn, _ = elsewhere.accept()
    with conn:
        assert conn.recv(100) == b"past the proxy"
