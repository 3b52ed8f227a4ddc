"""Red team, nineteenth pass: the Landlock network mode (``linux.sandbox_policy=landlock``,
and every landlock-only session) shares the host's network namespace, so ``/proc/net`` (and
each process's ``/proc/<pid>/net``, which no mount at launch can cover) lists the host's TCP
connections and Unix socket names. That is a residual of the weaker mode, not refusable;
the enforcement report now says so (before, it said only that the namespace is shared)."""

from __future__ import annotations

import socket
from pathlib import Path

from nonod.policy import NetworkPolicy
from nonod.sandbox import LaunchRequest

from ..conftest import SandboxUser
from ..sandbox.test_sandbox import probe
from ._landlock_only import ACCEPTED, policy

#: The host's listening socket, found in the session's /proc/net/tcp by its port.
READS = ("want = ':%04X ' % int(sys.argv[1])\n"
         "t(lambda: int(any(want in line for line in open('/proc/net/tcp'))))\n")


def test_the_landlock_network_mode_says_proc_net_is_the_hosts(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as host_service:
        port = host_service.getsockname()[1]
        pol = policy(world_tmp, network=NetworkPolicy(restricted=True),
                     network_isolation="landlock", allow_degraded=(*ACCEPTED, "network_ports"))
        r = sandbox_user.run_request(pol, LaunchRequest(
            argv=(*probe(READS), str(port)), cwd=str(world_tmp), proxy_port=port))
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["OK 1"]  # the host's socket, listed
    assert "/proc/net lists its TCP connections and Unix socket names" in r.stderr
