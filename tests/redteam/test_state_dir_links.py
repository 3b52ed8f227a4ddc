"""Red team, the daemon's state directory named through another user's link: the sixteenth pass
made the daemon refuse a state directory, or a directory above it, that another user owns, but
it resolved the links first and checked what they pointed to. With ``[daemon] state_dir`` in a
directory every user may write to (``/tmp``, sticky and root's), another user who made the name
first as a link to any directory of root's (``/etc``) had root's daemon take that directory: it
was set to ``0700`` (every other user locked out of ``/etc``) and the daemon's state written
into it. And a name made between the check and the ``mkdir`` was followed too. Now a link on
the way is followed only if it is the daemon's user's or root's, and the directory, once made,
is looked at again without following anything (``nonod/_statedir.py``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod._statedir import StateDirError, claim_state_dir
from tests.daemon.conftest import SYSTEM_PYTHON
from tests.daemon.localusers import LocalUser, local_users

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: Makes NAME a link to TARGET and removes it again, as fast as it can, until its stdin
#: closes; prints "racing" once it has begun.
RACER = r"""
import os, sys, threading
name, target = sys.argv[1], sys.argv[2]
stop = threading.Event()
def race():
    while not stop.is_set():
        try:
            os.symlink(target, name)
            os.unlink(name)
        except OSError:
            pass
thread = threading.Thread(target=race)
thread.start()
print("racing", flush=True)
sys.stdin.read()
stop.set()
thread.join()
"""


@pytest.fixture
def other(short_tmp: Path) -> Iterator[LocalUser]:
    with local_users(short_tmp, 1) as made:
        yield made[0]


@pytest.fixture
def roots_directory(short_tmp: Path) -> Path:
    """A directory of root's that others may read (as /etc is)."""
    roots = short_tmp / "roots"
    roots.mkdir()
    roots.chmod(0o755)
    return roots


def test_another_users_link_at_the_state_directorys_name_is_refused(
        other: LocalUser, roots_directory: Path) -> None:
    planted = Path("/tmp") / f"nono-state-{other.name}"
    subprocess.run([*other.prefix(), "ln", "-s", str(roots_directory), str(planted)],
                   check=True)
    try:
        # Before: root's directory was taken (and made 0700), the state written into it.
        with pytest.raises(StateDirError, match=f"link of uid {other.uid}"):
            claim_state_dir(planted)
        assert roots_directory.stat().st_mode & 0o777 == 0o755
        assert list(roots_directory.iterdir()) == []
    finally:
        planted.unlink(missing_ok=True)


def test_a_link_raced_in_before_the_directory_is_made_is_never_taken(
        other: LocalUser, roots_directory: Path) -> None:
    name = Path("/tmp") / f"nono-race-{other.name}"
    racer = subprocess.Popen([*other.prefix(), SYSTEM_PYTHON, "-c", RACER, str(name),
                              str(roots_directory)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    assert racer.stdout is not None
    assert racer.stdout.readline().strip() == "racing"
    claimed = refused = 0
    try:
        for _ in range(2000):
            try:
                got = claim_state_dir(name)
            except StateDirError:
                refused += 1
                continue
            claimed += 1
            # Taken only as a directory of root's own at that name, never through the link.
            assert got == name and not got.is_symlink()
            assert got.stat().st_uid == 0 and got.stat().st_mode & 0o777 == 0o700
            got.rmdir()
    finally:
        racer.communicate("", timeout=30)
        if name.is_dir() and not name.is_symlink():
            name.rmdir()
        name.unlink(missing_ok=True)
    assert roots_directory.stat().st_mode & 0o777 == 0o755  # never chmodded through the link
    assert claimed + refused == 2000


def test_roots_own_link_is_still_followed(short_tmp: Path) -> None:
    own = short_tmp / "real-state"
    own.mkdir(mode=0o755)
    (short_tmp / "hop").symlink_to("real-state")  # relative
    link = short_tmp / "state-link"
    link.symlink_to(short_tmp / "hop")
    assert claim_state_dir(link) == own
    assert claim_state_dir(short_tmp / "hop" / ".." / "real-state") == own
    (short_tmp / "loop").symlink_to("loop")
    with pytest.raises(StateDirError):
        claim_state_dir(short_tmp / "loop")
