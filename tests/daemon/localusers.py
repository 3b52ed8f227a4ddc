"""Real local users for tests that are about users: made with useradd, removed with userdel.

Each user gets ``nogroup`` (or ``nobody``) as its primary group, the group a test's system
daemon gives its socket, and a home directory of its own (mode 0700) under ``base``.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PREFIX = "nonot"


@dataclass(frozen=True)
class LocalUser:
    name: str
    uid: int
    gid: int
    home: Path

    def prefix(self) -> list[str]:
        """Run a command as this user (no supplementary groups)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]


def socket_group() -> str:
    for name in ("nogroup", "nobody"):
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("neither nogroup nor nobody exists")


def _name() -> str:
    """A fresh user name that says which process made it: ``nonot<pid>x<random>``."""
    return f"{PREFIX}{os.getpid()}x{secrets.token_hex(4)}"


def _stale(name: str) -> bool:
    """Whether ``name`` is a test user left by a test process that is gone. A live one's
    users are its own: another run on the same host (a second worktree, CI next to a
    developer) must not lose them in the middle of its tests."""
    maker = name.removeprefix(PREFIX).partition("x")
    if not (maker[1] and maker[0].isdigit()):
        return True  # the older name without its maker
    try:
        os.kill(int(maker[0]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove_stale() -> None:
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX) and _stale(entry.pw_name):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)


@contextmanager
def local_users(base: Path, count: int) -> Iterator[list[LocalUser]]:
    """``count`` fresh users whose homes are ``base/<name>``; gone afterwards."""
    _remove_stale()
    group = socket_group()
    made: list[LocalUser] = []
    try:
        for _ in range(count):
            name = _name()
            home = base / name
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(home),
                            "--gid", group, "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
            entry = pwd.getpwnam(name)
            home.mkdir(mode=0o700)
            os.chown(home, entry.pw_uid, entry.pw_gid)
            made.append(LocalUser(name, entry.pw_uid, entry.pw_gid, home))
        yield made
    finally:
        for user in made:
            subprocess.run(["userdel", user.name], capture_output=True, check=False)
