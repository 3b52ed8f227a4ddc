"""Red team, tenth pass: a profile another local user could write.

A profile is the whole policy of a session, and it is not signed: whoever can write the file,
or replace it in its directory, chooses what the session may read, write and reach. The user
daemon loaded any profile path its user named, and any profile of the user's profile
directory, whoever owned it: a profile another user dropped in a shared directory (`/tmp`,
a team's directory), the user's own profile left world-writable, and a profile directory
others may write. (The system daemon accepted a user's own profile even when every user
could write it.) Such a profile is now refused (``profile.writable_by_others``), naming the
file or directory and who may write it; root's and the user's own files, in directories only
they may change, load as before. Attacked by a real second user (``useradd``)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser, local_users
from tests.daemon.test_cli import CLI
from tests.redteam.conftest import workdir


@pytest.fixture
def attacker(short_tmp: Path) -> Iterator[LocalUser]:
    with local_users(short_tmp, 1) as made:
        yield made[0]


def _hostile(secret: Path) -> str:
    return json.dumps({"meta": {"name": "bot"}, "extends": "default",
                       "network": {"block": True}, "filesystem": {"read": [str(secret)]}})


def _as(user: LocalUser, script: str, *args: str) -> None:
    subprocess.run([*user.prefix(), "/bin/sh", "-c", script, "sh", *args], check=True,
                   capture_output=True)


def _secret(short_tmp: Path) -> Path:
    secret = short_tmp / "secret"
    secret.mkdir(mode=0o700)
    (secret / "key").write_text("root's key\n")
    return secret


def test_a_profile_another_user_could_write_is_refused(
        run: CLI, short_tmp: Path, attacker: LocalUser) -> None:
    secret = _secret(short_tmp)
    drop = short_tmp / "drop"  # shared like /tmp: anyone may create, only owners replace
    drop.mkdir()
    drop.chmod(0o1777)
    _as(attacker, 'printf %s "$1" > "$2"', _hostile(secret), str(drop / "bot.json"))
    mine = short_tmp / "mine.json"  # the user's own, left writable by every user
    mine.write_text(json.dumps({"meta": {"name": "bot"}, "extends": "default"}))
    mine.chmod(0o666)
    _as(attacker, 'printf %s "$1" > "$2"', _hostile(secret), str(mine))
    profiles = Path(run.env["HOME"]) / ".config" / "nono" / "profiles"
    profiles.mkdir(parents=True)
    profiles.chmod(0o777)  # the user's profile directory, writable by every user
    _as(attacker, 'printf %s "$1" > "$2"', _hostile(secret), str(profiles / "bot.json"))
    for name in (str(drop / "bot.json"), str(mine), "bot"):
        done = run("launch", "--profile", name, "--", "/bin/cat", str(secret / "key"))
        assert "root's key" not in done.stdout, name  # before: the attacker's grant, read
        assert done.returncode != 0
        assert "another user could have" in done.stderr, done.stderr


def test_the_users_own_profiles_still_load(run: CLI, short_tmp: Path) -> None:
    profile = {"meta": {"name": "bot"}, "extends": "default", "network": {"block": True},
               "workdir": {"access": "read"}}
    shared = short_tmp / "shared"  # sticky and world-writable, the user's own file in it
    shared.mkdir()
    shared.chmod(0o1777)
    profiles = Path(run.env["HOME"]) / ".config" / "nono" / "profiles"
    profiles.mkdir(parents=True)
    for path in (short_tmp / "bot.json", shared / "bot.json", profiles / "bot.json"):
        path.write_text(json.dumps(profile))
        os.chmod(path, 0o644)
    for name in (str(short_tmp / "bot.json"), str(shared / "bot.json"), "bot"):
        done = run("launch", "--profile", name, "--", "/bin/echo", "ran")
        assert (done.returncode, done.stdout) == (0, "ran\n"), (name, done.stderr)


def test_the_system_daemon_refuses_a_users_profile_others_could_write(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (owner, intruder) = two_users
    work = workdir(owner)
    profile = work / "bot.json"
    profile.write_text(json.dumps({"meta": {"name": "bot"}, "extends": "default",
                                   "workdir": {"access": "read"}}))
    os.chown(profile, owner.uid, owner.gid)
    profile.chmod(0o666)  # the owner's own file, which every user may write
    _as(intruder, 'printf %s "$1" > "$2"', _hostile(owner.home), str(profile))
    launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(work), "profile": str(profile),
              "env": session_env(work), "detach": True, "stdio": "null"}
    reply = json.loads(raw_client(handle.socket, [hello(), launch], prefix=owner.prefix())[1])
    assert (reply["type"], reply.get("code")) == ("error", "profile.writable_by_others"), reply
