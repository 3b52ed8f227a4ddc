"""What a program can do to its init, ``nono-reaper``, from inside its namespaces: it has the
same uid, so the kernel lets it lower the init's resource limits (``prlimit``). With its
descriptor limit below four, the init's ``poll`` failed (``EINVAL``: more descriptors than
the limit) and its loop spun: no creation call answered, no signal forwarded, and the
lifeline's hang-up never seen, so the session outlived the fork server. The init now waits
with ``epoll``, registered before the program can act."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import SandboxUser
from .test_createguard import AFTER_REAPER, layout_policy
from .test_createguard import layout as layout  # the fixture
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
