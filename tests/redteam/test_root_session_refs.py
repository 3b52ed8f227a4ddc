"""Red team, another user's session picked for root by a name. On the system daemon each user
names its own sessions, and root sees all of them: ``stop``, ``inspect``, ``attach``,
``signal`` by name (or by id prefix) took, among every user's sessions, the latest live one
of that name, and a name before an id prefix. A member of the socket group named its session
like another user's session, or like that session's id (or the start of it, as ``ps`` shows
ids): root, stopping the intruder's session by the name it showed, stopped the other user's.
Now a name may not look like an id, and for root a name or prefix that matches sessions of
several users is ``session.ambiguous``, naming their ids."""

from __future__ import annotations

import json
import os

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


def _launch(handle: DaemonThread, user: LocalUser, name: str) -> dict[str, object]:
    work = workdir(user)
    launch = {"type": "launch", "argv": ["sleep", "600"], "cwd": str(work),
              "env": session_env(work), "options": {"allow_cwd": True}, "detach": True,
              "stdio": "null", "name": name}
    reply: dict[str, object] = json.loads(
        raw_client(handle.socket, [hello(), launch], prefix=user.prefix())[1])
    return reply


def _as_root(handle: DaemonThread, message: dict[str, object]) -> dict[str, object]:
    reply: dict[str, object] = json.loads(raw_client(handle.socket, [hello(), message])[1])
    return reply


def _live(handle: DaemonThread) -> set[str]:
    listed = _as_root(handle, {"type": "list"})
    return {str(s["id"]) for s in listed["sessions"]}  # type: ignore[attr-defined]


def test_another_users_name_never_picks_a_session_for_root(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (owner, intruder) = two_users
    mine = _launch(handle, owner, "web")
    assert mine["type"] == "launched", mine
    victim = str(mine["session"]["id"])  # type: ignore[index]
    # The intruder's names: the owner's id (refused: no name looks like an id), the same
    # name as the owner's, and the start of the owner's id.
    as_id = _launch(handle, intruder, victim)
    assert (as_id["type"], as_id.get("code")) == ("error", "session.name_invalid"), as_id
    same = _launch(handle, intruder, "web")
    assert same["type"] == "launched", same
    prefix = victim[:4]
    short = _launch(handle, intruder, prefix)
    assert short["type"] == "launched", short
    theirs = {str(same["session"]["id"]), str(short["session"]["id"])}  # type: ignore[index]
    try:
        for ref in ("web", prefix):
            for request in ({"type": "inspect"}, {"type": "stop", "force": True},
                            {"type": "signal", "signal": 9}):
                reply = _as_root(handle, {**request, "session": ref})
                assert (reply["type"], reply.get("code")) == ("error", "session.ambiguous"), (
                    ref, request, reply)
                assert victim in str(reply["message"]), reply
        # Nothing was stopped, and root still reaches each session by its full id.
        assert {victim, *theirs} <= _live(handle)
        reply = _as_root(handle, {"type": "inspect", "session": victim})
        assert reply["session"]["name"] == "web", reply  # type: ignore[index]
        # The owner, who sees only its own, still uses its name.
        own = json.loads(raw_client(handle.socket, [hello(), {"type": "inspect",
                                                              "session": "web"}],
                                    prefix=owner.prefix())[1])
        assert own["session"]["id"] == victim, own
    finally:
        for session in (victim, *theirs):
            _as_root(handle, {"type": "stop", "session": session, "force": True})
