"""Adversarial review of the engine branch's warm launchers: what a program starts with must
not depend on what the fork server inherited or on the launcher's preparation, and a
launcher prepared for one policy never serves another that differs only in its rights."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import trio

from nonod.errors import LaunchError
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


#: A program that kills its parent, the session's init, as the first thing it does: static,
#: so that it gets there within microseconds of its exec (a dynamic one loses every race).
INIT_KILLER = """
#include <signal.h>
#include <unistd.h>
int main(void) { kill(getppid(), SIGKILL); return 0; }
"""


def _init_killer(directory: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the static test program")
    source, binary = directory / "killer.c", directory / "killer"
    source.write_text(INIT_KILLER)
    built = subprocess.run([cc, "-static", "-O2", "-o", str(binary), str(source)],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.skip(f"cannot build a static program: {built.stderr[-300:]}")
    return binary


def test_a_program_that_kills_its_init_at_once_still_ran_on_the_record(
        world_tmp: Path) -> None:
    """Without a pid namespace (landlock-only mode) a program can kill its init (same uid,
    same Landlock domain). A warm launch's records (the init's pid, audit session, group)
    used to be written by the init only after it had started the program: a program that
    killed its init first made the launch fail ("the launcher died before reporting")
    although it had run, and left the warm launcher's group unknown to the daemon. The
    records go on the launch pipe before the program starts; the launch still ends only
    when the pipe does (once the program runs), as before."""
    tools = world_tmp / "tools"
    tools.mkdir()
    killer = _init_killer(tools)
    policy = ResolvedPolicy(
        name="killer", grants=(Grant(path="/usr", access=Access.READ),
                               Grant(path=str(tools), access=Access.READ)),
        denials=(), allow_degraded=("persistence", "creation_guard", "host_proc",
                                         "host_metadata"))

    async def main() -> list[str]:
        outcomes = []
        async with open_launcher("landlock-only") as launcher:
            for _ in range(100):  # the first cold, the others on warm launchers
                try:
                    proc = await launcher.launch(
                        policy, LaunchRequest(argv=(str(killer),), cwd=str(tools)))
                except LaunchError as exc:
                    outcomes.append(f"refused at {exc.step}: {exc}")
                    continue
                with trio.fail_after(30):
                    await proc.wait_exited()
                outcomes.append("launched" if proc.pid > 0 else "no pid")
        return outcomes

    outcomes = trio.run(main)
    refused = [outcome for outcome in outcomes if outcome != "launched"]
    assert not refused, (len(refused), refused[:3])
