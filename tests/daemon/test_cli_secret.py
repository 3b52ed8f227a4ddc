"""``nonoctl secret``: the daemon owns the keychain (a real Secret Service: gnome-keyring on a
private D-Bus session bus, as in ``tests/credentials``), the CLI never sees a value again.

The daemon runs as its own process (``nonod``, debug logs on stderr) with the
keyring's bus address in its environment, so that everything it logged can be searched for the
value.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod import protocol as p
from tests.credentials.conftest import SecretService
from tests.credentials.conftest import secret_service as secret_service  # the fixture

from .conftest import DaemonThread, session_env
from .test_cli import CLI, REPO, cli_env


@pytest.fixture
def keyring_daemon(secret_service: SecretService, short_tmp: Path
                   ) -> Iterator[tuple[CLI, Path]]:
    """A user nonod whose environment reaches the test's Secret Service, and a CLI for it.
    Yields the CLI and the file the daemon's stderr (its log) goes to."""
    socket = short_tmp / "run" / "nonod.sock"
    config = short_tmp / "nonod.toml"
    config.write_text('[daemon]\nlog_level = "debug"\nlog_format = "json"\n')
    log_path = short_tmp / "nonod.log"
    env = {**session_env(short_tmp), "PYTHONPATH": str(REPO),
           "XDG_STATE_HOME": str(short_tmp / "state"),
           "DBUS_SESSION_BUS_ADDRESS": secret_service.env["DBUS_SESSION_BUS_ADDRESS"]}
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "nonod", "--socket", str(socket),
             "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=short_tmp)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert daemon.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "nonod did not start"
            time.sleep(0.05)
        yield CLI(cli_env(socket, short_tmp), short_tmp), log_path
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def test_set_test_list_delete_round_trip_without_leaking_the_value(
    keyring_daemon: tuple[CLI, Path], secret_service: SecretService, short_tmp: Path
) -> None:
    run, log_path = keyring_daemon
    name = f"demo_token_{uuid.uuid4().hex[:8]}"
    value = "s3cr3t-" + uuid.uuid4().hex
    outputs: list[str] = []

    def nonoctl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        done = run(*args, stdin=stdin)
        outputs.extend((done.stdout, done.stderr))
        return done

    stored = nonoctl("secret", "set", name, stdin=value.encode())
    assert stored.returncode == 0, stored.stderr
    assert f"stored {name}" in stored.stdout

    found = nonoctl("secret", "test", name)
    assert found.returncode == 0, found.stderr
    assert f"{name}: found" in found.stdout

    listed = nonoctl("secret", "list")
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout.split()
    as_json = nonoctl("secret", "list", "--json")
    assert as_json.returncode == 0 and name in as_json.stdout

    # Where nono looks: service nono, username NAME, target default.
    lookup = secret_service.secret_tool("lookup", "service", "nono", "username", name,
                                        "target", "default")
    assert lookup.returncode == 0 and lookup.stdout == value

    # A trailing newline from `echo` is not part of the value; set replaces.
    replaced = nonoctl("secret", "set", name, stdin=(value + "2\n").encode())
    assert replaced.returncode == 0, replaced.stderr
    again = secret_service.secret_tool("lookup", "service", "nono", "username", name)
    assert again.stdout == value + "2"

    deleted = nonoctl("secret", "delete", name)
    assert deleted.returncode == 0, deleted.stderr
    gone = nonoctl("secret", "test", name)
    assert gone.returncode == 1
    assert f"{name}: not found" in gone.stdout
    twice = nonoctl("secret", "delete", name)
    assert twice.returncode == 1 and "no keychain entry" in twice.stderr

    # The value appears nowhere: not in what nonoctl printed, not in the daemon's log (debug
    # level) nor in anything it wrote to its state directory.
    for text in outputs:
        assert value not in text
    log_text = log_path.read_text(errors="replace")
    assert "secret stored" in log_text  # the log was captured at all
    assert value not in log_text
    for path in short_tmp.rglob("*"):
        if path.is_file() and path != log_path:
            with path.open("rb") as f:
                assert value.encode() not in f.read(), path


def test_set_refuses_an_empty_value_and_needs_a_name(keyring_daemon: tuple[CLI, Path]) -> None:
    run, _ = keyring_daemon
    empty = run("secret", "set", "demo_empty", stdin=b"")
    assert empty.returncode == 2 and "no value" in empty.stderr
    nameless = run("secret", "test")
    assert nameless.returncode == 2 and "needs a NAME" in nameless.stderr
    bad = run("secret", "test", "not a name")
    assert bad.returncode == 1 and bad.stderr.startswith("nonoctl:")


def test_the_value_is_redacted_from_the_message_repr() -> None:
    message = p.SecretSet(name="demo", value="hunter2-value")
    assert "hunter2-value" not in repr(message)
    assert "hunter2-value" not in str(message)
    assert p.decode_request(p.encode(message)) == message


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="a system daemon needs root")
def test_a_system_daemon_refuses_secret_commands_from_other_users(short_tmp: Path) -> None:
    from .conftest import NOBODY, as_user, hello, raw_client

    handle = DaemonThread(short_tmp, system=True,
                          config=f'[daemon]\nsocket_group = "{_nobody_group()}"\n').start()
    try:
        # rawclient: a stdlib-only client that another uid can run wherever the checkout is.
        replies = raw_client(handle.socket, [hello(), {"type": "secret_test", "name": "x"}],
                             prefix=as_user(NOBODY))
        assert "only root may manage" in replies[-1], replies
    finally:
        handle.stop()


def _nobody_group() -> str:
    import grp

    return grp.getgrgid(NOBODY_GID).gr_name


NOBODY_GID = 65534
