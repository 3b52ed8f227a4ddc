"""Red team, the daemon's state directory under another user's control: the audit files, the
ledger, the session records and ``--daemonize``'s log live there, and the daemon took the
directory it was given (``[daemon] state_dir``, ``$XDG_STATE_HOME``) whoever owned it or the
directories above it. Root's daemon started with a user's environment (``sudo -E nonoctl``:
``$HOME`` is that user's) kept its state in ``~user/.local/state/nono``; the user, owning the
directories above, could rename it away and put a directory of theirs in its place, where the
daemon then wrote (and the user could remove) the next sessions' audit files, and where its
log, opened by name, could be a link to any file root may write. Another user's directory
made first at a configured path (under ``/tmp``) was taken too. Now the directory, its links
resolved, must be the daemon's user's and every directory above it the daemon's user's or
root's (``nonod/_statedir.py``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod._statedir import StateDirError, claim_state_dir
from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread
from tests.daemon.localusers import LocalUser, local_users

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


@pytest.fixture
def other(short_tmp: Path) -> Iterator[LocalUser]:
    with local_users(short_tmp, 1) as made:
        yield made[0]


def test_roots_daemon_refuses_a_state_directory_below_a_users_home(
        other: LocalUser, short_tmp: Path) -> None:
    # As `sudo -E`: root's own daemon, its state where the user's $XDG_STATE_HOME points.
    state_home = other.home / ".local" / "state"
    subprocess.run([*other.prefix(), "mkdir", "-p", str(state_home)], check=True)
    handle = DaemonThread(state_home / "nono", socket_path=short_tmp / "run" / "nonod.sock")
    with pytest.raises(BaseExceptionGroup) as refused:
        handle.start()  # before: it started, and wrote its ledger there
    assert refused.group_contains(StateDirError, match=f"belongs to uid {other.uid}")
    assert not (state_home / "nono").exists()  # nothing made there


def test_a_state_directory_another_user_made_first_is_refused(
        other: LocalUser, short_tmp: Path) -> None:
    squatted = Path("/tmp") / f"nono-state-{other.name}"
    subprocess.run([*other.prefix(), "mkdir", "-m", "777", str(squatted)], check=True)
    try:
        with pytest.raises(StateDirError, match="belongs to uid"):
            claim_state_dir(squatted)
        assert squatted.stat().st_uid == other.uid  # and it was left as it was
        assert oct(squatted.stat().st_mode & 0o777) == "0o777"
    finally:
        subprocess.run(["rm", "-rf", str(squatted)], check=False)


def test_the_daemons_own_state_directory_is_taken_through_a_link(short_tmp: Path) -> None:
    own = short_tmp / "real-state"
    own.mkdir(mode=0o755)
    link = short_tmp / "state-link"
    link.symlink_to(own)
    assert claim_state_dir(link) == own.resolve()  # used resolved: a later swap changes nothing
    assert own.stat().st_mode & 0o777 == 0o700
    made = claim_state_dir(short_tmp / "new" / "state")
    assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700


#: Makes and removes ``argv[1]`` as fast as it can, as another user (review12): a directory,
#: or (review13) a link to ``argv[2]``.
SQUATTER = """
import os, sys
make = (lambda: os.symlink(sys.argv[2], sys.argv[1])) if sys.argv[2:] else (
    lambda: os.mkdir(sys.argv[1]))
undo = os.unlink if sys.argv[2:] else os.rmdir
while True:
    for step in (make, lambda: undo(sys.argv[1])):
        try:
            step()
        except OSError:
            pass
"""


def test_a_directory_another_user_makes_while_the_daemon_makes_its_own_is_refused(
        other: LocalUser, short_tmp: Path) -> None:
    """A directory missing above the state directory when the daemon looked, made by another
    user before its ``mkdir`` (a sticky, world-writable directory such as ``/tmp``): the
    daemon made its state directory inside the other user's, who could then rename it away
    and put their own in its place. Won about once in a hundred tries on this machine."""
    sticky = short_tmp / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    above = sticky / "above"
    squatter = subprocess.Popen([*other.prefix(), SYSTEM_PYTHON, "-c", SQUATTER, str(above)],
                                cwd="/")
    taken = 0
    try:
        for _ in range(1500):
            try:
                claim_state_dir(above / "state")
            except StateDirError:
                pass  # the other user's directory was there already when the daemon looked
            else:
                owner = above.stat().st_uid
                assert owner != other.uid, f"the state directory was made in uid {owner}'s"
                taken += 1
            with contextlib.suppress(OSError):
                (above / "state").rmdir()
            with contextlib.suppress(OSError):
                if above.stat().st_uid == 0:
                    above.rmdir()
    finally:
        squatter.kill()
        squatter.wait()
    assert taken  # the daemon did make its own, all the other times



def test_a_link_another_user_puts_above_while_the_daemon_makes_its_own_is_refused(
        other: LocalUser, short_tmp: Path) -> None:
    """As the directory above, a link: put there by another user after the daemon resolved
    its path and before its ``mkdir``, to a directory of root's. The daemon made its state
    directory through the link and checked what it pointed to (root's), so it took a path
    whose link the other user could point elsewhere at any time afterwards (their own
    directory: the next audit files theirs to read and replace)."""
    sticky = short_tmp / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    roots = short_tmp / "roots"
    roots.mkdir(mode=0o755)
    above = sticky / "above"
    linker = subprocess.Popen([*other.prefix(), SYSTEM_PYTHON, "-c", SQUATTER, str(above),
                               str(roots)], cwd="/")
    taken = through = 0
    try:
        for _ in range(1500):
            try:
                made = claim_state_dir(above / "state")
            except StateDirError:
                pass  # the link was there when the daemon looked, or it changed
            else:
                taken += 1
                # Made through the link, as a path that keeps it (before: about 1 in 100).
                through += made != roots / "state" and (roots / "state").exists()
            for leftover in (roots / "state", above / "state"):
                with contextlib.suppress(OSError):
                    leftover.rmdir()
            with contextlib.suppress(OSError):
                if not above.is_symlink() and above.stat().st_uid == 0:
                    above.rmdir()
    finally:
        linker.kill()
        linker.wait()
    assert taken  # the daemon did make its own, the other times
    assert not through, f"{through} state directories were made through the other's link"
