"""A launch whose profile puts real secrets into the program's environment
(``env_credentials``, the weaker mode) says so: by variable name, never by value, on
``nonoctl launch``'s standard error, in ``inspect`` and in the audit's ``session_started``.
Before, only a dry run or ``profile show --resolved`` listed them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import DaemonThread
from .test_cli import CLI, cli_env

VALUE = "s3cr3t-value-7f1c2a"


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


def test_the_variables_holding_real_secrets_are_named_never_shown(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    source = short_tmp / "db-password"
    source.write_text(VALUE)
    source.chmod(0o600)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "secretenv"},
        "env_credentials": {f"file://{source}": "DB_PASSWORD"},
    }))
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--block-net",
               "--name", "se", "--", "/bin/sh", "-c", f'test "$DB_PASSWORD" = "{VALUE}"')
    assert done.returncode == 0, done.stderr  # the program has the real value
    assert "holds real secrets in its environment (env_credentials): DB_PASSWORD" in \
        done.stderr, done.stderr
    shown = run("inspect", "se")
    assert shown.returncode == 0, shown.stderr
    assert "secrets in env" in shown.stdout and "DB_PASSWORD" in shown.stdout, shown.stdout
    detail = json.loads(run("inspect", "se", "--json").stdout)
    assert detail["secret_env"] == ["DB_PASSWORD"]
    [audit] = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    first = json.loads(audit.read_text().splitlines()[0])["event"]
    assert first["type"] == "session_started" and first["secret_env"] == ["DB_PASSWORD"]
    for text in (done.stdout, done.stderr, shown.stdout, audit.read_text()):
        assert VALUE not in text
