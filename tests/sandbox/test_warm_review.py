"""Adversarial review of the engine branch's warm launchers: what a program starts with must
not depend on what the fork server inherited or on the launcher's preparation, and a
launcher prepared for one policy never serves another that differs only in its rights."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import Launcher, LaunchRequest, open_launcher

from .test_warm_views import _policy, _read

pytestmark = pytest.mark.userns

#: Ignored by whoever started the daemon (nohup ignores SIGHUP, a shell job SIGQUIT, some
#: supervisors a real-time signal): ignored dispositions survive exec.
INHERITED = (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGRTMIN + 3)
#: Not a Python program: Python ignores SIGPIPE and SIGXFSZ itself.
STATUS = ("/bin/sh", "-c", "ulimit -n; exec /usr/bin/grep -E '^Sig(Blk|Ign)' /proc/self/status")


async def _status(launcher: Launcher, policy: ResolvedPolicy) -> list[str]:
    out_r, out_w = os.pipe()
    try:
        proc = await launcher.launch(policy, LaunchRequest(argv=STATUS, cwd="/"),
                                     stdio=(0, out_w, 2))
    finally:
        os.close(out_w)
    with os.fdopen(out_r, "rb") as out:
        assert (await proc.wait_exited()).code == 0
        return [line.split()[-1] for line in out.read().decode().splitlines()]


def test_what_the_fork_server_inherited_does_not_reach_programs(world_tmp: Path) -> None:
    """Signals ignored and a descriptor limit given to the fork server by its starter: the
    server keeps the limit for sessions (it raises its own) and no signal it inherited as
    ignored is ignored by a program, cold or warm (``_launcher._reset_signals`` resets only
    what Python knows to be set: Python reads every inherited disposition at start)."""
    (world_tmp / "a").mkdir()
    policy = _policy("a", Grant(path=str(world_tmp / "a"), access=Access.READ))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in INHERITED}
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))

    async def main() -> list[list[str]]:
        async with open_launcher("namespaces") as launcher:
            return [await _status(launcher, policy) for _ in range(5)]

    try:
        seen = trio.run(main)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for sig, handler in before.items():
            signal.signal(sig, handler)
    glibc = (1 << 31) | (1 << 32)  # signals 32 and 33 (bit n - 1): glibc's own
    for nofile, blocked, ignored in seen:
        assert int(ignored, 16) & ~glibc == 0, seen
        assert int(blocked, 16) == 0, seen
        assert nofile == "512", seen


WRITE = """
import sys
try:
    open(sys.argv[1] + '/out', 'w').write('x')
    print('wrote')
except OSError as exc:
    print('refused', exc.errno)
"""


def test_policies_that_differ_only_in_rights_never_share_a_launcher(world_tmp: Path) -> None:
    """The same directory granted read-only to one policy and read-write to the other,
    taking turns once both have launchers prepared: each session has its own policy's
    rights."""
    shared = world_tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # noqa: S103 - the session's uid writes there
    reader = _policy("reader", Grant(path=str(shared), access=Access.READ))
    writer = _policy("writer", Grant(path=str(shared), access=Access.READWRITE))

    async def main() -> list[tuple[str, str]]:
        seen = []
        async with open_launcher("namespaces") as launcher:
            for policy in (reader, writer) * 5:
                (shared / "out").unlink(missing_ok=True)
                lines = await _read(launcher, policy, shared, code=WRITE)
                seen.append((policy.name, lines[0]))
        return seen

    for name, outcome in trio.run(main):
        assert (outcome == "wrote") == (name == "writer"), (name, outcome)
