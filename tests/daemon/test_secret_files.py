"""Files the daemon reads secrets from are invisible in every session, whatever it grants:
a route's ``file://`` key under a granted directory (directly, through a granted parent, by
a symlink), the daemon's own configuration and state; a key with another hard link refuses
the launch instead."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import DaemonThread
from .test_cli import CLI, cli_env

READER = r"""
import os, sys
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            data = f.read()
        print(path, "READ", len(data), b"REAL-SECRET" in data)
    except OSError as e:
        print(path, "refused", e.errno)
"""


def _profile(path: Path, key: Path | None, *, read: list[str]) -> Path:
    doc: dict[str, object] = {
        "meta": {"name": "secrets"},
        "workdir": {"access": "readwrite"},
        "groups": {"include": ["python_runtime"]},
        "filesystem": {"read": read},
    }
    if key is not None:
        doc["network"] = {"custom_credentials": {"myapi": {
            "upstream": "https://api.example.com", "credential_key": f"file://{key}",
            "env_var": "MYAPI_KEY"}}, "credentials": ["myapi"]}
    path.write_text(json.dumps(doc))
    return path


def _world(daemon: DaemonThread, base: Path) -> tuple[CLI, Path]:
    """A CLI for ``daemon`` in ``base`` (with the reader script), and a 0600 key file."""
    run = CLI(cli_env(daemon.socket, base), base)
    (base / "reader.py").write_text(READER)
    (base / "creds").mkdir()
    key = base / "creds" / "token"
    key.write_text("REAL-SECRET-0123456789\n")
    os.chmod(key, 0o600)
    return run, key


def _reads(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def test_file_credentials_and_daemon_files_are_masked(daemon_thread: DaemonThread,
                                                      short_tmp: Path) -> None:
    run, key = _world(daemon_thread, short_tmp)
    creds = key.parent
    (short_tmp / "link").symlink_to(key)
    config = daemon_thread.state_dir / "records-of-the-daemon"
    config.write_text("REAL-SECRET-state")
    profile = _profile(short_tmp / "p.json", key, read=[str(creds), str(short_tmp)])
    targets = [str(key), str(short_tmp / "link"), str(config)]
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "reader.py", *targets)
    assert done.returncode == 0, done.stderr
    seen = _reads(done.stdout)
    assert seen == dict.fromkeys(targets, "refused"), done.stdout
    assert "REAL-SECRET" not in done.stdout + done.stderr

    # A later session with no credential at all still cannot read the key: the daemon keeps
    # every file it read a secret from hidden from every session.
    plain = _profile(short_tmp / "plain.json", None, read=[str(short_tmp)])
    done = run("launch", "--profile", str(plain), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "reader.py", str(key))
    assert done.returncode == 0, done.stderr
    assert _reads(done.stdout) == {str(key): "refused"}, done.stdout


def test_a_hard_linked_key_refuses_the_launch(daemon_thread: DaemonThread,
                                              short_tmp: Path) -> None:
    run, key = _world(daemon_thread, short_tmp)
    os.link(key, short_tmp / "another-name")
    profile = _profile(short_tmp / "p.json", key, read=[str(short_tmp)])
    done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "reader.py", str(short_tmp / "another-name"))
    assert done.returncode != 0
    assert "READ" not in done.stdout
    assert "hard links" in done.stderr and str(key) in done.stderr, done.stderr
    assert "REAL-SECRET" not in done.stdout + done.stderr


def test_a_file_trust_key_the_daemon_made_is_masked_in_later_sessions(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    run, _ = _world(daemon_thread, short_tmp)
    key = short_tmp / "keys" / "signing"
    made = run("trust", "keygen", "--keyref", f"file://{key}")
    assert made.returncode == 0, made.stderr
    assert key.exists()
    plain = _profile(short_tmp / "plain.json", None, read=[str(short_tmp)])
    done = run("launch", "--profile", str(plain), "--allow-cwd", "--",
               "/usr/bin/python3", "-S", "reader.py", str(key), f"{key}.pub")
    assert done.returncode == 0, done.stderr
    assert _reads(done.stdout) == {str(key): "refused", f"{key}.pub": "refused"}, done.stdout
