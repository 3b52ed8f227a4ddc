"""Review of the eighth session: a profile directory another user may write through a POSIX
ACL.

The rule for what nonod trusts unsigned (profiles, trust keys' ``.pub``: ``_writers``) read
only the mode: group bits that allow writing passed when the group was the owner's private
one. With an ACL those bits are its mask, and a named user of the ACL (``setfacl -m
u:bob:rwx``) may write too: bob could replace the profile. Such an entry is now named and the
file refused, as a group or world write bit is."""

from __future__ import annotations

import os
import struct
import subprocess
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
    import pwd

    return pwd.getpwuid(NOBODY).pw_name
