"""Descriptors held in flight (sent over a Unix socket, never received) count against every
process of the same user that passes descriptors without CAP_SYS_RESOURCE in the host's user
namespace: the kernel refuses such a send (ETOOMANYREFS) once the user's count exceeds the
sender's soft RLIMIT_NOFILE. A session's launchers pass descriptors at every launch of a view
with something to guard (a mask: ``POLICY``'s denial), so they run under the fork server's limit, and programs get a hard limit lowered by
``NOFILE_RESERVE``: neither a session nor a daemon started with a low soft limit can make the
next launches of the same user fail."""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from nonod.policy import Access, Denial, Grant, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sandbox._launcher import NOFILE_RESERVE, program_nofile
from tests.conftest import OWN_UID

pytestmark = pytest.mark.userns

POLICY = ResolvedPolicy(
    name="in-flight",
    grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ)),
    # A file masked under a grant: the view guard keeps the mask, and each launch passes it
    # descriptors (the step that the descriptors in flight refuse).
    denials=(Denial(path="/etc/shadow"),),
    network=NetworkPolicy(restricted=True, block=True),
)

#: Raises its soft limit to its hard one, then sends /dev/null's descriptor over a socket
#: nobody reads until the kernel refuses, says how many are in flight and waits.
HOLDER = r"""
import os, resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
a, b = socket.socketpair()
a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
fds = [os.open("/dev/null", os.O_RDONLY)] * 250
held = err = 0
while not err:
    try:
        socket.send_fds(a, [b"x"], fds)
        held += len(fds)
    except OSError as exc:
        err = exc.errno
print(held, hard, err, flush=True)
sys.stdin.read()
"""


def test_a_programs_limit_keeps_the_reserve_below_the_launchers() -> None:
    assert program_nofile((1024, 1 << 20)) == (1024, (1 << 20) - NOFILE_RESERVE)
    assert program_nofile((20000, 20000)) == (20000 - NOFILE_RESERVE,) * 2
    assert program_nofile((1024, 1024)) == (768, 768)  # a quarter at most


#: Whom the holder and the next launch run as: the kernel counts descriptors in flight per
#: user, host-wide. As root, a uid of this run's own, so that nothing else holding root's (a
#: concurrent run's holder, another test's socket not yet collected) shortens the holder's
#: share or lengthens the next launch's; otherwise the user running the tests.
USER = OWN_UID if os.geteuid() == 0 else None


async def _launch_true(launcher: object, uid: int | None = None) -> int:
    request = LaunchRequest(argv=("/usr/bin/true",), cwd="/", uid=uid, gid=uid)
    proc = await launcher.launch(POLICY, request, stdio=(0, 1, 2))  # type: ignore[attr-defined]
    with trio.fail_after(30):
        return (await proc.wait_exited()).code  # type: ignore[no-any-return]


async def test_a_session_holding_descriptors_in_flight_cannot_stop_the_next_launch() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with open_launcher("namespaces") as launcher:
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        holder = await launcher.launch(
            POLICY, LaunchRequest(argv=("/usr/bin/python3", "-I", "-c", HOLDER), cwd="/",
                                  uid=USER, gid=USER),
            stdio=(in_r, out_w, 2))
        os.close(out_w)
        os.close(in_r)
        try:
            with os.fdopen(out_r) as out:
                line = await trio.to_thread.run_sync(out.readline)
            held, its_hard, err = (int(x) for x in line.split())
            assert its_hard == program_nofile((hard, hard))[1]
            assert err == errno.ETOOMANYREFS, line
            if USER is not None:  # the count is its alone: it held all it could
                assert held > its_hard - 250, line
            assert await _launch_true(launcher, USER) == 0
        finally:
            os.close(in_w)
            with trio.fail_after(30):
                await holder.wait_exited()


@contextmanager
def _soft_nofile(soft: int) -> Iterator[None]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.mark.root
async def test_launches_pass_descriptors_under_the_fork_servers_limit_not_the_inherited_soft_one(
) -> None:
    """A daemon started with soft 1024 (systemd's default) and a user with more than that in
    flight: launches used to fail at step 'guard' with ETOOMANYREFS."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 8192:
        pytest.skip(f"the hard descriptor limit ({hard}) leaves no room above a soft 1024")
    with _soft_nofile(1024):
        opened = open_launcher("namespaces")
        launcher = await opened.__aenter__()
    try:
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        dev_null = os.open("/dev/null", os.O_RDONLY)
        try:
            for _ in range(8):  # 2000 in flight: root (CAP_SYS_RESOURCE) may
                socket.send_fds(a, [b"x"], [dev_null] * 250)
            assert await _launch_true(launcher) == 0
        finally:
            os.close(dev_null)
            a.close()
            b.close()
    finally:
        await opened.__aexit__(None, None, None)
