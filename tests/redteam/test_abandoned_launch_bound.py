"""Red team, launches given up on, held by the daemon: a launch whose launcher does not
report within ``LAUNCH_TIMEOUT`` is refused, and its launch pipe, exit pipe and control
socket go to a task that waits up to ``ABANDONED_PATIENCE`` (600 s) for the late report.
A user whose launches stall past the timeout made them without a bound: every 30 s on each
of its connections, three descriptors each. Here the stall is a FUSE file system of the
user's that answers the daemon (its plan, its look for the program) and never the launcher
(its ``execve`` of the program there). Now each uid has at most ``ABANDONED_PER_UID`` such
launches and all uids ``ABANDONED_IN_ALL``; past them a launch is refused at once with
``daemon.busy``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from nonod.sandbox import _api
from tests.daemon.conftest import DaemonThread
from tests.daemon.localusers import LocalUser
from tests.fusepicky import picky_fuse
from tests.redteam.conftest import launch_as, send_launches, shared_daemon, workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                                 reason="switching uids and mounting FUSE need root")]

#: The bounds for this test (the daemon runs in this process).
PER_UID, IN_ALL = 2, 3
#: The launch's timeout for this test: long enough for the victim's launches on a loaded
#: host, short enough for four given up on.
TIMEOUT = 5.0


@pytest.fixture
def daemon(short_tmp: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon with the bounds lowered, and three real users."""
    monkeypatch.setattr(_api, "ABANDONED_PER_UID", PER_UID, raising=False)
    monkeypatch.setattr(_api, "ABANDONED_IN_ALL", IN_ALL, raising=False)
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", TIMEOUT)
    with shared_daemon(short_tmp, 3) as setting:
        yield setting


def _answers(launcher: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, _ = launcher.communicate(timeout=300)
    return [json.loads(line) for line in out.splitlines()]


def _given_up(answer: dict[str, object]) -> bool:
    return answer.get("code") == "launch.failed" and "did not report" in str(answer["message"])


def test_launches_given_up_on_are_bounded_per_user_and_in_all(
        daemon: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (first, second, victim) = daemon
    works = {user.name: workdir(user) for user in (first, second, victim)}
    with ExitStack() as mounts:
        programs = {}
        for user in (first, second):
            where = works[user.name] / "fs"
            where.mkdir()
            programs[user.name] = (str(mounts.enter_context(picky_fuse(where, user.uid,
                                                                       user.gid))),)
        answers = _answers(send_launches(handle, first, works[first.name], PER_UID,
                                         programs[first.name]))
        assert all(_given_up(answer) for answer in answers), answers
        # The first user's bound: its next launch is refused at once (on main: given up on
        # after the timeout, one more launch's descriptors held).
        answer, took = launch_as(handle, first, works[first.name], programs[first.name])
        assert answer["code"] == "daemon.busy", answer
        assert "this user's launches given up on" in str(answer["message"]), answer
        assert took < TIMEOUT, took
        # Another user's launch goes on below the bound of all users.
        answer, _ = launch_as(handle, victim, works[victim.name])
        assert answer["type"] == "launched", answer
        answers = _answers(send_launches(handle, second, works[second.name], 1,
                                         programs[second.name]))
        assert all(_given_up(answer) for answer in answers), answers
        # The bound of all users: everyone's launch is refused at once, and said why.
        answer, took = launch_as(handle, victim, works[victim.name])
        assert answer["code"] == "daemon.busy", answer
        assert "all users' launches given up on" in str(answer["message"]), answer
        assert took < TIMEOUT, took
    # The file systems gone, the stalled launchers fail, the launches given up on end (state
    # no event announces: asked again until then), and launches go on.
    deadline = time.monotonic() + 60
    while (answer := launch_as(handle, victim, works[victim.name])[0])["type"] != "launched":
        assert answer["code"] == "daemon.busy", answer
        assert time.monotonic() < deadline, answer


def test_one_users_launches_at_once_stay_within_its_bound(
        daemon: tuple[DaemonThread, list[LocalUser]]) -> None:
    """The bound per uid was looked at when a launch began and counted when it was given
    up on: one user's launches sent at once (up to its 4 launch turns, ``LaunchShares``)
    all passed the look and were all given up on together, past the user's bound (4 + 3 at
    the defaults) and here past the bound of all users (every other user's launch refused).
    Now a launch holds one of its uid's ``ABANDONED_PER_UID`` places from its plan's send
    until its launcher reports or, given up on, is no longer waited for; the others wait
    for a place within the launch's timeout, then are refused (``daemon.busy``)."""
    handle, (first, _, victim) = daemon
    works = {user.name: workdir(user) for user in (first, victim)}
    with ExitStack() as mounts:
        where = works[first.name] / "fs"
        where.mkdir()
        program = (str(mounts.enter_context(picky_fuse(where, first.uid, first.gid))),)
        answers = _answers(send_launches(handle, first, works[first.name], IN_ALL + 1,
                                         program))
        # On main: all IN_ALL + 1 given up on (and every user's launch refused after).
        assert sum(_given_up(answer) for answer in answers) == PER_UID, answers
        assert all(_given_up(answer) or answer["code"] == "daemon.busy"
                   for answer in answers), answers
        answer, _ = launch_as(handle, victim, works[victim.name])
        assert answer["type"] == "launched", answer
