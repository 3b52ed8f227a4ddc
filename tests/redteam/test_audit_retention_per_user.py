"""Red team, another user's audit trail erased through retention: ``[audit] keep_sessions``
kept the N most recently sealed sessions of the whole daemon. On the system daemon a member
of the socket group ran N short sessions (a minute's work at the per-user cap of live
sessions), and retention removed every earlier session's audit file: every other user's
record of what their agents did, gone (the ledger keeps one line per session, not its
events). Now the count is per user there: one user's sessions push out only that user's."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import shared_daemon, workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


@pytest.fixture
def setting(short_tmp: Path) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    with shared_daemon(short_tmp, 2, more="[audit]\nkeep_sessions = 2\n") as setting:
        yield setting


def _sessions(handle: DaemonThread, user: LocalUser, count: int) -> list[str]:
    """``count`` sessions of ``user`` run to their end (sealed), one after the other."""
    work = workdir(user)
    ids = []
    for n in range(count):
        launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(work),
                  "env": session_env(work), "options": {"allow_cwd": True, "block_net": True},
                  "detach": True, "stdio": "null", "name": f"s{n}"}
        lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": f"s{n}"}],
                           prefix=user.prefix())
        assert json.loads(lines[-1])["type"] == "exited", lines
        ids.append(str(json.loads(lines[1])["session"]["id"]))
    return ids


def _kept(handle: DaemonThread, ids: list[str]) -> list[str]:
    return [i for i in ids if (handle.state_dir / "sessions" / i / "audit.ndjson").exists()]


def test_one_users_sessions_do_not_push_out_another_users_audit_files(
        setting: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (victim, churner) = setting
    theirs = _sessions(handle, victim, 2)
    mine = _sessions(handle, churner, 4)
    assert _kept(handle, theirs) == theirs  # before: [], both removed by the churn
    assert _kept(handle, mine) == mine[2:]  # the churner's own count still holds
