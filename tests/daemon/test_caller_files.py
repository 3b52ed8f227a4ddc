"""The system daemon reads a caller's files as that caller, once, and never blocks on them.

Two real local users (useradd) talk to a real system daemon: a victim with a 0600 profile in
its 0700 home, and an attacker in the daemon's socket group. The attacker races a flipping
symlink against the daemon's read of a profile path, names a file it cannot reach itself,
and plants FIFOs where the daemon reads trust policies; the victim's launches keep working.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    SYSTEM_PYTHON,
    DaemonThread,
    hello,
    raw_client,
    reachable_script,
    session_env,
)
from .localusers import LocalUser, local_users, socket_group

pytestmark = pytest.mark.root

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")

MARKER = "VICTIM-PROFILE-CONTENT-7f3a"
VICTIM_PROFILE = json.dumps({"meta": {"name": "victim", "description": MARKER}})
ATTACKER_PROFILE = json.dumps({"meta": {"name": "mine", "description": "the attacker's own"}})
#: Flips ``link`` between the attacker's profile and the victim's until ``stop`` exists.
FLIPPER = """
import os, sys, time
link, mine, theirs, stop = sys.argv[1:5]
deadline = time.monotonic() + 120
i = 0
while not os.path.exists(stop) and time.monotonic() < deadline:
    tmp = f"{link}.{i % 2}"
    os.symlink(mine if i % 2 else theirs, tmp)
    os.rename(tmp, link)
    i += 1
