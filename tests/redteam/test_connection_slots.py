"""Red team, the system daemon's connection slots: ``max_connections`` (256) counted all users
together and ``max_connections_per_uid`` (128) one user, so two members of the socket group,
each holding its share of idle connections (a request every ``idle_timeout`` keeps them),
took every slot: from then on every other user, root included, was told
``daemon.too_many_connections`` and could not even list or stop a session. Now a uid holding
fewer than a few connections is admitted over the shared cap (root up to its own cap)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import client_dir, shared_daemon

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: Opens N connections, says hello on each, prints how many were welcomed, then holds them
#: all until its stdin closes. Standard library only (and rawclient's helpers): it runs as
#: another user.
HOLDER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from rawclient import welcomed
held = [welcomed(sys.argv[2]) for _ in range(int(sys.argv[3]))]
print(sum(b'"welcome"' in answer for _, answer in held), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def tight_daemon(short_tmp: Path) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon with 4 slots, 2 per uid, and three real users of its socket group."""
    with shared_daemon(short_tmp, 3, daemon="max_connections = 4\nmax_connections_per_uid = 2\n"
                       ) as setting:
        yield setting


def _hold(handle: DaemonThread, user: LocalUser, count: int) -> subprocess.Popen[str]:
    holder = subprocess.Popen([*user.prefix(), SYSTEM_PYTHON, "-c", HOLDER, client_dir(),
                               str(handle.socket), str(count)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd="/")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == str(count)  # every one welcomed
    return holder


def _replies(handle: DaemonThread, prefix: list[str], *more: dict[str, object]) -> list[str]:
    """The daemon's answers to ``hello`` and ``more`` (its error, if it refuses the connection)."""
    lines = raw_client(handle.socket, [hello(), *more], prefix=prefix)
    return [json.loads(line)["type"] if line.startswith("{") and '"error"' not in line
            else line for line in lines]


def test_two_users_cannot_lock_everyone_else_out_of_the_daemon(
        tight_daemon: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (first, second, bystander) = tight_daemon
    holders = [_hold(handle, first, 2), _hold(handle, second, 2)]  # every shared slot
    try:
        # The shared cap is reached: another user and root are still served...
        status = {"type": "status"}
        assert _replies(handle, bystander.prefix(), status) == ["welcome", "daemon_status"]
        assert _replies(handle, [], status) == ["welcome", "daemon_status"]
        # ... while a hoarder is held to its own cap.
        extra = _replies(handle, first.prefix())
        assert "daemon.too_many_connections" in extra[0], extra
    finally:
        for holder in holders:
            holder.communicate(timeout=30)
