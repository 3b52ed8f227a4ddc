"""Red team, twenty-fourth pass: the plan's look at the host, made with the daemon's rights.

A system daemon resolves a caller's profile as the caller, but the launch's plan (which
names exist below the grants, which are links, what git configurations say) was then asked
of the host as root. Two things another local user learnt from it:

* whether a name exists in another user's 0700 directory: a profile that grants the
  directory above it and denies the name got a mask for it when the file existed, which
  the launcher (as the caller) could not mount: "launch refused at step 'mounts':
  Permission denied (<the victim's file>)"; a missing name launched;
* what another user's git configuration says: a repository's ``include.path`` naming a file
  only its owner may read was followed as root, and the ``core.hooksPath`` it held became a
  read-only bind in the caller's working directory (seen in ``/proc/self/mountinfo``, and
  the directory could no longer be written).

The plan's questions are now asked with the session's own file rights (its uid and gid, no
supplementary groups, as its launcher drops them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="useradd, a system daemon")]


def _owned(path: Path, user: LocalUser, mode: int) -> Path:
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def _profile(user: LocalUser, name: str, body: dict[str, object]) -> Path:
    path = user.home / f"{name}.json"
    path.write_text(json.dumps({"meta": {"name": name}, "workdir": {"access": "readwrite"},
                                **body}))
    return _owned(path, user, 0o644)


def _launch(user: LocalUser, handle: DaemonThread, work: Path, profile: Path,
            script: str) -> list[dict[str, object]]:
    """The replies to ``user``'s launch of ``sh -c script`` in ``work`` and its ``wait``."""
    request = {"type": "launch", "argv": ["/bin/sh", "-c", script], "cwd": str(work),
               "env": session_env(work), "profile": str(profile), "detach": True,
               "stdio": "null", "name": profile.stem,
               "options": {"allow_cwd": True, "block_net": True}}
    lines = raw_client(handle.socket, [hello(), request,
                                       {"type": "wait", "session": profile.stem}],
                       prefix=user.prefix())
    return [json.loads(line) for line in lines if line.startswith("{")][1:]


def test_a_denied_name_in_another_users_private_directory_tells_nothing(
        two_users: tuple[DaemonThread, list[LocalUser]], short_tmp: Path) -> None:
    """Before: the launch denying the victim's existing file was refused at step 'mounts'
    naming it, the one denying a missing name ran. Now both run, alike."""
    handle, (victim, attacker) = two_users
    (victim.home / "diary.txt").write_text("private\n")
    _owned(victim.home / "diary.txt", victim, 0o600)
    work = workdir(attacker)
    outcomes = []
    for name, label in (("diary.txt", "first"), ("nothing.txt", "second")):
        profile = _profile(attacker, label, {
            "filesystem": {"read": [str(short_tmp)]},
            "policy": {"add_deny_access": [str(victim.home / name)]}})
        replies = _launch(attacker, handle, work, profile, "exit 0")
        outcomes.append([(r["type"], r.get("code")) for r in replies])
        assert "diary" not in json.dumps(replies), replies
    assert outcomes[0] == outcomes[1] == [("launched", None), ("exited", None)], outcomes


def test_a_git_include_only_its_owner_may_read_is_not_followed(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    """The victim's private ``.gitconfig`` names ``core.hooksPath = shared-hooks``; the
    attacker's repository includes it. Before: the attacker's ``shared-hooks`` was bound
    read-only (a mount in its session, a write refused): the victim's setting, read as root.
    Now the include is not readable as the attacker, and nothing of it shows."""
    handle, (victim, attacker) = two_users
    secret = victim.home / ".gitconfig"
    secret.write_text("[core]\n\thooksPath = shared-hooks\n")
    _owned(secret, victim, 0o600)
    work = workdir(attacker)
    (work / ".git").mkdir()
    (work / ".git" / "config").write_text(f"[include]\n\tpath = {secret}\n")
    (work / "shared-hooks").mkdir()
    for path in (work / ".git", work / ".git" / "config", work / "shared-hooks"):
        os.chown(path, attacker.uid, attacker.gid)
    profile = _profile(attacker, "repo", {})
    replies = _launch(attacker, handle, work, profile,
                      "grep -c shared-hooks /proc/self/mountinfo > seen.txt;"
                      " echo x > shared-hooks/written && echo written >> seen.txt")
    assert [r["type"] for r in replies] == ["launched", "exited"], replies
    assert (work / "seen.txt").read_text().split() == ["0", "written"]