"""


@pytest.fixture
def users(short_tmp: Path) -> Iterator[tuple[LocalUser, LocalUser]]:
    with local_users(short_tmp, 2) as (victim, attacker):
        yield victim, attacker


@pytest.fixture
def system_daemon(short_tmp: Path) -> Iterator[DaemonThread]:
    handle = DaemonThread(short_tmp, config=f'[daemon]\nsocket_group = "{socket_group()}"\n',
                          system=True).start()
    yield handle
    handle.stop()


def _replies(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def _own(path: Path, user: LocalUser, mode: int) -> Path:
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def _victim_profile(victim: LocalUser) -> Path:
    secret = victim.home / "private.json"
    secret.write_text(VICTIM_PROFILE)
    return _own(secret, victim, 0o600)


@needs_root
def test_a_flipping_symlink_never_yields_another_users_profile(
    system_daemon: DaemonThread, users: tuple[LocalUser, LocalUser], short_tmp: Path
) -> None:
    victim, attacker = users
    theirs = _victim_profile(victim)
    play = short_tmp / "play"
    play.mkdir()
    _own(play, attacker, 0o755)
    mine = play / "mine.json"
    mine.write_text(ATTACKER_PROFILE)
    _own(mine, attacker, 0o644)
    link, stop = play / "link.json", play / "stop"
    os.symlink(mine, link)
    os.lchown(link, attacker.uid, attacker.gid)
    flipper = subprocess.Popen(
        [*attacker.prefix(), SYSTEM_PYTHON, "-c", FLIPPER, str(link), str(mine), str(theirs),
         str(stop)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        tries = 400
        lines = raw_client(system_daemon.socket,
                           [hello(), *[{"type": "profile_show", "profile": str(link)}] * tries],
                           prefix=attacker.prefix(), timeout=120)
    finally:
        stop.touch()
        flipper.wait(timeout=30)
    replies = _replies(lines)[1:]
    assert len(replies) == tries, lines[-3:]
    assert not any(MARKER in line for line in lines)  # not once, in content or in an error
    shown = [r for r in replies if r["type"] == "profile"]
    refused = [r for r in replies if r["type"] == "error"]
    assert shown and refused  # the race ran both ways: own file shown, the victim's refused
    assert {r["code"] for r in refused} <= {"profile.invalid", "profile.not_found"}
    assert all("permission denied" in str(r["message"]) for r in refused
               if r["code"] == "profile.invalid")


@needs_root
def test_a_path_the_caller_cannot_read_is_refused_as_the_caller_would_be(
    system_daemon: DaemonThread, users: tuple[LocalUser, LocalUser]
) -> None:
    victim, attacker = users
    # The attacker's own file, but in the victim's 0700 home: the attacker cannot reach it,
    # so neither may the daemon on its behalf (ownership by name would say "yours").
    planted = victim.home / "attackers.json"
    planted.write_text(VICTIM_PROFILE)
    _own(planted, attacker, 0o644)
    fifo = attacker.home / "fifo.json"
    os.mkfifo(fifo)
    _own(fifo, attacker, 0o644)
    started = time.monotonic()
    replies = _replies(raw_client(system_daemon.socket, [
        hello(),
        {"type": "profile_show", "profile": str(planted)},
        {"type": "profile_validate", "profile": str(_victim_profile(victim))},
        {"type": "profile_show", "profile": str(fifo)},
    ], prefix=attacker.prefix(), timeout=60))
    assert time.monotonic() - started < 30
    unreachable, private, blocked = replies[1:]
    for reply in (unreachable, private):
        assert reply["type"] == "error" and reply["code"] == "profile.invalid", reply
        assert "permission denied" in str(reply["message"])
        assert MARKER not in json.dumps(reply)
    assert blocked["type"] == "error" and "a FIFO" in str(blocked["message"]), blocked
    # The victim itself reads its own file through the same door.
    own = _replies(raw_client(system_daemon.socket, [
        hello(), {"type": "profile_show", "profile": str(victim.home / "private.json")}],
        prefix=victim.prefix()))
    assert own[1]["type"] == "profile" and MARKER in json.dumps(own[1])


def _launch(work: Path, name: str) -> dict[str, object]:
    return {"type": "launch", "argv": ["true"], "cwd": str(work), "env": session_env(work),
            "options": {"allow_cwd": True}, "detach": True, "stdio": "null", "name": name}


@needs_root
def test_fifos_named_trust_policy_json_refuse_launches_and_stall_no_one_else(
    system_daemon: DaemonThread, users: tuple[LocalUser, LocalUser], short_tmp: Path
) -> None:
    victim, attacker = users
    fifos: list[Path] = []
    clients: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for i in range(40):
            work = attacker.home / f"w{i}"
            work.mkdir()
            _own(work, attacker, 0o755)
            fifo = work / "trust-policy.json"
            os.mkfifo(fifo)
            _own(fifo, attacker, 0o644)
            fifos.append(fifo)
            stdin = "".join(json.dumps(m) + "\n" for m in (hello(), _launch(work, f"f{i}")))
            client = subprocess.Popen(
                [*attacker.prefix(), SYSTEM_PYTHON, str(reachable_script("rawclient.py")),
                 str(system_daemon.socket)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
            assert client.stdin is not None
            client.stdin.write(stdin.encode())
            client.stdin.close()
            clients.append(client)
        mine = victim.home / "work"
        mine.mkdir()
        _own(mine, victim, 0o755)
        theirs = _replies(raw_client(system_daemon.socket, [hello(), _launch(mine, "victim")],
                                     prefix=victim.prefix(), timeout=60))
        assert theirs[1]["type"] == "launched", theirs
        for client in clients:
            assert client.wait(timeout=60) == 0
            assert client.stdout is not None
            reply = _replies(client.stdout.read().decode().splitlines())[1]
            assert reply["type"] == "error" and reply["code"] == "trust.policy", reply
            assert "trust-policy.json" in str(reply["message"])
            assert "a FIFO" in str(reply["message"])
        assert time.monotonic() - started < 60
    finally:
        for fifo in fifos:  # on a daemon that blocked on them: let its threads go
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()



@needs_root
def test_file_credentials_are_read_as_the_caller(
    system_daemon: DaemonThread, users: tuple[LocalUser, LocalUser], short_tmp: Path
) -> None:
    """A launch names ``file://`` credentials: root's 0600 file is refused (the daemon used to
    read it, since it belonged to the daemon's own uid); the caller's own 0600 file is used."""
    _, attacker = users
    roots = short_tmp / "root-secret"
    roots.write_text("ROOT-ONLY-SECRET-91c2")
    roots.chmod(0o600)
    own = attacker.home / "token"
    own.write_text("callers-own-token")
    _own(own, attacker, 0o600)
    work = attacker.home / "work"
    work.mkdir()
    _own(work, attacker, 0o755)

    def launch(source: Path, name: str) -> dict[str, object]:
        request = _launch(work, name)
        request["argv"] = ["/bin/sh", "-c", f'printf %s "$STOLEN" > {work}/{name}.out']
        request["options"] = {"allow_cwd": True, "env_credential_map": [f"file://{source}=STOLEN"]}
        return request

    replies = _replies(raw_client(system_daemon.socket,
                                  [hello(), launch(roots, "theirs"), launch(own, "mine"),
                                   {"type": "wait", "session": "mine"}],
                                  prefix=attacker.prefix()))
    refused = replies[1]
    assert refused["type"] == "error" and str(refused["code"]).startswith("credential."), refused
    assert "ROOT-ONLY" not in json.dumps(replies)
    assert not (work / "theirs.out").exists()
    assert replies[2]["type"] == "launched", replies[2]
    assert replies[3]["type"] == "exited", replies[3]
    assert (work / "mine.out").read_text() == "callers-own-token"


@needs_root
def test_a_working_directory_the_caller_cannot_reach_tells_it_nothing(
    system_daemon: DaemonThread, users: tuple[LocalUser, LocalUser]
) -> None:
    """Whether a directory exists in another user's 0700 home: the same refusal either way,
    the one the caller would get from ``cd``."""
    victim, attacker = users
    (victim.home / "projects").mkdir()
    replies = _replies(raw_client(system_daemon.socket, [
        hello(), _launch(victim.home / "projects", "a"), _launch(victim.home / "nothing", "b"),
    ], prefix=attacker.prefix()))
    there, absent = replies[1:]
    for reply in (there, absent):
        assert reply["type"] == "error" and reply["code"] == "policy.invalid", reply
        assert "permission denied" in str(reply["message"])
    assert str(there["message"]).replace("projects", "X") == \
        str(absent["message"]).replace("nothing", "X")


def test_the_user_daemon_refuses_fifos_and_directories_promptly(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    """A FIFO passed as a profile, and a FIFO or a directory named trust-policy.json in the
    working directory (a session can plant either in its own writable workdir): each launch
    is refused at once with the file's type named; none hangs a thread."""
    from .test_cli import CLI, cli_env

    fifo = short_tmp / "profile.json"
    os.mkfifo(fifo)
    env = cli_env(daemon_thread.socket, short_tmp)
    started = time.monotonic()
    done = CLI(env, short_tmp)("launch", str(fifo), "--", "/bin/true")
    assert done.returncode != 0 and "is a FIFO, not a regular file" in done.stderr, done.stderr
    for plant, kind in ((os.mkfifo, "a FIFO"), (os.mkdir, "a directory")):
        work = short_tmp / kind.replace(" ", "-")
        work.mkdir()
        plant(work / "trust-policy.json")
        done = CLI(env, work)("launch", "--allow-cwd", "--", "/bin/true")
        assert done.returncode == 124, done.stderr  # trust.*
        assert "trust-policy.json" in done.stderr and kind in done.stderr, done.stderr
    assert time.monotonic() - started < 30
    assert CLI(env, short_tmp)("ps").returncode == 0  # the daemon still answers
