"""One redaction rule for every file the daemon writes: a ``--token=...`` argument or a URL
password is as absent from ``session.json`` (and from ``ps``/``inspect``) as from the audit
file."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import DaemonThread
from .test_cli import CLI, cli_env

SECRET = "s3cr3t-Value-0123456789"


def test_session_record_redacts_argv_like_the_audit(daemon_thread: DaemonThread,
                                                    short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({"meta": {"name": "redact"}, "workdir": {"access": "read"},
                                   "groups": {"include": ["python_runtime"]}}))
    done = run("launch", "--json", "-d", "--profile", str(profile), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "-c", "pass", f"--token={SECRET}",
               f"https://user:{SECRET}@example.com/x", "--password", SECRET)
    assert done.returncode == 0, done.stderr
    session_id = json.loads(done.stdout)["id"]
    assert run("wait", session_id).returncode == 0
    record = (daemon_thread.state_dir / "sessions" / session_id / "session.json").read_text()
    audit = (daemon_thread.state_dir / "sessions" / session_id / "audit.ndjson").read_text()
    shown = run("inspect", "--json", session_id).stdout + run("ps", "--all", "--json").stdout
    for text in (record, audit, shown):
        assert SECRET not in text
    assert "--token=" in record and "[REDACTED]" in record


def test_only_secrets_are_redacted_not_the_rest_of_the_added_environment(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """A session behind the proxy gets `NODE_USE_ENV_PROXY=1`, the proxy's address and the
    like besides its phantom token: its argv keeps a `1` or a `127.0.0.1` of its own."""
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({"meta": {"name": "plain"}, "workdir": {"access": "read"},
                                   "groups": {"include": ["python_runtime"]},
                                   "network": {"allow_domain": ["example.com"]}}))
    argv = ("repos/octo/hello/issues/1/comments", "127.0.0.1", "1")
    done = run("launch", "--json", "-d", "--profile", str(profile), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "-c", "pass", *argv)
    assert done.returncode == 0, done.stderr
    session_id = json.loads(done.stdout)["id"]
    assert run("wait", session_id).returncode == 0
    record = json.loads(
        (daemon_thread.state_dir / "sessions" / session_id / "session.json").read_text())
    assert tuple(record["argv"][-3:]) == argv
