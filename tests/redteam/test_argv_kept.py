"""Red team, ended sessions' arguments in the system daemon's memory and in root's replies:
a launch's argv may be up to a control message's size (1 MiB), and a session's record kept
it whole, in memory and in every ``ps``/``inspect`` reply, for as long as the session is
listed (until ``prune`` or retention: a uid's ended sessions are bounded by its disk budget
only). A member of the socket group made root's ``ps --all --json`` a reply of megabytes.
Now the record keeps a prefix of at most ``ARGV_KEPT`` bytes, marked ``argv_shortened``; the
session's audit file has the whole argv."""

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

#: What the record keeps (``nonod.sessions._records.ARGV_KEPT``, docs/security-model.md).
ARGV_KEPT = 4096
#: The attacker's arguments: six of 100 kB each (a 600 kB launch message).
LONG = tuple(chr(ord("a") + i) * 100_000 for i in range(6))


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    with shared_daemon(short_tmp, 1) as setting:
        yield setting


def test_an_ended_sessions_long_arguments_are_kept_as_a_marked_prefix(
        daemon: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (attacker,) = daemon
    work = workdir(attacker)
    argv = ["/bin/true", *LONG]
    lines = raw_client(handle.socket, [hello(), {
        "type": "launch", "argv": argv, "cwd": str(work), "env": session_env(work),
        "options": {"allow_cwd": True, "block_net": True}, "detach": True, "stdio": "null",
        "name": "long"}, {"type": "wait", "session": "long"}], prefix=attacker.prefix())
    launched = json.loads(lines[1])
    assert launched["type"] == "launched", launched
    assert json.loads(lines[2])["type"] == "exited", lines[2][:200]
    session_id = launched["session"]["id"]
    whole = {"arguments": len(argv), "bytes": sum(len(arg.encode()) for arg in argv)}
    # Root's ps --all and inspect (on main: 600 kB each, growing with every such session).
    listed, inspected = (raw_client(handle.socket, [hello(), message])[1] for message in (
        {"type": "list", "all": True}, {"type": "inspect", "session": session_id}))
    assert len(listed) < 2 * ARGV_KEPT, len(listed)
    assert len(inspected) < 2 * ARGV_KEPT, len(inspected)
    (entry,) = [s for s in json.loads(listed)["sessions"] if s["id"] == session_id]
    detail = json.loads(inspected)["session"]
    for shown in (entry, detail, launched["session"]):
        assert shown["argv_shortened"] == whole, shown["argv_shortened"]
        assert shown["argv"][0] == "/bin/true"
        assert LONG[0].startswith(shown["argv"][1])
        assert sum(len(arg.encode()) for arg in shown["argv"]) == ARGV_KEPT
    # The record on disk keeps the same prefix; the audit file keeps the whole argv.
    directory = handle.state_dir / "sessions" / session_id
    record = json.loads((directory / "session.json").read_text())
    assert record["argv"] == detail["argv"]
    assert record["argv_shortened"] == whole
    with (directory / "audit.ndjson").open(encoding="utf-8") as audit:
        started = next(line["event"] for line in map(json.loads, audit)
                       if line["event"].get("type") == "session_started")
    assert started["argv"] == argv
