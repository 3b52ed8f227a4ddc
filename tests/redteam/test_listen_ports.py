"""Red team, a session's forwarded ports (``listen_ports``), opened by the daemon on the host:
each is a listening socket in the daemon's one descriptor table, and nothing bounded how many
one launch asked for, nor checked them against the part of the table the daemon keeps for
itself (``nonod/_descriptors.py``, which held for proxy connections). One user's sessions
forwarding enough ports filled the table: every other user's launch then failed (no
descriptor for its terminal or audit file). The sockets were also opened only after the
program had started: a port another user already held killed the program, with a traceback
in the daemon's log. Now the forwards' sockets are opened before anything runs, a port that
cannot be bound or whose descriptor would lie in the daemon's reserve refuses the launch, and
what was opened is closed again."""

from __future__ import annotations

import json
import os
import resource
import socket
from collections.abc import Iterator

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


def _free_ports(count: int, start: int = 61000) -> list[int]:
    """``count`` ports nothing listens on, above the kernel's ephemeral range (which other
    sockets of these tests draw from meanwhile)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
        low = int(f.read().split()[1]) + 1
    ports: list[int] = []
    for port in range(max(start, low), 65536):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise AssertionError(f"fewer than {count} free ports above {low}")


def _launch(handle: DaemonThread, user: LocalUser, ports: list[int], name: str,
            argv: list[str] | None = None) -> list[dict[str, object]]:
    work = workdir(user)
    launch = {"type": "launch", "argv": argv or ["sleep", "600"], "cwd": str(work),
              "env": session_env(work), "options": {"allow_cwd": True, "listen_ports": ports},
              "detach": True, "stdio": "null", "name": name}
    lines = raw_client(handle.socket, [hello(), launch], prefix=user.prefix(), timeout=60)
    return [json.loads(line) for line in lines[1:] if line.startswith("{")]


@pytest.fixture
def few_descriptors() -> Iterator[int]:
    """The daemon (this process) with a table of 1024 descriptors, as many services get."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        yield 1024
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_one_users_forwards_cannot_fill_the_daemons_descriptor_table(
        two_users: tuple[DaemonThread, list[LocalUser]], few_descriptors: int) -> None:
    handle, (victim, hoarder) = two_users
    launched = []
    ports = _free_ports(800)
    for n, chunk in enumerate((ports[:400], ports[400:])):
        reply = _launch(handle, hoarder, chunk, f"ports{n}")[0]
        if reply["type"] == "launched":
            launched.append(f"ports{n}")
        else:  # refused before it takes the daemon's reserve
            assert reply["code"] == "policy.invalid", reply
            assert "keeps its last descriptors" in str(reply["message"])
    assert len(launched) < 2  # before: both launched (the second's sockets failed later)
    try:
        mine = _launch(handle, victim, [], "mine", ["/bin/true"])
        assert mine[0]["type"] == "launched", mine  # before: no descriptor left for it
    finally:
        raw_client(handle.socket, [hello(), *({"type": "stop", "session": s, "force": True}
                                              for s in launched)], prefix=hoarder.prefix())


def test_a_port_another_user_holds_refuses_the_launch_before_anything_runs(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (owner, other) = two_users
    port = _free_ports(1)[0]
    held = socket.socket()
    os.setegid(other.gid)
    os.seteuid(other.uid)
    try:
        held.bind(("127.0.0.1", port))  # the other user's service, there first
    finally:
        os.seteuid(0)
        os.setegid(0)
    held.listen()
    try:
        marker = workdir(owner) / "ran"
        reply = _launch(handle, owner, [port], "late", ["/bin/sh", "-c", f"echo > {marker}"])
        assert reply[0]["type"] == "error", reply  # before: launched, then killed
        assert reply[0]["code"] == "policy.invalid"
        assert f"listen port {port}" in str(reply[0]["message"])
        assert not marker.exists()
    finally:
        held.close()
