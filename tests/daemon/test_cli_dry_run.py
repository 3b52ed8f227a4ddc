"""``nonoctl launch --dry-run`` leads with a summary (filesystem, network, credentials), and
``--json`` carries it as a top-level ``summary`` object (docs/cli.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import DaemonThread
from .test_cli import CLI, GITBOT, cli_env


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


def summary_lines(stdout: str) -> list[str]:
    """The lines before the ``command:`` line."""
    lines = stdout.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("command:"))]


def test_an_unrestricted_network_is_said_first_and_loudly(run: CLI) -> None:
    data = run.cwd / "data"
    data.mkdir()
    done = run("launch", "--allow-cwd", "-r", str(data), "--dry-run", "--", "true")
    assert done.returncode == 0, done.stderr
    head = summary_lines(done.stdout)
    assert head[0] == "dry run: nothing was started"
    network = next(line for line in head if line.startswith("network:"))
    assert network.startswith("network:     UNRESTRICTED: the program reaches any host")
    assert f"read       {data}" in [line.strip() for line in head]
    assert f"readwrite  {run.cwd}" in [line.strip() for line in head]
    assert "credentials: none" in head
    assert "UNRESTRICTED" in done.stderr  # a warning even when stdout is piped away

    as_json = run("launch", "--allow-cwd", "-r", str(data), "--dry-run", "--json", "--",
                  "true")
    summary = json.loads(as_json.stdout)["summary"]
    assert summary["network"] == "unrestricted" and summary["hosts"] == []
    assert [str(data), "read"] in summary["main_paths"]
    assert summary["grants"] == summary["group_grants"] + len(summary["main_paths"])


def test_an_allowlist_names_its_hosts_and_the_credential_routes(run: CLI) -> None:
    done = run("launch", str(GITBOT), "--allow-domain", "example.org", "--dry-run", "--",
               "true")
    assert done.returncode == 0, done.stderr
    head = summary_lines(done.stdout)
    assert "network:     allowlist of 4 hosts: only 4 allowed hosts, through nonod's proxy" in head
    assert any("example.org" in line and "api.github.com" in line for line in head)
    assert "credentials: gemini, github" in head
    assert "UNRESTRICTED" not in done.stdout + done.stderr
    summary = json.loads(run("launch", str(GITBOT), "--dry-run", "--json", "--",
                             "true").stdout)["summary"]
    assert summary["network"] == "allowlist"
    assert set(summary["hosts"]) == {"api.github.com", "generativelanguage.googleapis.com",
                                     "smee.io"}
    assert summary["credentials"] == ["gemini", "github"]


def test_a_blocked_network_says_so(run: CLI) -> None:
    done = run("launch", "--allow-cwd", "--block-net", "--dry-run", "--", "true")
    assert "network:     blocked: network.block or --block-net: no network at all" in \
        summary_lines(done.stdout)
    summary = json.loads(run("launch", "--allow-cwd", "--block-net", "--dry-run", "--json",
                             "--", "true").stdout)["summary"]
    assert (summary["network"], summary["credentials"]) == ("blocked", [])


def test_a_dry_run_of_a_profile_without_a_command_shows_its_policy(run: CLI) -> None:
    """`nonoctl launch gitbot --dry-run`: gitbot names no program; the dry run still shows
    what it would enforce (a real launch needs the command after `--`)."""
    done = run("launch", str(GITBOT), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "command: (none: give one after `--` to launch)" in done.stdout
    assert json.loads(run("launch", str(GITBOT), "--dry-run", "--json").stdout)["argv"] == []
    assert run("launch", str(GITBOT)).returncode == 2


def test_the_hosts_a_session_would_intercept_are_listed(run: CLI) -> None:
    profile = run.cwd / "intercepting.json"
    profile.write_text(json.dumps({
        "meta": {"name": "intercepting"},
        "network": {"allow_domain": ["blind.test"], "credentials": ["api"],
                    "tls_intercept": {}, "custom_credentials": {"api": {
                        "upstream": "https://api.example.test", "credential_key": "env://K",
                        "env_var": "API_TOKEN"}}},
    }))
    done = run("launch", "--profile", str(profile), "--dry-run", "--", "true")
    assert done.returncode == 0, done.stderr
    head = summary_lines(done.stdout)
    assert "intercepts:  TLS of api.example.test (the session's own CA)" in head
    summary = json.loads(run("launch", "--profile", str(profile), "--dry-run", "--json", "--",
                             "true").stdout)["summary"]
    assert summary["intercepts"] == ["api.example.test"]  # blind.test stays a blind tunnel
    # Without tls_intercept: nothing is intercepted, and the field says so.
    data = json.loads(profile.read_text())
    del data["network"]["tls_intercept"]
    profile.write_text(json.dumps(data))
    summary = json.loads(run("launch", "--profile", str(profile), "--dry-run", "--json", "--",
                             "true").stdout)["summary"]
    assert summary["intercepts"] == []
