"""Red team, the host's kernel keyrings seen from a session: seccomp refuses ``keyctl`` and a
session has a fresh session keyring, but its fresh ``/proc/keys`` still listed the type and
description of every key its uid may view, keys the user added on the host outside any
session included (a root session listed root's), and ``/proc/key-users`` the uid's quota use.
Both are masked in every session now."""

from __future__ import annotations

import ctypes
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_cli import CLI
from tests.redteam._programs import READ

pytestmark = pytest.mark.root

_LIBC = ctypes.CDLL(None, use_errno=True)
_ADD_KEY, _KEYCTL, _UNLINK, _USER_KEYRING = 248, 250, 9, -4


@pytest.fixture
def host_key() -> Iterator[str]:
    """A key in the user keyring of the test's uid, added on the host."""
    description = f"nono-redteam-{secrets.token_hex(4)}"
    serial = _LIBC.syscall(_ADD_KEY, b"user", description.encode(), b"payload", 7,
                           ctypes.c_int(_USER_KEYRING))
    if serial < 0:
        pytest.skip(f"add_key failed: errno {ctypes.get_errno()}")
    try:
        assert description in Path("/proc/keys").read_text()
        yield description
    finally:
        _LIBC.syscall(_KEYCTL, _UNLINK, serial, ctypes.c_int(_USER_KEYRING))


def test_a_session_does_not_list_the_hosts_keys(run: CLI, short_tmp: Path,
                                                host_key: str) -> None:
    (short_tmp / "read.py").write_text(READ)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "read.py", "/proc/keys", "/proc/key-users", "/proc/version")
    assert done.returncode == 0, done.stderr
    assert host_key not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[:2] == ["/proc/keys PermissionError", "/proc/key-users PermissionError"]
    assert lines[2].startswith("/proc/version Linux version")
