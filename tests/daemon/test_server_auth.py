"""The client authenticates the daemon before it sends a byte (issue 19, item 1).

Two real users: B (nobody) plants a fake nonod where A's client looks for its daemon, as any
local user can when ``XDG_RUNTIME_DIR`` is unset (``/tmp/nono-<uid>/nonod.sock``). A's
``nonoctl`` must refuse it, say why, and the fake server must receive nothing at all.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nonoctl.client import UntrustedDaemon, connect_trusted

from .conftest import NOBODY, SYSTEM_PYTHON, as_user, reachable_script

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root"),
]


def _free_uid() -> int:
    """A uid nobody uses, whose default socket directory does not exist yet."""
    for uid in range(42000, 43000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if not os.path.lexists(f"/tmp/nono-{uid}"):
                return uid
    raise AssertionError("no free uid in 42000-42999")


class FakeServer:
    """fakeserver.py, run as ``uid``: listens on ``path`` and counts what it is sent."""

    def __init__(self, path: Path, uid: int) -> None:
        self.proc = subprocess.Popen(
            [*as_user(uid), SYSTEM_PYTHON, str(reachable_script("fakeserver.py")), str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "READY"

    def report(self) -> str:
        out, _ = self.proc.communicate(timeout=30)
        return out.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def user_a(short_tmp: Path) -> Iterator[int]:
    uid = _free_uid()
    yield uid
    shutil.rmtree(f"/tmp/nono-{uid}", ignore_errors=True)


def _nonoctl_as(
    uid: int, base: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    home = base / f"home-{uid}"
    home.mkdir(exist_ok=True)
    os.chown(home, uid, uid)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO),
           "NONO_NO_AUTOSTART": "1"}  # no XDG_RUNTIME_DIR: /tmp/nono-<uid>/nonod.sock
    return subprocess.run(
        [*as_user(uid), sys.executable, "-m", "nonoctl", *args], input=stdin, env=env,
        cwd=home, capture_output=True, text=True, timeout=60, check=False,
    )


def _secret_and_launch(
    fake: FakeServer, uid: int, base: Path, before: Callable[[], None] = lambda: None
) -> tuple[str, list[subprocess.CompletedProcess[str]]]:
    """``nonoctl secret set`` and ``launch`` as ``uid``; what the fake server received."""
    try:
        before()
        done = [_nonoctl_as(uid, base, "secret", "set", "api", stdin="hunter2\n"),
                _nonoctl_as(uid, base, "launch", "--", "true")]
    finally:
        report = fake.report()
        fake.kill()
    return report, done


def test_a_directory_planted_by_another_user_gets_nothing(short_tmp: Path, user_a: int) -> None:
    """The client does not even look there: a ``/tmp/nono-<uid>`` of another user's sends it
    to ``~/.cache/nono/run/`` (where no daemon runs here)."""
    planted = Path(f"/tmp/nono-{user_a}")
    planted.mkdir(mode=0o755)
    os.chown(planted, NOBODY, NOBODY)  # as if user B had made it first
    fake = FakeServer(planted / "nonod.sock", NOBODY)
    report, done = _secret_and_launch(fake, user_a, short_tmp)
    assert report == "CONNECTIONS 0 BYTES 0"
    for run in done:
        assert run.returncode != 0, run.stderr
        assert f"home-{user_a}/.cache/nono/run/nonod.sock" in run.stderr
        assert "Traceback" not in run.stderr


def test_a_server_running_as_another_user_gets_nothing(short_tmp: Path, user_a: int) -> None:
    """The directory is A's own, but the listening process is B's (moved in by root: what
    matters is who listens, which SO_PEERCRED tells)."""
    own = Path(f"/tmp/nono-{user_a}")
    own.mkdir(mode=0o700)
    os.chown(own, user_a, user_a)
    staging = short_tmp / "staging"
    staging.mkdir(mode=0o700)
    os.chown(staging, NOBODY, NOBODY)
    fake = FakeServer(staging / "nonod.sock", NOBODY)
    report, done = _secret_and_launch(
        fake, user_a, short_tmp,
        before=lambda: os.rename(staging / "nonod.sock", own / "nonod.sock"))
    assert report == "CONNECTIONS 2 BYTES 0"
    for run in done:
        assert run.returncode == 122, run.stderr
        assert f"runs as uid {NOBODY}, not as you (uid {user_a})" in run.stderr


def test_a_socket_directly_in_a_sticky_directory_is_refused(short_tmp: Path) -> None:
    sticky = short_tmp / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    with pytest.raises(UntrustedDaemon, match="writable by other users"):
        connect_trusted(sticky / "nonod.sock", 5)
    below = sticky / "mine"  # a private directory under a sticky one is fine
    below.mkdir(mode=0o700)
    with pytest.raises(Exception, match="No such file") as info:
        connect_trusted(below / "nonod.sock", 5)
    assert not isinstance(info.value, UntrustedDaemon)


def test_a_symlink_to_another_users_directory_is_followed_and_refused(short_tmp: Path) -> None:
    theirs = short_tmp / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    link = short_tmp / "link"
    link.symlink_to(theirs)
    with pytest.raises(UntrustedDaemon, match=f"{theirs} belongs to uid {NOBODY}"):
        connect_trusted(link / "nonod.sock", 5)
