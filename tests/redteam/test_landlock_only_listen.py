"""Red team, eighth pass: ``listen()`` on an unbound TCP socket binds an ephemeral port on
every address of the host (the kernel's autobind), and Landlock (ABI 7) checks ``bind()``
only. A landlock-only session whose network was blocked (no port to bind, none to connect to)
listened on ``0.0.0.0:<ephemeral>`` and accepted a connection from the host's network
(192.0.2.2 here, by hand): a way in, and with it a way out, past the proxy and the audit. Now
seccomp refuses ``listen`` (``EACCES``, what a refused ``bind`` gets) when the session may bind
no port and makes no Unix sockets; where it may, the launch needs ``network_ports``."""

from __future__ import annotations

import socket
from pathlib import Path

from nonod.policy import NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest
from tests.conftest import SandboxUser
from tests.redteam import _landlock_only as landlock_only
from tests.redteam._landlock_only import PYTHON

LISTEN = r"""
import errno, socket, sys
s = socket.socket()
if len(sys.argv) > 1:
    s.bind(("127.0.0.1", int(sys.argv[1])))
try:
    s.listen()
    print("listening", s.getsockname()[0], s.getsockname()[1] != 0)
except OSError as e:
    print("listen", errno.errorcode[e.errno], s.getsockname())
"""


def _policy(work: Path, network: NetworkPolicy, accept: tuple[str, ...] = ()) -> ResolvedPolicy:
    return landlock_only.policy(work, network=network, network_isolation="landlock",
                                accept=(*landlock_only.ACCEPTED, *accept))


def test_a_blocked_landlock_only_session_cannot_listen_on_the_hosts_network(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)
    blocked = NetworkPolicy(restricted=True, block=True)
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", LISTEN), cwd=str(work))

    result = sandbox_user.run_request(_policy(work, blocked), request, nouserns=True)

    assert result.code == 0, result.stderr
    # Before: "listening 0.0.0.0 True", reachable from the host's network.
    assert result.stdout.splitlines() == ["listen EACCES ('0.0.0.0', 0)"], result.stdout
    assert "no bind, no listen" in result.stderr


def test_listen_ports_need_accepting_and_still_work(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)
    with socket.socket() as probe:  # a port free now (the session shares the host's network)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    network = NetworkPolicy(restricted=True, block=True, listen_ports=(port,))
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", LISTEN, str(port)), cwd=str(work))

    refused = sandbox_user.run_request(_policy(work, network), request, nouserns=True)
    accepted = sandbox_user.run_request(_policy(work, network, ("network_ports",)), request,
                                        nouserns=True)

    assert refused.code == 125 and "listening" not in refused.stdout
    assert "listen() on an unbound TCP socket binds an ephemeral port" in refused.stderr
    assert accepted.code == 0, accepted.stderr
    assert accepted.stdout.splitlines() == ["listening 127.0.0.1 True"]
    assert f"bind only [{port}], on every address, and listen on an ephemeral port" in \
        accepted.stderr
