"""A name that is not UTF-8 in a session's audit record: recorded, and the daemon goes on.

A program may give its files any bytes as names. The kernel logs such a name in hex, and
the daemon decoded it with ``surrogateescape``; the record's JSON encoder cannot hold those
surrogates, and the failure came out of the reader of the kernel's records, through the
daemon's nursery: a program that made a symlink named ``link\\xff`` to a denied file and
opened it ended the daemon, every session of every user with it. Real daemon, real kernel
audit (root), a real session.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from nonod.audit import FsDenied, verify_session_file
from nonod.audit._chain import Chain
from tests.audit.test_fs_denied import _setup_world, needs_root
from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # a fixture
from tests.daemon.test_cli import CLI, cli_env

PROGRAM = r"""
import os
# a name that is not UTF-8, and one of the four characters \xff (review13), to a denied file
for name in (b"link\xff", b"link\\xff"):
    os.symlink("secret/key", name)
    try:
        os.open(name, os.O_RDONLY)
    except PermissionError:
        print("refused", flush=True)
"""


@needs_root
def test_a_denied_name_that_is_not_utf8_is_recorded_and_the_daemon_goes_on(
        short_tmp: Path) -> None:
    work, _, profile = _setup_world(short_tmp)
    (work / "undecodable.py").write_text(PROGRAM)
    daemon = DaemonThread(short_tmp, config='[audit]\nfs_denied = "auto"\n').start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp), work)
        first = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                    "/usr/bin/python3", "-S", "undecodable.py")
        assert first.returncode == 0 and first.stdout.count("refused") == 2, first.stderr
        # The daemon is still there: another launch, and its list (before: gone).
        second = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                     "/usr/bin/python3", "-S", "-c", "print('after')")
        assert second.returncode == 0 and "after" in second.stdout, second.stderr
    finally:
        daemon.stop()
    records = {}
    for path in daemon.state_dir.rglob("audit.ndjson"):
        verify_session_file(path)
        records[path] = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    denied = [e for events in records.values() for e in events if e["type"] == "fs_denied"]
    # The byte is \xff; the name's own backslash \x5c, so the two are told apart (before,
    # both were recorded as link\xff).
    assert sorted((e["path"], e["operation"]) for e in denied) == [
        (f"{work}/link\\x5cxff", "read"), (f"{work}/link\\xff", "read")]


def test_any_record_with_a_lone_surrogate_is_written_with_it_escaped() -> None:
    """The same for any field of any record that holds bytes that were not UTF-8 (decoded
    with ``surrogateescape`` somewhere): the record is written, the character as text."""
    chain = Chain.for_session("s")
    event = FsDenied(path="/w/a\udcffb", operation="read")
    line = chain.append(event, "2026-12-05T00:00:00Z").line
    written = msgspec.json.decode(line)["event"]
    assert written == {"type": "fs_denied", "path": "/w/a\\udcffb", "operation": "read"}
