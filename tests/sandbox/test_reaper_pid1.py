"""What a program can do to its init, ``nono-reaper``, from inside its namespaces: it has the
same uid, so the kernel lets it lower the init's resource limits (``prlimit``). With its
descriptor limit below four, the init's ``poll`` failed (``EINVAL``: more descriptors than
the limit) and its loop spun: no creation call answered, no signal forwarded, and the
lifeline's hang-up never seen, so the session outlived the fork server. The init now waits
with ``epoll``, registered before the program can act."""

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

LOWERS = "import resource; resource.prlimit(1, resource.RLIMIT_NOFILE, (3, 3))\n"


def test_an_init_whose_descriptor_limit_is_lowered_still_answers_and_reports(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """The program lowers its init's descriptor limit to 3: the init can no longer open the
    program's memory, so a new file in the guarded directory is left to the kernel (EACCES:
    refused, never waited for), a signal sent to the init still reaches the program, and
    the program's exit code is still reported."""
    home, work = layout
    r = sandbox_user.run(layout_policy(home, work), probe(AFTER_REAPER + (
        "t(lambda: os.close(os.open('before', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        + LOWERS +
        "t(lambda: os.close(os.open('after', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        "t(lambda: os.close(os.open('.envrc', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        # a signal sent to the init is still forwarded to the program
        "import signal, threading\n"
        "got = threading.Event()\n"
        "signal.signal(signal.SIGUSR1, lambda *_: got.set())\n"
        "os.kill(1, signal.SIGUSR1)\n"
        "print('forwarded', got.wait(10), flush=True)\n"
        "sys.exit(3)\n")), cwd=str(work), env=(("HOME", str(home)),), timeout=60)
    assert (r.code, r.stdout.splitlines()) == (
        3, ["OK ", "EACCES", "EACCES", "forwarded True"]), r.stderr
    assert (work / "before").is_file()
    assert not (work / "after").exists() and not (work / ".envrc").exists()


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
