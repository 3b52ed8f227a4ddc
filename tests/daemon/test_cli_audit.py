"""``nonoctl audit verify|show|list``: client-side, on the files in a state directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nonod.audit._writer import Ledger

from ..audit._support import SESSION, write_session
from .test_cli import cli_env, nonoctl


async def _sealed(state: Path) -> Path:
    ledger = await Ledger.open(state)
    try:
        return await write_session(state, ledger=ledger)
    finally:
        await ledger.aclose()


def _audit(short_tmp: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(short_tmp / "none.sock", short_tmp)
    return nonoctl(["audit", *args, "--state-dir", str(state)], env=env, cwd=short_tmp)


async def test_verify_ok_tampered_and_incomplete(short_tmp: Path) -> None:
    state = short_tmp / "state"
    path = await _sealed(state)
    done = _audit(short_tmp, state, "verify", SESSION[:4])  # a unique prefix
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OK {SESSION}: 9 events, merkle root ")
    assert "ledger line 1" in done.stdout
    assert len(done.stdout.splitlines()) == 1

    original = path.read_bytes()
    lines = original.split(b"\n")
    at = lines[1].index(b'"ts":"') + 6
    lines[1] = lines[1][:at] + (b"3" if lines[1][at:at + 1] != b"3" else b"4") + lines[1][at + 1:]
    path.write_bytes(b"\n".join(lines))
    done = _audit(short_tmp, state, "verify", SESSION)
    assert done.returncode == 1, done.stdout
    assert "line 2:" in done.stderr

    cut = original[: original.rstrip(b"\n").rfind(b"\n") + 1]  # the seal line removed
    path.write_bytes(cut)
    # The ledger lists the session as sealed: its seal was cut off (tests/redteam/
    # test_ledger_truncation.py), with --allow-incomplete too.
    for extra in ((), ("--allow-incomplete",)):
        done = _audit(short_tmp, state, "verify", SESSION, *extra)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "lines were cut off after the seal" in done.stderr
    # Without the ledger nothing tells it from a live session's file.
    done = _audit(short_tmp, state, "verify", SESSION, "--no-ledger")
    assert done.returncode == 2, done.stderr
    assert "incomplete" in done.stderr
    allowed = _audit(short_tmp, state, "verify", SESSION, "--no-ledger", "--allow-incomplete")
    assert allowed.returncode == 0 and allowed.stdout.startswith("INCOMPLETE"), allowed.stderr


async def test_show_and_list(short_tmp: Path) -> None:
    state = short_tmp / "state"
    path = await _sealed(state)
    done = _audit(short_tmp, state, "show", SESSION, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == path.read_text()
    assert json.loads(done.stdout.splitlines()[-1])["event"]["type"] == "seal"

    human = _audit(short_tmp, state, "show", SESSION)
    assert human.returncode == 0, human.stderr
    assert len(human.stdout.splitlines()) == 10
    assert "session_started" in human.stdout.splitlines()[0]
    assert "warning" not in human.stderr

    listed = _audit(short_tmp, state, "list")
    assert listed.returncode == 0, listed.stderr
    assert SESSION in listed.stdout and "ledger: 1 sealed sessions" in listed.stdout
    rows = json.loads(_audit(short_tmp, state, "list", "--json").stdout)
    assert [(r["session"], r["sealed"], r["count"]) for r in rows] == [(SESSION, True, 9)]

    missing = _audit(short_tmp, state, "verify", "zz")
    assert missing.returncode == 1 and "no audit file" in missing.stderr


def test_audit_does_not_import_trio(short_tmp: Path) -> None:
    code = ("import sys; from nonoctl._cli import main; rc = main(sys.argv[1:]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('trio', 'structlog')]; "
            "assert not bad, bad; raise SystemExit(rc)")
    done = subprocess.run(
        [sys.executable, "-c", code, "audit", "list", "--state-dir", str(short_tmp / "s")],
        env=cli_env(short_tmp / "none.sock", short_tmp), cwd=short_tmp, capture_output=True,
        text=True, check=False, timeout=60,
    )
    assert done.returncode == 0, done.stderr


async def test_prune_removes_sealed_sessions_and_keeps_the_ledger(short_tmp: Path) -> None:
    state = short_tmp / "state"
    path = await _sealed(state)
    dry = _audit(short_tmp, state, "prune", "--keep", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {SESSION}" in dry.stdout and path.exists()
    assert _audit(short_tmp, state, "prune").returncode == 2  # needs a limit
    assert _audit(short_tmp, state, "prune", "--older-than", "soon").returncode == 1
    kept = _audit(short_tmp, state, "prune", "--older-than", "36500d")  # sealed in 2025
    assert kept.returncode == 0 and "removed 0 sealed sessions" in kept.stdout
    done = _audit(short_tmp, state, "prune", "--keep", "0", "--json")
    assert [r["session"] for r in json.loads(done.stdout)] == [SESSION]
    assert not path.exists()
    listed = _audit(short_tmp, state, "list")
    assert "ledger: 1 sealed sessions" in listed.stdout  # its line outlives the file
