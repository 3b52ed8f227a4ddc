"""What a program can do to its init, ``nono-reaper``, from inside its namespaces: it has the
same uid, so the kernel would let it lower the init's resource limits (``prlimit``): with
its descriptor limit below four, the init's ``poll`` failed (``EINVAL``) and its loop spun
(no creation call answered, no signal forwarded, the lifeline's hang-up never seen), and
with a CPU limit the kernel killed it. The seccomp filter now refuses those calls on pid 1,
and the init waits with ``epoll``, registered before the program can act, in case a limit
reaches it another way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from nonod.policy import NetworkPolicy
from nonod.sandbox._api import Sandboxed

from ..conftest import SandboxUser
from .test_createguard import AFTER_REAPER, layout_policy
from .test_createguard import layout as layout  # the fixture
from .test_reaper import _exited, _line, _policy, _session
from .test_sandbox import probe

pytestmark = pytest.mark.userns

# The program's calls on its init (pid 1) and on itself (pid 0): EPERM for the first five
# (the init's limits and scheduling), OK for the rest.
ON_THE_INIT = (
    "import resource\n"
    "t(lambda: resource.prlimit(1, resource.RLIMIT_NOFILE, (3, 3)))\n"
    "t(lambda: resource.prlimit(1, resource.RLIMIT_CPU, (1, 1)))\n"
    "t(lambda: os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0)))\n"
    "t(lambda: os.setpriority(os.PRIO_PROCESS, 1, 19))\n"
    "t(lambda: os.setpriority(os.PRIO_PGRP, 1, 19))\n"
    "t(lambda: resource.prlimit(1, resource.RLIMIT_NOFILE))\n"  # reading stays allowed
    "t(lambda: resource.prlimit(0, resource.RLIMIT_NOFILE, (64, 64)))\n"
    "t(lambda: os.setpriority(os.PRIO_PROCESS, 0, 1))\n"
)


def test_the_program_cannot_limit_or_starve_its_init(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """The init runs with the program's uid in the program's user namespace, so the kernel
    let the program lower its limits: ``RLIMIT_CPU`` made the kernel kill it (the session
    ended as SIGKILL), ``RLIMIT_NOFILE`` below four stalled its loop before it waited with
    ``epoll``. The filter refuses them for pid 1 (found by review10); the program's own
    limits stay its own, and the init still answers, forwards and reports."""
    home, work = layout
    r = sandbox_user.run(layout_policy(home, work), probe(AFTER_REAPER + ON_THE_INIT + (
        "t(lambda: os.close(os.open('after', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        "t(lambda: os.close(os.open('.envrc', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        "import signal, threading\n"
        "got = threading.Event()\n"
        "signal.signal(signal.SIGUSR1, lambda *_: got.set())\n"
        "os.kill(1, signal.SIGUSR1)\n"
        "print('forwarded', got.wait(10), flush=True)\n"
        "sys.exit(3)\n")), cwd=str(work), env=(("HOME", str(home)),), timeout=60)
    lines = r.stdout.splitlines()
    assert r.code == 3, (r.code, lines, r.stderr)  # before: 'OK ' for the first five
    assert lines[:5] == ["EPERM"] * 5, lines
    assert [line.split()[0] for line in lines[5:8]] == ["OK"] * 3, lines
    assert lines[8:] == ["OK ", "EACCES", "forwarded True"], lines
    assert (work / "after").is_file() and not (work / ".envrc").exists()


# A listener whose accept queue is full: a connection to it waits for a SYN-ACK that never
# comes (the kernel drops the SYN), until the reaper's five seconds are up.
STALLS_CONNECT = (
    "import socket, signal, sys, threading, time\n"
    "got = threading.Event()\n"
    "signal.signal(signal.SIGUSR1, lambda *_: got.set())\n"
    "srv = socket.socket(); srv.bind(('127.0.0.1', 5003)); srv.listen(0)\n"
    "held = []\n"
    "for _ in range(3):\n"
    "    c = socket.socket(); c.setblocking(False); held.append(c)\n"
    "    try: c.connect(('127.0.0.1', 5003))\n"
    "    except BlockingIOError: pass\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"  # the daemon's connect is on its way
    "start = time.monotonic()\n"
    "os.kill(1, signal.SIGUSR1)\n"
    "got.wait(10)\n"
    "print(f'{time.monotonic() - start:.3f}', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.root
async def test_a_connect_that_never_completes_does_not_stall_the_init(world_tmp: Path) -> None:
    """While the init's connection for the daemon waits on a listener that accepts nothing,
    it still forwards signals (it waited in ``poll`` for up to five seconds, answering
    nothing); the daemon gets ``ETIMEDOUT`` after those five seconds."""
    policy = _policy(world_tmp, NetworkPolicy(restricted=True, block=True))
    results: list[BaseException | None] = []

    async def connect(proc: Sandboxed) -> None:
        try:
            await proc.connect_inside(5003)
            results.append(None)
        except OSError as exc:
            results.append(exc)

    async with _session(world_tmp, "import os\n" + STALLS_CONNECT, policy=policy) as (
            proc, out, stdin):
        assert await _line(out) == b"ready\n"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect, proc)
            await trio.sleep(0.3)  # the connect is under way (no event to wait for)
            os.write(stdin, b"go\n")
            latency = float(await _line(out))
        os.close(stdin)
        assert await _exited(proc) == (0, None)
    assert latency < 2, latency
    assert len(results) == 1 and isinstance(results[0], TimeoutError), results
