"""Red team, the system daemon's session places: ``[sessions] max_live`` (1024) counted all
users together and nothing counted one user. A member of the socket group launched that many
idle sessions and from then on every other user's launch was refused (``session.limit``)
until that user chose to stop them. Now one uid has at most ``max_live_per_uid`` of them
(by default a quarter of ``max_live``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod._config import Config, parse_config
from tests.daemon.conftest import DaemonThread, as_user, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.test_other_users import INTRUDER, OWNER, _group

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


@pytest.fixture
def small_daemon() -> Iterator[tuple[DaemonThread, Path, int]]:
    base = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    base.chmod(0o755)
    name, gid = _group()
    handle = DaemonThread(base, system=True, config=(
        f'[daemon]\nsocket_group = "{name}"\n[sessions]\nmax_live = 8\n'
    )).start()
    work = base / "work"
    work.mkdir(mode=0o777)
    try:
        yield handle, work, gid
    finally:
        handle.stop()
        shutil.rmtree(base, ignore_errors=True)


def _launch(handle: DaemonThread, work: Path, uid: int, gid: int) -> dict[str, object]:
    launch = {"type": "launch", "argv": ["sleep", "600"], "cwd": str(work),
              "env": session_env(work), "options": {"allow_cwd": True, "block_net": True},
              "detach": True, "stdio": "null"}
    lines = raw_client(handle.socket, [hello(), launch], prefix=as_user(uid, gid))
    reply: dict[str, object] = json.loads(lines[1])
    return reply


def _stop_all(handle: DaemonThread, uid: int, gid: int, ids: list[str]) -> None:
    raw_client(handle.socket, [hello(), *({"type": "stop", "session": i, "force": True}
                                          for i in ids)], prefix=as_user(uid, gid))


def test_one_user_cannot_take_every_session_place(
        small_daemon: tuple[DaemonThread, Path, int]) -> None:
    handle, work, gid = small_daemon
    hoarded: list[str] = []
    try:
        for _ in range(2):
            reply = _launch(handle, work, INTRUDER, gid)
            assert reply["type"] == "launched", reply
            hoarded.append(str(reply["session"]["id"]))  # type: ignore[index]
        refused = _launch(handle, work, INTRUDER, gid)
        assert refused["type"] == "error", refused
        assert refused["code"] == "session.limit"
        assert "per user is 2" in str(refused["message"])
        other = _launch(handle, work, OWNER, gid)
        assert other["type"] == "launched", other
        _stop_all(handle, OWNER, gid, [str(other["session"]["id"])])  # type: ignore[index]
    finally:
        _stop_all(handle, INTRUDER, gid, hoarded)


def test_the_share_is_a_quarter_unless_set() -> None:
    assert Config().sessions.live_per_uid() == 256
    assert parse_config("[sessions]\nmax_live = 3\n", source="t").sessions.live_per_uid() == 1
    assert parse_config("[sessions]\nmax_live_per_uid = 9\n",
                        source="t").sessions.live_per_uid() == 9


def test_a_few_users_cannot_take_every_session_place(short_tmp: Path) -> None:
    """``max_live_per_uid`` bounds one user; two users at their caps filled ``max_live``
    together, and every other user's launch (root's too) was ``session.limit``. Now a user
    with fewer than a few live sessions still launches, up to twice ``max_live`` in all."""
    from tests.redteam.conftest import shared_daemon, workdir

    with shared_daemon(short_tmp, 3, more="[sessions]\nmax_live = 4\nmax_live_per_uid = 2\n"
                       ) as (handle, (first, second, third)):
        held: list[tuple[LocalUser, str]] = []
        try:
            for user in (first, second, first, second):  # every shared place
                reply = _launch(handle, workdir(user), user.uid, user.gid)
                assert reply["type"] == "launched", reply
                held.append((user, str(reply["session"]["id"])))  # type: ignore[index]
            late = _launch(handle, workdir(third), third.uid, third.gid)
            assert late["type"] == "launched", late  # before: session.limit
            held.append((third, str(late["session"]["id"])))  # type: ignore[index]
            again = _launch(handle, workdir(first), first.uid, first.gid)
            assert again["type"] == "error" and again["code"] == "session.limit", again
        finally:
            for user, session in held:
                _stop_all(handle, user.uid, user.gid, [session])
