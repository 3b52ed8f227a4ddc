"""Through the daemon: once a launch is answered, the next session's directory and audit file
are made (``nonod.sessions._slot``), and the next launch takes them; its audit file verifies
sealed, as one made at the launch does.

The next launch uses its profile's kept resolution, checked while it is prepared. The test
runs as root, and a root caller's resolution asks the password database for the accounts'
homes (``nonod.profiles._resolve._account_homes``): an account made or removed between the
two launches (another test's ``nonot*`` user, on a shared host) makes the check fail, and
the launch is refused and redone on a fresh resolution (``ResolutionChanged``). A refused
attempt that had claimed the slot already takes it along when its directory is removed, and
the redone launch makes its own file. That is no fault of the slot; such a round is told by
the resolution cache's misses, checked for what it must still hold, and made again."""

from __future__ import annotations

import os
import time
from pathlib import Path

from nonod import protocol as p
from nonod.audit import AUDIT_FILE, verify_session_file
from nonod.sessions._slot import SLOT_DIR, SLOT_FILE

from .conftest import DaemonThread, session_env

#: Rounds before giving up: each is redone only when the host's accounts changed during it.
ROUNDS = 5


def _attached_true(daemon_thread: DaemonThread, work: Path) -> str:
    with daemon_thread.connect() as conn:
        conn.send(p.Launch(argv=("/bin/true",), cwd=str(work), env=session_env(work),
                           options=p.LaunchOptions(allow_cwd=True, block_net=True),
                           detach=False, stdio="null"))
        launched = conn.receive()
        assert isinstance(launched, p.Launched), launched
        exited = conn.receive()
        assert isinstance(exited, p.Exited), exited
        return launched.session.id


def _wait_slot(daemon_thread: DaemonThread) -> int:
    """The inode of the slot's file, once it is made (after the last launch's reply)."""
    slot = daemon_thread.state_dir / "sessions" / SLOT_DIR / SLOT_FILE
    deadline = time.monotonic() + 60  # made in a worker thread once the reply went out
    with daemon_thread.connect() as conn:
        while not slot.exists():  # each round trip lets the daemon's loop run
            assert time.monotonic() < deadline, "no slot was made after the launch's reply"
            assert isinstance(conn.request(p.Status()), p.DaemonStatus)
    return os.stat(slot).st_ino


def _sessions(daemon_thread: DaemonThread) -> set[str]:
    """The session directories (not the slot's, whose name begins with a dot)."""
    return {d.name for d in (daemon_thread.state_dir / "sessions").iterdir()
            if not d.name.startswith(".")}


def _holders(daemon_thread: DaemonThread, inode: int) -> set[str]:
    """The sessions whose audit file is the file ``inode``."""
    sessions = daemon_thread.state_dir / "sessions"
    return {name for name in _sessions(daemon_thread)
            if (sessions / name / AUDIT_FILE).exists()
            and os.stat(sessions / name / AUDIT_FILE).st_ino == inode}


def test_the_next_launch_takes_the_audit_file_made_after_the_last_reply(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    cache = daemon_thread.policies.cache if daemon_thread.policies is not None else None
    assert cache is not None
    _attached_true(daemon_thread, short_tmp)
    for _ in range(ROUNDS):
        ahead = _wait_slot(daemon_thread)
        misses = cache.misses

        second = _attached_true(daemon_thread, short_tmp)

        audit = daemon_thread.state_dir / "sessions" / second / AUDIT_FILE
        assert verify_session_file(audit).sealed
        if cache.misses == misses:  # the kept resolution held: this launch took the slot
            assert os.stat(audit).st_ino == ahead
            return
        # Redone (the host's accounts changed meanwhile): the slot went to the redone
        # launch, or with the refused attempt's directory; never to another session.
        assert _holders(daemon_thread, ahead) <= {second}
    raise AssertionError(f"each of {ROUNDS} launches found its kept resolution stale")


def test_a_launch_redone_on_a_fresh_resolution_leaves_nothing_of_its_refused_attempt(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    """The redo the test above allows for, made to happen: the caller's home (missing when
    the profile was resolved) made before the next launch. The refused attempt's directory
    is gone (with the slot's file, if it had claimed it); the redone launch's file is
    sealed."""
    cache = daemon_thread.policies.cache if daemon_thread.policies is not None else None
    assert cache is not None
    first = _attached_true(daemon_thread, short_tmp)
    ahead = _wait_slot(daemon_thread)
    misses = cache.misses
    home = Path(f"{short_tmp}-home")
    home.mkdir(mode=0o700)
    try:
        second = _attached_true(daemon_thread, short_tmp)
    finally:
        home.rmdir()

    assert cache.misses == misses + 2  # the kept check failed, and the redo resolved anew
    assert verify_session_file(daemon_thread.state_dir / "sessions" / second / AUDIT_FILE
                               ).sealed
    assert _sessions(daemon_thread) == {first, second}
    assert _holders(daemon_thread, ahead) <= {second}
