"""Through the daemon: once a launch is answered, the next session's directory and audit file
are made (``nonod.sessions._slot``), and the next launch takes them; its audit file verifies
sealed, as one made at the launch does."""

from __future__ import annotations

import os
import time
from pathlib import Path

from nonod import protocol as p
from nonod.audit import verify_session_file
from nonod.sessions._slot import SLOT_DIR, SLOT_FILE

from .conftest import DaemonThread, session_env


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


def test_the_next_launch_takes_the_audit_file_made_after_the_last_reply(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    slot = daemon_thread.state_dir / "sessions" / SLOT_DIR / SLOT_FILE
    _attached_true(daemon_thread, short_tmp)
    deadline = time.monotonic() + 60  # made in a worker thread once the reply went out
    with daemon_thread.connect() as conn:
        while not slot.exists():  # each round trip lets the daemon's loop run
            assert time.monotonic() < deadline, "no slot was made after the launch's reply"
            assert isinstance(conn.request(p.Status()), p.DaemonStatus)
    ahead = os.stat(slot).st_ino

    second = _attached_true(daemon_thread, short_tmp)

    audit = daemon_thread.state_dir / "sessions" / second / "audit.ndjson"
    assert os.stat(audit).st_ino == ahead
    assert verify_session_file(audit).sealed
