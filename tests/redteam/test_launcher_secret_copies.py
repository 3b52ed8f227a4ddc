"""Red team (review12): a session's real secrets copied into the launchers made after it.

The fork server kept the last launch's plan (the message and its decoded form, the program's
environment with its ``env_credentials`` values among it) until the next launch arrived, and
made its warm launchers meanwhile: each forked launcher started with a copy of them. A
launcher lives until a launch takes it (that session's init then keeps the copy for the
session's life) and, unlike the fork server, is not locked out of swap. Tried on a real
daemon: each launcher made after a session with a secret held two copies of its value. Now
the server lets go of a plan once it is handed over."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env
from tests.proctree import children

pytestmark = pytest.mark.root


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


def below(pid: int) -> Iterator[int]:
    for child in children(pid):
        yield child
        yield from below(child)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "(gone)"


def copies(pid: int, needle: bytes) -> int:
    """How many times ``needle`` is in ``pid``'s readable memory (0 if it is gone)."""
    found = 0
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        with open(f"/proc/{pid}/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                start, end = (int(x, 16) for x in span.split("-"))
                if "r" not in perms or end - start > 1 << 28:
                    continue
                try:
                    mem.seek(start)
                    found += mem.read(end - start).count(needle)
                except (OSError, ValueError, OverflowError):  # [vvar] and the like
                    continue
    except OSError:
        return 0
    return found


@pytest.mark.xfail(strict=False, reason=(
    "found and not closed (docs/security-model.md, 'A session's secret in two processes below "
    "the fork server'): launchers forked after a secret launch hold one copy of it, from the "
    "fork server's freed memory; failed in 2 of the last 3 clean-clone runs of the fifteenth "
    "session, not in 30 runs alone"))
def test_a_sessions_secret_is_in_no_launcher_made_after_it(
        run: CLI, short_tmp: Path) -> None:
    value = "s3cr3t-" + os.urandom(8).hex()
    source = short_tmp / "db-password"
    source.write_text(value)
    source.chmod(0o600)
    secret = short_tmp / "secret.json"
    secret.write_text(json.dumps({"meta": {"name": "withsecret"},
                                  "env_credentials": {f"file://{source}": "DB_PASSWORD"}}))
    plain = short_tmp / "plain.json"
    plain.write_text(json.dumps({"meta": {"name": "plain"}}))
    for _ in range(3):
        done = run("launch", "--profile", str(secret), "--allow-cwd", "--block-net", "--",
                   "/bin/sh", "-c", f'test "$DB_PASSWORD" = "{value}"')
        assert done.returncode == 0, done.stderr  # the program had it
    for name in ("b1", "b2"):  # other sessions, on launchers made since
        done = run("launch", "--profile", str(plain), "--allow-cwd", "--block-net",
                   "--detach", "--name", name, "--", "/bin/sleep", "60")
        assert done.returncode == 0, done.stderr
    [server] = [pid for pid in children(os.getpid())
                if b"_forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    launchers = list(below(server))
    assert launchers
    held = {pid: n for pid in launchers if (n := copies(pid, value.encode()))}
    named = {pid: (n, _cmdline(pid)) for pid, n in held.items()}
    assert held == {}, f"processes of the fork server's holding the secret: {named}"
    for name in ("b1", "b2"):
        run("stop", name)
