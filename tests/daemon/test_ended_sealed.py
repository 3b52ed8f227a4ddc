"""A session is reported ended only once its audit record is final (sealed), and the audit
verbs find a session by name as the other verbs do."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nonod import protocol as p
from nonod.audit import verify_session_file

from .conftest import DaemonThread
from .test_cli import CLI, cli_env

PROFILE = {"meta": {"name": "sealed"}, "workdir": {"access": "read"},
           "groups": {"include": ["python_runtime"]}}


def _audit_file(state_dir: Path, session_id: str) -> Path:
    return state_dir / "sessions" / session_id / "audit.ndjson"


def _kinds(path: Path) -> list[str]:
    return [json.loads(line)["event"]["type"] for line in path.read_text().splitlines()]


def test_ps_says_exited_only_after_the_seal(daemon_thread: DaemonThread,
                                            short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps(PROFILE))
    # Refused writes (EROFS: the workdir is read-only), so that a root daemon has filesystem
    # denials to flush before the seal.
    started = run("launch", "-d", "--json", "--profile", str(profile), "--allow-cwd", "--",
                  "/usr/bin/python3", "-S", "-c",
                  "for i in range(300):\n try: open(f'x{i}', 'w')\n except OSError: pass")
    assert started.returncode == 0, started.stderr
    session_id = json.loads(started.stdout)["id"]
    path = _audit_file(daemon_thread.state_dir, session_id)
    deadline = time.monotonic() + 30
    with daemon_thread.connect() as conn:
        while time.monotonic() < deadline:
            reply = conn.request(p.Inspect(session=session_id))
            assert isinstance(reply, p.SessionReply)
            if reply.session.state == "exited":
                # Seen as ended: the record must already be final, at this very moment.
                assert _kinds(path)[-2:] == ["session_ended", "seal"]
                break
        else:
            raise AssertionError("the session never ended")
    assert verify_session_file(path) is not None


def test_audit_verify_right_after_wait_and_by_name(daemon_thread: DaemonThread,
                                                   short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps(PROFILE))
    started = run("launch", "-d", "--json", "--name", "sealbot", "--profile", str(profile),
                  "--allow-cwd", "--", "/usr/bin/python3", "-S", "-c", "raise SystemExit(4)")
    assert started.returncode == 0, started.stderr
    waited = run("wait", "sealbot")
    assert waited.returncode == 4, waited.stderr
    state = str(daemon_thread.state_dir)
    verified = run("audit", "verify", "sealbot", "--state-dir", state)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    shown = run("audit", "show", "sealbot", "--state-dir", state)
    assert shown.returncode == 0, shown.stderr
    assert "session_ended" in shown.stdout or "ended" in shown.stdout
