"""What the fork server loads: the launcher's modules, not the daemon's async engine.

Everything the server imports is memory every warm launcher it forks shares with it (and
partly copies on write), so the server runs its real entry point here, on a socket of ours,
and says what it had loaded once it served (we close our end: it returns).
"""

from __future__ import annotations

import os
import socket
import subprocess

from nonod.sandbox._api import server_command

# trio and what comes with it, structlog, the engine's async face: the daemon's, not a
# launcher's (ssl arrives with trio). typing_extensions: msgspec's, kept out (nonod._lean).
# The cgroup backends: the server writes limits into v1 groups (_v1) and nothing else.
# inspect (with ast, dis, tokenize): dataclasses', for the docstring of a dataclass that has
# none (nonod._lean); about 1 MiB. The policy and the protocol: the daemon's plans and
# replies, which the server neither makes nor sends (about 0.4 MiB); threading.
NOT_IN_SERVER = ("trio", "outcome", "sniffio", "sortedcontainers", "idna", "ssl", "asyncio",
                 "structlog", "nonod.sandbox._api", "nonod.sandbox._plan", "typing_extensions",
                 "nonod.cgroups._backend", "nonod.cgroups._v2", "secrets", "hmac",
                 "inspect", "ast", "dis", "tokenize", "nonod.policy", "nonod.protocol",
                 "threading")


def _served_modules() -> set[str]:
    probe = ("import atexit; atexit.register(lambda: print(*sorted("
             "k for k, v in sys.modules.items() if v))); ")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours:
        proc = subprocess.Popen(
            [*server_command(prelude=probe), str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),), env={"PATH": os.defpath},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        theirs.close()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return set(out.split())


def test_the_fork_server_loads_the_launcher_and_not_the_async_engine() -> None:
    loaded = _served_modules()
    assert {"nonod.sandbox._forkserver", "nonod.sandbox._launcher", "msgspec"} <= loaded
    assert sorted(m for m in loaded if m.startswith(NOT_IN_SERVER)) == []
