"""The red team's tests drive a real daemon as the daemon tests do: their fixtures, reused,
``run`` (``nonoctl`` against a user daemon of the test's own uid), and for the attacks by
other local users a system daemon whose socket group holds fresh real users."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.daemon.conftest import (
    SYSTEM_PYTHON,
    DaemonThread,
    daemon_thread,
    reachable_script,
    short_tmp,
)
from tests.daemon.localusers import LocalUser, local_users, socket_group
from tests.daemon.test_caller_files import system_daemon
from tests.daemon.test_cli import CLI, cli_env

__all__ = ["daemon_thread", "run", "short_tmp", "system_daemon", "two_users"]


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


@contextmanager
def shared_daemon(base: Path, users: int, *, daemon: str = "", more: str = ""
                  ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon (``[daemon]`` plus ``daemon``'s lines, then ``more``) whose socket
    group holds ``users`` fresh real users; gone afterwards."""
    with local_users(base, users) as made:
        handle = DaemonThread(base, system=True, config=(
            f'[daemon]\nsocket_group = "{socket_group()}"\n{daemon}{more}')).start()
        try:
            yield handle, made
        finally:
            handle.stop()


@pytest.fixture
def two_users(short_tmp: Path) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon and two fresh real users of its socket group."""
    with shared_daemon(short_tmp, 2) as setting:
        yield setting


def workdir(user: LocalUser) -> Path:
    """``user``'s home opened to others (0755) and a working directory of its own in it."""
    import os

    user.home.chmod(0o755)
    work = user.home / "work"
    work.mkdir(exist_ok=True)
    os.chown(work, user.uid, user.gid)
    return work


def rss() -> int:
    """This process's resident memory (the daemon of these tests runs in it), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


#: Another user's side of a TCP flood: opens N connections to 127.0.0.1:PORT that send
#: nothing; then one more, which the server closes once it has taken the others in (servers
#: take connections in order); prints "held", then holds them all until its stdin closes.
TCP_HOLDER = r"""
import socket, sys
address = ("127.0.0.1", int(sys.argv[1]))
held = [socket.create_connection(address) for _ in range(int(sys.argv[2]))]
with socket.create_connection(address) as probe:
    probe.settimeout(30)
    assert probe.recv(1) == b""
print("held", flush=True)
sys.stdin.read()
"""


def hold_tcp(user: LocalUser, port: int, count: int) -> subprocess.Popen[str]:
    """``TCP_HOLDER`` run as ``user``, once it holds its connections (close its stdin, or
    ``communicate()``, to let them go)."""
    holder = subprocess.Popen([*user.prefix(), SYSTEM_PYTHON, "-c", TCP_HOLDER, str(port),
                               str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd="/")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def client_dir() -> str:
    """Where ``rawclient.py`` sits, readable by every uid: the scripts run as other users
    import its WebSocket helpers from there."""
    return str(reachable_script("rawclient.py").parent)
