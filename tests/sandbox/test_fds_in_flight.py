"""Descriptors held in flight (sent over a Unix socket, never received) count against every
process of the same user that passes descriptors without CAP_SYS_RESOURCE in the host's user
namespace: the kernel refuses such a send (ETOOMANYREFS) once the user's count exceeds the
sender's soft RLIMIT_NOFILE. A session's launchers pass descriptors at every launch of a view
with something to guard (a mask: ``POLICY``'s denial), and a program forked under the
creation guard passes the init its listener: they do it under the fork server's limit, and
programs get a hard limit lowered by ``NOFILE_RESERVE``, so neither a session nor a daemon
started with a low soft limit can make the next launches of the same user fail."""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import msgspec
import pytest
import trio

from nonod.policy import Access, Denial, Grant, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest, _cinit, open_launcher
from nonod.sandbox._launcher import NOFILE_RESERVE, program_nofile
from tests.conftest import OWN_UID
from tests.proctree import wait_until
from tests.sandbox.test_cinit import _c_init_waiting

pytestmark = pytest.mark.userns

POLICY = ResolvedPolicy(
    name="in-flight",
    grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ)),
    # A file masked under a grant: the view guard keeps the mask, and each launch passes it
    # descriptors (the step that the descriptors in flight refuse).
    denials=(Denial(path="/etc/shadow", is_file=True),),
    network=NetworkPolicy(restricted=True, block=True),
)

#: The start of a holder: raises its soft limit to its hard one, then sends /dev/null's
#: descriptor 250 at a time over a socket nobody reads until the kernel refuses (``held``
#: in flight, ``hard``, the refusal's ``err``). What follows says so and waits.
HOLD_IN_FLIGHT = r"""
import os, resource, socket, sys, time
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
"""

#: Holds, prints "held hard errno" and waits until its stdin closes.
HOLDER = HOLD_IN_FLIGHT + r"""
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


async def _launch(launcher: object, uid: int | None = None, policy: ResolvedPolicy = POLICY
                  ) -> int:
    request = LaunchRequest(argv=("/usr/bin/true",), cwd="/", uid=uid, gid=uid)
    proc = await launcher.launch(policy, request, stdio=(0, 1, 2))  # type: ignore[attr-defined]
    with trio.fail_after(30):
        return (await proc.wait_exited()).code  # type: ignore[no-any-return]


async def _launch_seen(launcher: object, uid: int | None, policy: ResolvedPolicy,
                       argv: tuple[str, ...]) -> tuple[int, str]:
    """The exit code of a program that reads its stdin first, and its init's executable
    meanwhile."""
    gate_r, gate_w = os.pipe()
    try:
        proc = await launcher.launch(  # type: ignore[attr-defined]
            policy, LaunchRequest(argv=argv, cwd="/", uid=uid, gid=uid), stdio=(gate_r, 1, 2))
    finally:
        os.close(gate_r)
    try:
        exe = os.readlink(f"/proc/{proc.pid}/exe")
    finally:
        os.close(gate_w)
    with trio.fail_after(30):
        return (await proc.wait_exited()).code, exe


@asynccontextmanager
async def _holding(launcher: object, uid: int | None) -> AsyncIterator[None]:
    """A session (``HOLDER``) of ``uid`` holding all the descriptors in flight it can."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    holder = await launcher.launch(  # type: ignore[attr-defined]
        POLICY, LaunchRequest(argv=("/usr/bin/python3", "-I", "-c", HOLDER), cwd="/",
                              uid=uid, gid=uid),
        stdio=(in_r, out_w, 2))
    os.close(out_w)
    os.close(in_r)
    try:
        with os.fdopen(out_r) as out:
            line = await trio.to_thread.run_sync(out.readline)
        held, its_hard, err = (int(x) for x in line.split())
        assert its_hard == program_nofile((hard, hard))[1]
        assert err == errno.ETOOMANYREFS, line
        if uid is not None:  # the count is its alone: it held all it could
            assert held > its_hard - 250, line
        yield
    finally:
        os.close(in_w)
        with trio.fail_after(30):
            await holder.wait_exited()


