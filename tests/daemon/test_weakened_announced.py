"""A launch whose profile turns protections off (``environment.allow_vars``,
``nonod.writable_persistence``, ``allow_degraded``...) says so, one line each, as the dry run
does: on ``nonoctl launch``'s standard error, in ``inspect`` and in the audit's
``session_started``. Before, only a dry run listed them: a repository's profile could pass
the caller's ``AWS_*`` variables in, or let the program write a file the host runs later,
and a plain launch said nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from .conftest import DaemonThread
from .test_cli import CLI, cli_env


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


def test_what_the_profile_turned_off_is_said_at_launch(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "weak"},
        "environment": {"allow_vars": ["AWS_*"]},
        "nonod": {"writable_persistence": [str(short_tmp / ".envrc")]},
    }))
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--block-net",
               "--name", "weak", "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    assert "runs with protections turned off by its profile or command line" in done.stderr
    assert "variables of your environment passed in: AWS_*" in done.stderr, done.stderr
    assert "writable although the host runs it later" in done.stderr, done.stderr
    shown = run("inspect", "weak")
    assert shown.returncode == 0, shown.stderr
    assert "turned off" in shown.stdout and "AWS_*" in shown.stdout, shown.stdout
    detail = json.loads(run("inspect", "weak", "--json").stdout)
    assert any("AWS_*" in line for line in detail["weakened"]), detail["weakened"]
    [audit] = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    first = json.loads(audit.read_text().splitlines()[0])["event"]
    assert first["type"] == "session_started", first
    assert first["weakened"] == detail["weakened"], first


def test_a_profile_that_turns_nothing_off_says_nothing(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({"meta": {"name": "plain"}}))
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--block-net",
               "--name", "plain", "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    assert "turned off" not in done.stderr, done.stderr
    assert json.loads(run("inspect", "plain", "--json").stdout)["weakened"] == []


def test_what_else_a_profile_turns_off_is_said_at_launch(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """review23: root for the session, nono's Landlock-only sandbox (the host's network and
    process namespaces), host ports beyond 443 and 80, a CA of the profile's own for a
    route's upstream: each weakens what the session is held to, and a launch said none."""
    token = short_tmp / "token"
    token.write_text("x")
    token.chmod(0o600)
    ca = short_tmp / "ca.pem"
    ca.write_text("")
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "weaker"},
        "nonod": {"allow_root": True},
        "linux": {"sandbox_policy": "landlock"},
        "network": {"allow_domain": ["db.example"], "open_port": [5432],
                    "credentials": ["svc"], "custom_credentials": {"svc": {
                        "upstream": "https://svc.example", "credential_key": f"file://{token}",
                        "env_var": "SVC", "tls_ca": str(ca)}}},
    }))
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--dry-run",
               "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    # before: none of these four lines
    assert "root" in said and "allow_root" in said, said
    assert "sandbox_policy landlock" in said, said
    assert "ports beyond 443 and 80: 5432" in said, said
    assert f"svc.example trusted through the profile's CA {ca}" in said, said


def test_no_process_cap_and_forwarded_host_ports_are_said_at_launch(
        run: CLI, daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """known2: ``nonod.max_processes: 0`` (the enforcement line's ``processes off: no
    cap``) and ``network.listen_port`` (a host port that reaches the program, listed by the
    dry run as ``listen_ports``) each lower what the session is held to; neither was in
    ``weakened``, so a launch, ``inspect`` and the audit said nothing of them."""
    with socket.socket() as probe:  # a port free on the host's loopback now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({
        "meta": {"name": "uncapped"},
        "nonod": {"max_processes": 0},
        "network": {"block": True, "listen_port": [port]},
    }))
    dry = run("launch", "--profile", str(profile), "--allow-cwd", "--dry-run", "--", "/bin/true")
    assert dry.returncode == 0, dry.stderr
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--name", "uncapped",
               "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    detail = json.loads(run("inspect", "uncapped", "--json").stdout)
    # before: [] (and nothing in the dry run's summary nor on the launch's standard error)
    assert any("no cap (nonod.max_processes 0)" in line for line in detail["weakened"]), detail
    assert any(f"host's ports {port} forwarded to the program (listen_port)" in line
               for line in detail["weakened"]), detail
    for said in (dry.stdout, done.stderr):
        assert "nonod.max_processes 0" in said and f"ports {port} forwarded" in said, said
    [audit] = list(daemon_thread.state_dir.rglob("audit.ndjson"))
    first = json.loads(audit.read_text().splitlines()[0])["event"]
    assert first["type"] == "session_started" and first["weakened"] == detail["weakened"]
    # The daemon's ceiling gives the session a cap again: then nothing is said of it.
    assert "max_processes" not in " ".join(json.loads(run(
        "launch", "--profile", str(profile), "--allow-cwd", "--max-processes", "50",
        "--dry-run", "--json", "--", "/bin/true").stdout)["summary"]["weakened"])
