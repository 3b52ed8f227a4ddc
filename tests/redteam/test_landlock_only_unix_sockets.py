"""Red team, eighth pass: ``"nonod": {"unix_sockets": true}`` means "the sockets in the
session's view" where the session has a view of its own, and a pathname socket outside the
grants is absent there. A landlock-only session has no view: Landlock (ABI 7) does not check
``connect()`` or the walk to a socket, so the same profile reached every pathname socket of the
host its uid may connect to (the session bus, an ssh agent, docker's socket: root on the host),
and the launch said only "unix sockets allowed". Now the landlock-only launch is refused unless
the profile accepts ``host_unix_sockets`` by name, and the report lists it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from nonod.sandbox import LaunchRequest
from tests.conftest import SandboxUser
from tests.redteam import _landlock_only as landlock_only
from tests.redteam._landlock_only import PYTHON

CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"from the session")
print("connected")
"""


@pytest.fixture
def host_service(world_tmp: Path) -> Iterator[tuple[Path, socket.socket]]:
    """A host service's socket outside the session's grants (an agent, docker's)."""
    where = world_tmp / "run"
    where.mkdir(mode=0o755)
    where.chmod(0o755)
    path = where / "agent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen()
    yield path, server
    server.close()


def test_unix_sockets_in_landlock_only_mode_need_accepting_host_sockets(
        sandbox_user: SandboxUser, world_tmp: Path,
        host_service: tuple[Path, socket.socket]) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)
    path, server = host_service
    policy = landlock_only.policy(work, allow_unix_sockets=True)
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", CONNECT, str(path)), cwd=str(work))

    refused = sandbox_user.run_request(policy, request, nouserns=True)

    # Before: "connected", and the host's service read the session's bytes.
    assert refused.code == 125 and "connected" not in refused.stdout, refused.stdout
    assert "host_unix_sockets: unix_sockets would reach every pathname socket" in refused.stderr
    assert '"host_unix_sockets"' in refused.stderr  # the exact allow_degraded to accept it

    accepting = msgspec.structs.replace(
        policy, allow_degraded=(*policy.allow_degraded, "host_unix_sockets"))
    accepted = sandbox_user.run_request(accepting, request, nouserns=True)

    assert accepted.code == 0, accepted.stderr
    assert "accepted by the profile" in accepted.stderr
    assert "host_unix_sockets (unix_sockets would reach every pathname socket" in \
        accepted.stderr
    # What the profile accepted, as the report says: the host's socket.
    server.settimeout(10)
    conn, _ = server.accept()
    with conn:
        assert conn.recv(100) == b"from the session"