async def test_a_session_holding_descriptors_in_flight_cannot_stop_the_next_launch() -> None:
    async with open_launcher("namespaces") as launcher, _holding(launcher, USER):
        assert await _launch(launcher, USER) == 0


@pytest.mark.parametrize("init", ["python", "c"])
async def test_a_session_holding_descriptors_in_flight_cannot_stop_a_creation_guarded_launch(
        monkeypatch: pytest.MonkeyPatch, world_tmp: Path, init: str) -> None:
    """A writable directory without ``.envrc`` and the like: the program confines itself
    under the creation guard and passes its listener to the init -- under the program's
    limit until now, which the holder's count exceeds. ``c``: a warm launch served by
    ``nono-reaper --init`` (``reaper_init.c``), once one waits for the view: the fork
    server's own user's only (another's launches cold), which the holder then shares."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if init == "python" else "")
    uid = USER if init == "python" else None
    if uid is not None:
        os.chown(world_tmp, uid, uid)
    guarded = msgspec.structs.replace(POLICY, grants=(
        *POLICY.grants, Grant(path=str(world_tmp), access=Access.READWRITE)))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = ("/usr/bin/python3", "-I", "-c", "import resource, sys; sys.stdin.read(); sys."
               f"exit(resource.getrlimit(resource.RLIMIT_NOFILE)[1] != "
               f"{program_nofile((hard, hard))[1]})")
    async with open_launcher("namespaces") as launcher:
        if init == "c":
            assert await _launch(launcher, uid, guarded) == 0
            wait_until("a C init ready", lambda: _c_init_waiting(launcher.pid))
        async with _holding(launcher, uid):
            # it runs, with the program's limit all the same (taken after the pass)
            code, exe = await _launch_seen(launcher, uid, guarded, lowered)
    assert code == 0
    assert exe.startswith("/memfd:nono-reaper") == (init == "c"), exe


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
            assert await _launch(launcher) == 0
        finally:
            os.close(dev_null)
            a.close()
            b.close()
    finally:
        await opened.__aexit__(None, None, None)



#: Listens on 127.0.0.1:5001 in its own network namespace, says so, answers connections.
LISTENS = (
    "import socket\n"
    "srv = socket.socket(); srv.bind(('127.0.0.1', 5001)); srv.listen(5)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    conn, _ = srv.accept(); conn.sendall(b'pong:' + conn.recv(100)); conn.close()\n"
)


@asynccontextmanager
async def _listening(launcher: object) -> AsyncIterator[object]:
    """A spawned program of ``USER`` (no creation guard, no mask) listening inside its
    session's network namespace, for ``--listen-port``'s forwards (``connect_inside``),
    once its init has become ``nono-reaper`` (``reaper.c``: it does after a while)."""
    policy = msgspec.structs.replace(POLICY, denials=())
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    proc = await launcher.launch(  # type: ignore[attr-defined]
        policy, LaunchRequest(argv=("/usr/bin/python3", "-I", "-c", LISTENS), cwd="/",
                              uid=USER, gid=USER), stdio=(in_r, out_w, 2))
    os.close(out_w)
    os.close(in_r)
    try:
        with os.fdopen(out_r) as out:
            assert await trio.to_thread.run_sync(out.readline) == "ready\n"
        with trio.fail_after(10):
            while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "nono-reaper":
                await trio.sleep(0.005)
        yield proc
    finally:
        os.close(in_w)
        proc.kill()
        with trio.fail_after(30):
            await proc.wait_exited()


async def _forward(proc: object) -> None:
    with trio.fail_after(10):
        inbound = await proc.connect_inside(5001)  # type: ignore[attr-defined]
        await inbound.send_all(b"ping")
        assert await inbound.receive_some(100) == b"pong:ping"
        await inbound.aclose()


async def test_an_inbound_forward_refused_for_descriptors_in_flight_fails_alone() -> None:
    """The init's pass of a forward's connected socket, refused (ETOOMANYREFS) while another
    session of its user holds its limit's worth in flight, fails that forward only: the
    session's next forwards work once the descriptors are let go. (Before: the init took
    the refusal for the daemon's hang-up and dropped the channel; the daemon saw "the session
    has ended", and the session had no forward again.) Since known2 the init keeps the fork
    server's limit, above what a session can hold: the holder here is a process of the
    user outside any session, with this test's (the fork server's) limit."""
    async with open_launcher("namespaces") as launcher, _listening(launcher) as proc:
        await _forward(proc)
        with _holding_outside(USER):
            with pytest.raises(OSError) as refused:
                await _forward(proc)
            assert refused.value.errno == errno.ETOOMANYREFS, refused.value
        await _forward(proc)


@contextmanager
def _holding_outside(uid: int | None) -> Iterator[None]:
    """``HOLDER`` run as ``uid`` (None: us) outside any session, with our descriptor limit
    (as high as the fork server's, so the user's count passes an init's)."""
    import subprocess

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        pytest.skip("the test's soft descriptor limit is below its hard one")
    command = ["/usr/bin/python3", "-I", "-c", HOLDER]
    if uid is not None:
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None
        held, _, err = (int(x) for x in holder.stdout.readline().split())
        assert err == errno.ETOOMANYREFS and held > hard, (held, hard)
        yield
    finally:
        holder.kill()
        holder.wait(30)


async def test_a_session_holding_descriptors_in_flight_cannot_stop_an_inbound_forward() -> None:
    """fdflight's residual, closed in known2: a spawned program's init took the program's
    descriptor limit before the spawn (the program inherited it), so its later passes --
    each inbound forward's connected socket -- were refused while another session of its
    user held its limit's worth in flight. The limit is now taken in the program alone
    (C init: ``spawn_program``'s vfork-style child; Python init: the forked program)."""
    refused: OSError | None = None
    async with open_launcher("namespaces") as launcher, _listening(launcher) as proc, \
            _holding(launcher, USER):
        try:
            await _forward(proc)
        except OSError as exc:  # ETOOMANYREFS, the forward only (the test above)
            refused = exc
    assert refused is None, refused


def _nofile(pid: int) -> tuple[int, int]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


async def _limits_of_init_and_program(c_init: bool) -> tuple[tuple[int, int], tuple[int, int],
                                                             str]:
    """A spawned program's descriptor limit and its init's (and the init's executable), the
    C init's (a warm launch) or the Python init's."""
    from tests.sandbox.test_cinit import POLICY as PLAIN
    from tests.sandbox.test_cinit import _c_init_waiting, _request

    async with open_launcher("namespaces") as launcher:
        await (await launcher.launch(PLAIN, _request("/bin/true"))).wait_exited()
        if c_init:
            wait_until("a C init ready", lambda: _c_init_waiting(launcher.pid))
        gate_r, gate_w = os.pipe()
        try:
            proc = await launcher.launch(
                PLAIN, _request("/usr/bin/python3", "-c", "import sys; sys.stdin.read()"),
                stdio=(gate_r, 1, 2))
        finally:
            os.close(gate_r)
        try:
            init = proc.pid
            children = Path(f"/proc/{init}/task/{init}/children")
            wait_until("the program", lambda: children.read_text().strip() != "")
            program = int(children.read_text().split()[0])
            return _nofile(init), _nofile(program), os.readlink(f"/proc/{init}/exe")
        finally:
            os.close(gate_w)
            await proc.wait_exited()


@pytest.mark.parametrize("c_init", [True, False], ids=["c-init", "python-init"])
def test_only_the_program_takes_the_lower_descriptor_limit(
        c_init: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """known2: the init keeps the fork server's limit (its passes of forwards' sockets); the
    program alone gets ``program_nofile``'s. Before: the init took the program's first."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "" if c_init else "1")
    ours = resource.getrlimit(resource.RLIMIT_NOFILE)  # the fork server starts with it
    init, program, exe = trio.run(_limits_of_init_and_program, c_init)
    assert exe.startswith("/memfd:nono-reaper") == c_init, exe
    assert program == program_nofile(ours), (program, ours)
    assert init[1] == ours[1] and init != program, (init, program)
