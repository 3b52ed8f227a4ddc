"""No program the daemon runs gets the daemon's environment, which holds the ``env://``
secrets of its routes (``Environment=``/``EnvironmentFile=`` of its unit).

The daemon is not dumpable, so processes of its user cannot read its ``/proc/PID/environ``;
a program it execs is dumpable again (``execve`` resets the flag), so every process of that
user can read the environment it was given while it runs. Each test runs the real spawning
code with a stand-in for the program it execs that writes down the environment it got."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from nonod.credentials import SourceOptions, resolve_credential
from nonod.sandbox import _mode, _mounts

SECRET = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"


def recorder(directory: Path, tail: str = "") -> tuple[Path, Path]:
    """An executable that writes its environment to a file, then runs ``tail``."""
    seen = directory / "environ"
    program = directory / "helper"
    program.write_text(f"#!/bin/sh\ntr '\\0' '\\n' < /proc/$$/environ > {seen}\n{tail}")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program, seen


def environment(seen: Path) -> dict[str, str]:
    text = seen.read_text()
    assert SECRET not in text
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.fixture
def daemon_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)  # an env:// route secret of the daemon
    monkeypatch.setenv("NONO_CANARY_PASSWORD", SECRET)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_op_gets_what_it_needs_and_none_of_the_daemons_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon_secrets: None) -> None:
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", "ops_what-op-itself-needs")
    op, seen = recorder(tmp_path, "echo value\n")
    options = SourceOptions(op_command=str(op), op_timeout=5)
    assert resolve_credential("op://v/i/f", environ={}, options=options).reveal() == "value"
    env = environment(seen)
    assert "GITHUB_TOKEN" not in env and "NONO_CANARY_PASSWORD" not in env
    # What the CLI needs to find its sign-in stays.
    assert env["OP_SERVICE_ACCOUNT_TOKEN"] == "ops_what-op-itself-needs"
    assert env["HOME"] == str(tmp_path) and "PATH" in env


def test_the_namespace_probe_gets_none_of_the_daemons_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon_secrets: None) -> None:
    python, seen = recorder(tmp_path, "exit 0\n")
    monkeypatch.setattr(sys, "executable", str(python))
    assert _mode.probe_namespaces.__wrapped__(0) == 0
    env = environment(seen)
    assert "GITHUB_TOKEN" not in env and "NONO_CANARY_PASSWORD" not in env


def test_the_idmap_probe_gets_none_of_the_daemons_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon_secrets: None) -> None:
    python, seen = recorder(tmp_path, "exit 1\n")
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(_mounts, "_available", [])
    assert _mounts.idmap_available() is False
    env = environment(seen)
    assert "GITHUB_TOKEN" not in env and "NONO_CANARY_PASSWORD" not in env
