"""Red team, a sealed session's record cut short, with the ledger that says it was sealed.

The ledger gets a session's line only once the session's seal is on disk (fsynced first), so
a file that the ledger lists but that has no final record lost lines after it was sealed: no
live session and no daemon that died leaves that. Yet ``audit verify`` compared a file with
the ledger only when the file still had its seal: cut off at any line boundary, or inside a
line, the file was called *incomplete* (exit 2, as for a live session), and with
``--allow-incomplete`` it passed (exit 0, "ledger not checked"), while the ledger held the
count, the Merkle root and the file digest that prove events were removed. And the repair at
daemon start (``append_daemon_lost``, as for any unsealed file whose record says running)
appended its own end and seal to such a file, over the evidence, before the ledger refused
a second line for it.

Now a file the ledger lists is tampered (``audit.ledger``, exit 1) when its seal is gone,
whatever ``--allow-incomplete`` says, and the repair leaves it as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nonod.audit import AuditLedgerError, append_daemon_lost, verify_session_file
from nonod.audit._writer import Ledger
from tests.audit._support import SESSION, write_session
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI


def _boundaries(data: bytes) -> list[int]:
    """Every length the file can be cut to at a line boundary short of its end, and one
    inside the seal line."""
    ends = [0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    return [*ends[:-1], ends[-2] + 17]


def test_a_cut_sealed_record_fails_against_the_ledger(run: CLI,
                                                      daemon_thread: DaemonThread) -> None:
    done = run("launch", "--detach", "--json", "--allow-cwd", "--block-net", "--", "true")
    assert done.returncode == 0, done.stderr
    session = str(json.loads(done.stdout)["id"])
    ended = run("wait", session)  # sealed, with its ledger line, once it has ended
    assert ended.returncode == 0, ended.stderr
    state = str(daemon_thread.state_dir)
    path = daemon_thread.state_dir / "sessions" / session / "audit.ndjson"
    whole = path.read_bytes()
    verified = run("audit", "verify", "--state-dir", state, session)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    for keep in _boundaries(whole):
        path.write_bytes(whole[:keep])
        for extra in ((), ("--allow-incomplete",)):
            checked = run("audit", "verify", "--state-dir", state, *extra, session)
            assert checked.returncode == 1, (keep, extra, checked.stdout, checked.stderr)
            assert not checked.stdout.startswith(("OK", "INCOMPLETE")), checked.stdout
            assert "ledger" in checked.stderr and "final record" in checked.stderr, \
                checked.stderr
        # Without the ledger there is nothing to tell it from a live session's file.
        alone = run("audit", "verify", "--state-dir", state, "--no-ledger", session)
        assert alone.returncode == 2, (keep, alone.stdout, alone.stderr)


async def test_the_repair_leaves_a_listed_file_unsealed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ledger = await Ledger.open(state)
    try:
        path = await write_session(state, ledger=ledger)
    finally:
        await ledger.aclose()
    whole = path.read_bytes()
    cut = whole[: whole.rstrip(b"\n").rfind(b"\n") + 1]  # the seal line removed
    path.write_bytes(cut)
    ledger_bytes = (state / "ledger.ndjson").read_bytes()

    ledger = await Ledger.open(state)  # the next daemon's start
    try:
        with pytest.raises(AuditLedgerError, match="final record"):
            await append_daemon_lost(state, SESSION, ledger=ledger)
    finally:
        await ledger.aclose()
    assert path.read_bytes() == cut
    assert (state / "ledger.ndjson").read_bytes() == ledger_bytes
    with pytest.raises(AuditLedgerError, match="final record"):
        verify_session_file(path, ledger=state / "ledger.ndjson", allow_incomplete=True)


async def test_show_warns_of_a_cut_sealed_record(short_tmp: Path) -> None:
    """``audit show`` checks what it prints, and now with the ledger: it said nothing of a
    file whose seal was cut off."""
    from tests.daemon.test_cli import cli_env, nonoctl

    state = short_tmp / "state"
    ledger = await Ledger.open(state)
    try:
        path = await write_session(state, ledger=ledger)
    finally:
        await ledger.aclose()
    env = cli_env(short_tmp / "none.sock", short_tmp)
    shown = nonoctl(["audit", "show", SESSION, "--state-dir", str(state)], env=env,
                    cwd=short_tmp)
    assert shown.returncode == 0 and "does not verify" not in shown.stderr, shown.stderr
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.rstrip(b"\n").rfind(b"\n") + 1])
    shown = nonoctl(["audit", "show", SESSION, "--state-dir", str(state)], env=env,
                    cwd=short_tmp)
    assert shown.returncode == 0, shown.stderr
    assert "does not verify" in shown.stderr and "cut off after the seal" in shown.stderr
