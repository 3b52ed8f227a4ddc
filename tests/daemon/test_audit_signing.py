"""Signed seals (``--audit-sign-key``, ``[audit] sign_key``), ledger inclusion and retention,
through a real daemon and ``nonoctl audit verify``."""

from __future__ import annotations

import json
from pathlib import Path

from nonod import trust
from nonod.audit import LEDGER_FILE, verify_ledger_file

from .conftest import DaemonThread
from .test_cli import CLI, cli_env


def _ok(run: CLI, *words: str) -> str:
    done = run(*words)
    assert done.returncode == 0, (words, done.stdout, done.stderr)
    return done.stdout


def _only_session(run: CLI) -> str:
    rows = json.loads(_ok(run, "ps", "-a", "--json"))
    assert len(rows) == 1, rows
    return str(rows[0]["id"])


def test_signed_seal_verifies_with_its_key_and_not_another(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    config = short_tmp / "cfg"
    (config / "nono").mkdir(parents=True)
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), short_tmp)
    key = f"file://{config}/nono/audit.key"
    other = f"file://{config}/nono/other.key"
    _ok(run, "trust", "keygen", "--keyref", key)
    _ok(run, "trust", "keygen", "--keyref", other)
    (short_tmp / "audit.pem").write_text(_ok(run, "trust", "export-key", "--key", key, "--pem"))
    (short_tmp / "other.pub").write_text(_ok(run, "trust", "export-key", "--key", other))
    state = str(daemon_thread.state_dir)

    _ok(run, "launch", "--audit-sign-key", key, "--allow-cwd", "--", "true")
    sid = _only_session(run)
    assert (daemon_thread.state_dir / "sessions" / sid / "audit.ndjson.bundle").exists()
    verified = _ok(run, "audit", "verify", sid, "--state-dir", state, "--key", "audit.pem")
    assert verified.startswith(f"OK {sid}: ")
    assert "ledger line 1" in verified and "signature verified" in verified
    as_json = json.loads(_ok(run, "audit", "verify", sid, "--state-dir", state, "--key",
                             "audit.pem", "--json"))
    assert as_json["signature"] == "verified" and as_json["ledger_line"] == 1

    wrong = run("audit", "verify", sid, "--state-dir", state, "--key", "other.pub")
    assert wrong.returncode == 1
    assert "signed with another key than the one trusted here" in wrong.stderr

    # Without --key: unchecked, until the user's trust policy names the signing key.
    assert "signature unchecked" in _ok(run, "audit", "verify", sid, "--state-dir", state)
    _ok(run, "trust", "init", "--user", "--key", key)
    _ok(run, "trust", "sign-policy", "--user", "--key", key)
    assert "signature verified" in _ok(run, "audit", "verify", sid, "--state-dir", state)

    # The ledger is part of verification: without it the seal cannot be checked.
    ledger = daemon_thread.state_dir / LEDGER_FILE
    saved = ledger.read_bytes()
    ledger.unlink()
    missing = run("audit", "verify", sid, "--state-dir", state)
    assert missing.returncode == 1 and "no ledger at" in missing.stderr
    ledger.write_bytes(saved)


def test_a_signing_key_that_cannot_be_loaded_refuses_the_launch(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    marker = short_tmp / "ran"
    done = run("launch", "--audit-sign-key", f"file://{short_tmp}/none.key", "--allow-cwd",
               "--", "touch", str(marker))
    assert done.returncode == 125, (done.stdout, done.stderr)
    assert f"cannot load the audit signing key 'file://{short_tmp}/none.key'" in done.stderr
    assert not marker.exists()
    assert json.loads(_ok(run, "ps", "-a", "--json")) == []


def test_configured_sign_key_and_retention(short_tmp: Path) -> None:
    keyref = f"file://{short_tmp}/audit.key"
    key = trust.generate_key(keyref)
    trust.FileKeyStore().store(key)
    (short_tmp / "audit.pem").write_text(key.public_key.pem)
    daemon = DaemonThread(short_tmp, config=f'[audit]\nsign_key = "{keyref}"\n'
                          "keep_sessions = 1\n").start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp), short_tmp)
        _ok(run, "launch", "--allow-cwd", "--", "true")
        first = _only_session(run)
        _ok(run, "launch", "--allow-cwd", "--", "true")
        second = _only_session(run)  # the first was pruned when the second was sealed
        assert second != first
        assert not (daemon.state_dir / "sessions" / first).exists()
        verified = _ok(run, "audit", "verify", second, "--state-dir", str(daemon.state_dir),
                       "--key", "audit.pem")
        assert "ledger line 2" in verified and "signature verified" in verified
        view = verify_ledger_file(daemon.state_dir / LEDGER_FILE)
        assert set(view.entries) == {first, second}  # the ledger keeps pruned sessions
    finally:
        daemon.stop()
