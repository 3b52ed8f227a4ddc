"""Red team, twenty-ninth pass: a grant in ``/tmp`` named by a profile, made first by another
user.

The built-in ``openclaw`` profile grants ``$TMPDIR/openclaw-$UID`` read-write; on Linux
``$TMPDIR`` is ``/tmp``, the session's own private one, but a grant below it binds the host's
path when that exists. In the host's ``/tmp`` (world-writable, sticky) a name belongs to
whoever made it first: another user who made ``/tmp/openclaw-<victim's uid>`` (a directory
open to it, or a link to a place of its choosing) received what the victim's session wrote
there and had the session read what it planted. A grant or working directory named through a
name another user (not the caller, not root) made in a directory every user may write is
now refused (``policy.others_place``), and a resolution kept between launches is not reused
once such a name changed owner.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="useradd, a system daemon")]


@pytest.fixture
def place(two_users: tuple[DaemonThread, list[LocalUser]]) -> Iterator[Path]:
    """``/tmp/openclaw-<the first user's uid>``, the built-in profile's grant (removed
    afterwards, whoever made it)."""
    path = Path(f"/tmp/openclaw-{two_users[1][0].uid}")
    yield path
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _made_by(user: LocalUser, path: Path, mode: int = 0o777) -> Path:
    path.mkdir(mode=mode)
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def _launch(handle: DaemonThread, user: LocalUser, name: str, script: str) -> dict[str, Any]:
    work = workdir(user)
    launch = {"type": "launch", "profile": "openclaw", "argv": ["/bin/sh", "-c", script],
              "cwd": str(work), "env": session_env(work), "detach": True, "stdio": "null",
              "name": name}
    lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": name}],
                       prefix=user.prefix(), timeout=60)
    return dict(json.loads(lines[1]))


def _writes(place: Path) -> str:
    return f"cat {place}/planted > {place}/seen 2>&1; echo secret > {place}/out"


def test_a_tmp_directory_another_user_made_first_is_not_granted(
        two_users: tuple[DaemonThread, list[LocalUser]], place: Path) -> None:
    handle, (victim, other) = two_users
    _made_by(other, place)
    (place / "planted").write_text("from the other user\n")
    reply = _launch(handle, victim, "squatted", _writes(place))
    assert sorted(p.name for p in place.iterdir()) == ["planted"], reply  # before: out, seen
    assert reply["type"] == "error" and reply["code"] == "policy.others_place", reply
    assert str(place) in reply["message"] and f"user {other.uid}" in reply["message"], reply


def test_a_link_another_user_made_there_is_not_followed(
        two_users: tuple[DaemonThread, list[LocalUser]], place: Path) -> None:
    """The other user's link re-points the grant to a place of its choosing: here the
    victim's own private directory, which the session was never meant to write."""
    handle, (victim, other) = two_users
    private = _made_by(victim, victim.home / "private", 0o700)
    place.symlink_to(private)
    os.lchown(place, other.uid, other.gid)
    reply = _launch(handle, victim, "linked", f"echo written > {private}/out")
    assert not list(private.iterdir()), reply  # before: launched, and `out` written there
    assert reply["type"] == "error" and reply["code"] == "policy.others_place", reply


def test_the_users_own_directory_there_is_granted_and_a_kept_resolution_is_not_reused(
        two_users: tuple[DaemonThread, list[LocalUser]], place: Path) -> None:
    """The user's own directory there is shared with the session, as the profile asks. Once
    it is gone and another user made one in its place (the same type, so the recorded looks
    said nothing had changed), the next launch resolves again and is refused."""
    handle, (victim, other) = two_users
    _made_by(victim, place, 0o700)
    (place / "planted").write_text("mine\n")
    first = _launch(handle, victim, "own", _writes(place))
    assert first["type"] == "launched", first
    assert (place / "out").read_text() == "secret\n"
    assert (place / "seen").read_text() == "mine\n"
    shutil.rmtree(place)  # (a tmp cleaner, a reboot)
    _made_by(other, place)
    again = _launch(handle, victim, "again", _writes(place))
    assert not list(place.iterdir()), again  # before: the kept resolution granted it
    assert again["type"] == "error" and again["code"] == "policy.others_place", again


def test_a_working_directory_below_another_users_tmp_directory_is_refused(
        two_users: tuple[DaemonThread, list[LocalUser]], place: Path) -> None:
    """The working directory is granted too: below a directory another user made in
    ``/tmp`` (open to the user, who made its project there), that user may rename the
    project and put anything in its place at any time."""
    handle, (victim, other) = two_users
    shared = _made_by(other, place)
    project = _made_by(victim, shared / "proj", 0o755)
    launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(project),
              "env": session_env(project), "options": {"allow_cwd": True}, "detach": True,
              "stdio": "null", "name": "below"}
    reply = json.loads(raw_client(handle.socket, [hello(), launch], prefix=victim.prefix(),
                                  timeout=60)[1])
    assert reply["type"] == "error" and reply["code"] == "policy.others_place", reply
    assert "the working directory" in reply["message"], reply


def _launch_in(handle: DaemonThread, user: LocalUser, cwd: Path, name: str) -> dict[str, Any]:
    launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(cwd),
              "env": session_env(cwd), "options": {"allow_cwd": True}, "detach": True,
              "stdio": "null", "name": name}
    return dict(json.loads(raw_client(handle.socket, [hello(), launch], prefix=user.prefix(),
                                      timeout=60)[1]))


def _team(short_tmp: Path, owner: int, gid: int) -> Path:
    """A team's directory: its group may make names in it (``2775``), others may not."""
    team = short_tmp / "team"
    team.mkdir()
    os.chown(team, owner, gid)
    team.chmod(0o2775)
    return team


def test_a_name_a_group_member_made_in_a_group_writable_directory_is_refused(
        two_users: tuple[DaemonThread, list[LocalUser]], short_tmp: Path) -> None:
    """known1 (review25's note): a directory its group may write lets every member place
    names there, as ``/tmp`` lets every user: a working directory below a name another
    member made there is that member's to rename and replace at any time."""
    handle, (victim, other) = two_users
    team = _team(short_tmp, 0, other.gid)
    shared = _made_by(other, team / "proj", 0o755)
    project = _made_by(victim, shared / "mine", 0o755)
    reply = _launch_in(handle, victim, project, "team")
    # before: launched (only S_IWOTH made a directory open to others)
    assert reply["type"] == "error" and reply["code"] == "policy.others_place", reply
    assert f"user {other.uid}" in reply["message"], reply
    assert f"the members of its group (gid {other.gid})" in reply["message"], reply


def test_the_directory_owners_own_names_in_it_are_not_refused(
        two_users: tuple[DaemonThread, list[LocalUser]], short_tmp: Path) -> None:
    """Whoever owns the directory may rename any name in it, whatever its mode: its own
    names in it are no more its choice when its group may write there too."""
    handle, (victim, other) = two_users
    team = _team(short_tmp, other.uid, other.gid)
    shared = _made_by(other, team / "proj", 0o755)
    project = _made_by(victim, shared / "mine", 0o755)
    reply = _launch_in(handle, victim, project, "owners")
    assert reply["type"] == "launched", reply
