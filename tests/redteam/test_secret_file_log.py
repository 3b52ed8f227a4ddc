"""Red team, the daemon's list of secret files, written by any user for every user: each
``file://`` credential source (and TLS client key) a launch names is remembered in the
daemon's state and masked in every later session, so that a key used once stays hidden. On
the system daemon that list was one for all users, and a launch added its paths before (and
whether or not) they were read: a member of the socket group named another user's project
file, or ``/usr/lib/.../libc.so.6``, as a credential; the launch was refused, but the path was
masked (``EACCES``) in every later session of every user, for good (the list is kept across
restarts). Now a launch's paths are remembered for its owner's later sessions only; the
daemon's own (trust keys) still for everyone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


def _run(handle: DaemonThread, user: LocalUser, argv: list[str],
         options: dict[str, object]) -> list[dict[str, object]]:
    work = workdir(user)
    launch = {"type": "launch", "argv": argv, "cwd": str(work), "env": session_env(work),
              "options": {"allow_cwd": True, "block_net": True, **options}, "detach": True,
              "stdio": "null", "name": "run"}
    lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": "run"}],
                       prefix=user.prefix())
    return [json.loads(line) for line in lines[1:] if line.startswith("{")]


def test_one_users_credential_paths_are_not_masked_in_another_users_sessions(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (victim, attacker) = two_users
    data = workdir(victim) / "data.txt"
    data.write_text("the victim's own project file\n")
    os.chown(data, victim.uid, victim.gid)
    data.chmod(0o644)

    refused = _run(handle, attacker, ["/bin/true"],
                   {"env_credential_map": [f"file://{data}=STOLEN"]})
    assert refused[0]["type"] == "error", refused  # not the attacker's file: refused

    replies = _run(handle, victim, ["/bin/cat", str(data)], {})
    assert replies[0]["type"] == "launched", replies
    exited = replies[-1]
    assert exited["type"] == "exited", replies
    assert exited["exit_code"] == 0, exited  # before: 1, cat got EACCES on its own file
    # The state the daemon keeps says whose the path is.
    kept = json.loads((handle.state_dir / "secret-files.json").read_text())
    assert [entry["uid"] for entry in kept["paths"] if entry["path"] == str(data)] \
        == [attacker.uid]


def test_the_daemons_own_and_earlier_paths_stay_masked_for_everyone(tmp_path: Path) -> None:
    from nonod._secretfiles import LOG_FILE, SecretFileLog, SecretPath

    (tmp_path / LOG_FILE).write_text(json.dumps({"/old/key": "credential of route a"}))
    kept = SecretFileLog(tmp_path)  # a log of the first format: its paths are everyone's
    kept.remember([SecretPath("/trust/key", "a trust signing key")])  # the daemon's own
    kept.remember([SecretPath("/home/a/token", "credential of route b")], 1000)
    again = SecretFileLog(tmp_path)  # as a restarted daemon reads it
    assert {s.path for s in again.paths(1000)} == {"/old/key", "/trust/key", "/home/a/token"}
    assert {s.path for s in again.paths(1001)} == {"/old/key", "/trust/key"}


def test_a_launch_tells_nothing_of_another_users_files_links(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    """The secret masks are made from the launch's paths with ``stat``: as root, a file with
    a second hard link in a directory the caller may not enter was ``policy.secret_file``
    ("has 2 hard links"), a missing one the credential's own refusal."""
    handle, (victim, attacker) = two_users
    private = victim.home / "vault"  # victim.home is 0700
    private.mkdir()
    (private / "secret").write_text("victim's key\n")
    os.link(private / "secret", private / "secret.bak")

    def refusal(path: Path) -> str:
        replies = _run(handle, attacker, ["/bin/true"],
                       {"env_credential_map": [f"file://{path}=STOLEN"]})
        assert replies[0]["type"] == "error", replies
        return json.dumps(replies[0]).replace(path.name, "NAME")

    for _ in range(5):  # the masks and the credential are prepared at once: try the race
        assert refusal(private / "secret") == refusal(private / "nothing")
