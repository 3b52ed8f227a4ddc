"""Bad inputs get typed errors, never tracebacks (issue 19, item 7): JSON nested thousands of
levels deep on the control socket, an environment variable longer than 4096 bytes, a deleted
working directory. Through a real daemon and the real ``nonoctl``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nonoctl.client import RemoteError, launch_environment, launch_request
from nonod import protocol as p

from .conftest import DaemonThread, UserDaemon, session_env
from .test_cli import CLI, cli_env


def _send_text(conn: object, text: str) -> None:
    conn._send_raw(conn._ws.text(text))  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["before the tag", "after the tag"])
def test_json_nested_deeply_gets_an_error_and_the_connection_stays_usable(
    daemon_thread: DaemonThread, where: str
) -> None:
    deep = "[" * 5000 + "]" * 5000
    text = (f'{{"env":{deep},"type":"launch"}}' if where == "before the tag"
            else f'{{"type":"hello","protocol":1,"client":{deep}}}')
    with daemon_thread.connect() as conn:
        _send_text(conn, text)
        reply = conn.receive()
        assert isinstance(reply, p.ErrorReply), reply
        assert reply.code in ("protocol.malformed", "protocol.invalid")
        assert isinstance(conn.request(p.Status()), p.DaemonStatus)  # still usable


def test_the_client_decodes_a_deeply_nested_reply_as_a_bad_message() -> None:
    import msgspec

    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        p.decode_reply('{"x":' * 5000 + "1" + "}" * 5000)


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


def test_a_long_environment_variable_reaches_the_program(run: CLI) -> None:
    """Over 4096 bytes used to fail every launch (the protocol's limit); the kernel takes up
    to 128 KiB per variable, and so does the protocol now."""
    run.env["LC_NONO_LONG"] = "x" * 100_000  # LC_*: passed by every profile
    done = run("launch", "--allow-cwd", "--", "sh", "-c", 'printf "%s" "$LC_NONO_LONG" | wc -c')
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["100000"]


def test_a_variable_too_long_for_execve_is_left_out_and_named() -> None:
    """Only a library caller can hold one (execve refuses it to nonoctl): it is dropped, and
    its name returned for a warning, instead of failing the launch."""
    huge = "y" * p.MAX_ARG_STRLEN
    env, dropped = launch_environment({"HUGE_ONE": huge, "PATH": "/usr/bin"})
    assert env == {"PATH": "/usr/bin"} and dropped == ("HUGE_ONE",)
    request = launch_request(["true"], cwd="/", env={"HUGE_ONE": huge})
    assert "HUGE_ONE" not in request.env
    with pytest.raises(ValueError, match="env HUGE_ONE is longer than the kernel takes"):
        p.Launch(argv=("true",), cwd="/", env={"HUGE_ONE": huge})


def test_a_deleted_working_directory_is_a_clear_error(run: CLI, short_tmp: Path) -> None:
    gone = short_tmp / "gone"
    gone.mkdir()
    script = (f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m nonoctl launch '
              "--allow-cwd -- true")
    done = subprocess.run(["sh", "-c", script], env=run.env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=short_tmp)
    assert done.returncode == 1, done.stderr
    assert "the current directory no longer exists" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_directory_named_trust_policy_json_is_a_typed_error(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    work = short_tmp / "work"
    (work / "trust-policy.json").mkdir(parents=True)
    with daemon_thread.connect() as conn:
        with pytest.raises(RemoteError) as info:
            conn.request(p.Launch(argv=("true",), cwd=str(work), env=session_env(work),
                                  options=p.LaunchOptions(allow_cwd=True), detach=True))
        assert info.value.remote_code.split(".")[0] in ("file", "trust"), info.value.reply
        assert "trust-policy.json" in info.value.message
        assert isinstance(conn.request(p.Status()), p.DaemonStatus)  # still usable


@pytest.mark.root
def test_an_unreadable_trust_policy_or_cwd_is_a_typed_error(user_daemon: UserDaemon) -> None:
    """The daemon runs as an unprivileged user, so "unreadable" is real."""
    locked = user_daemon.directory("locked-policy")
    (locked / "trust-policy.json").write_text("{}")
    (locked / "trust-policy.json").chmod(0)  # root's, mode 0: the user cannot read it
    unlisted = user_daemon.directory("unlisted")
    (unlisted / "trust-policy.json").write_text("{}")
    os.chown(unlisted / "trust-policy.json", user_daemon.uid, user_daemon.uid)
    unlisted.chmod(0o300)  # the user may enter it but not list it
    refused = user_daemon.nonoctl("launch", "--allow-cwd", "--", "true", cwd=locked)
    assert refused.returncode in (124, 125), refused.stderr  # refused (trust.* or file.*)
    assert "trust-policy.json" in refused.stderr and "Traceback" not in refused.stderr
    done = user_daemon.nonoctl("launch", "--allow-cwd", "--", "true", cwd=unlisted)
    assert "Traceback" not in done.stderr and "closed the connection" not in done.stderr
    assert user_daemon.nonoctl("ps").returncode == 0  # the daemon is fine
