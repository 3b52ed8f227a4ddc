"""Review of the eighth session: a profile directory another user may write through a POSIX
ACL, or through a group that only looked private.

The rule for what nonod trusts unsigned (profiles, trust keys' ``.pub``: ``_writers``) read
only the mode: group bits that allow writing passed when the group was the owner's private
one. With an ACL those bits are its mask, and a named user of the ACL (``setfacl -m
u:bob:rwx``) may write too: bob could replace the profile. Such an entry is now named and the
file refused, as a group or world write bit is. Likewise a group named like its owner that
lists no member is not private when it is another user's primary group."""

from __future__ import annotations

import os
import pwd
import secrets
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod._writers import other_writers

NOBODY = 65534
_UNDEFINED = 0xFFFFFFFF


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to root and a second user")
def test_a_directory_an_acl_lets_another_user_write_is_refused(world_tmp: Path) -> None:
    shared = world_tmp / "profiles"
    shared.mkdir(mode=0o755)
    os.chown(shared, 0, 0)  # root's, root's own group (no other members)
    profile = shared / "bot.json"
    profile.write_text("{}")
    os.chmod(profile, 0o644)  # the file itself is root's alone
    st = profile.stat()
    assert other_writers(str(profile), st.st_uid, st.st_gid, st.st_mode, reader=0) is None
    # u::rwx, u:nobody:rwx, g::r-x, m::rwx, o::r-x
    os.setxattr(shared, "system.posix_acl_access", _acl(
        (0x01, 7, _UNDEFINED), (0x02, 7, NOBODY), (0x04, 5, _UNDEFINED),
        (0x10, 7, _UNDEFINED), (0x20, 5, _UNDEFINED)))
    assert shared.stat().st_mode & 0o777 == 0o775  # the mask shows as the group's bits
    # The kernel lets that user make names there (and so replace the profile).
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    "touch", str(shared / "planted.json")], check=True)
    assert (shared / "planted.json").stat().st_uid == NOBODY
    found = other_writers(str(profile), st.st_uid, st.st_gid, st.st_mode, reader=0)
    assert found is not None
    assert found[0] == f"{_name()} may write {shared} (an ACL)" and not found[1], found


def _name() -> str:
    return pwd.getpwuid(NOBODY).pw_name


@pytest.fixture
def owner_and_mate() -> Iterator[tuple[pwd.struct_passwd, pwd.struct_passwd]]:
    """A user with its private group (``useradd -U``), and another user whose primary group
    is that group (``useradd -g``: the group lists no member)."""
    owner, mate = (f"nonor8{secrets.token_hex(3)}" for _ in range(2))
    made: list[str] = []
    try:
        for args in (["-U", owner], ["-g", owner, mate]):
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", *args], check=True, capture_output=True)
            made.append(args[-1])
        yield pwd.getpwnam(owner), pwd.getpwnam(mate)
    finally:
        for name in reversed(made):  # the mate first: then the owner's group goes too
            subprocess.run(["userdel", name], capture_output=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd")
def test_a_group_another_user_has_as_primary_is_not_private(
        world_tmp: Path, owner_and_mate: tuple[pwd.struct_passwd, pwd.struct_passwd]) -> None:
    """Named like its owner and listing no member, the group was taken for the owner's
    private one: but another user whose primary group it is may write what it may."""
    owner, mate = owner_and_mate
    shared = world_tmp / "profiles"
    shared.mkdir()
    os.chown(shared, owner.pw_uid, owner.pw_gid)
    shared.chmod(0o775)  # a user-private-group umask's directory
    profile = shared / "bot.json"
    profile.write_text("{}")
    os.chown(profile, owner.pw_uid, owner.pw_gid)
    subprocess.run(["setpriv", f"--reuid={mate.pw_uid}", f"--regid={mate.pw_gid}",
                    "--clear-groups", "touch", str(shared / "planted.json")], check=True)
    assert (shared / "planted.json").stat().st_uid == mate.pw_uid
    st = profile.stat()
    found = other_writers(str(profile), st.st_uid, st.st_gid, st.st_mode, reader=owner.pw_uid)
    assert found == (f"the group {owner.pw_gid} may write {shared}", False), found
