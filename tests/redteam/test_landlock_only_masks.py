"""Red team, eighth pass: what a session's view masks, in a landlock-only session. The view
masks more than the profile's denials: for a uid 0 session every entry of ``/etc`` only root
may read (TLS and VPN keys, ``gshadow``, ``opasswd``: root owns them, so owner bits let a root
session without capabilities read them), kernel file systems below a grant, and in ``/proc``
the kernel keyrings (``/proc/keys``, ``/proc/key-users``) and, for uid 0, the kernel's
root-only files (``slabinfo``, ``vmallocinfo``, ``timer_list``...). The landlock-only mode kept
out only the profile's denials: a root session read a planted root-only key in ``/etc``, and
every session the host's ``/proc/keys``, while the docs said the walk masked them. Now the
rest of what the view masks is kept out by splitting the grant around it, and ``/proc``, which
cannot be split (its process directories come and go), needs ``host_proc`` accepted."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.policy import ResolvedPolicy
from nonod.sandbox import LaunchRequest
from tests.conftest import SandboxUser
from tests.redteam import _landlock_only as landlock_only
from tests.redteam._landlock_only import PYTHON

READ = r"""
import errno, sys
for path in sys.argv[1:]:
    try:
        print(path, open(path).read().strip())
    except OSError as e:
        print(path, errno.errorcode[e.errno])
"""


def _policy(work: Path, accept: tuple[str, ...]) -> ResolvedPolicy:
    return landlock_only.policy(work, accept=("persistence", "creation_guard", "host_metadata",
                                              *accept))


@pytest.fixture
def planted() -> Iterator[tuple[Path, Path]]:
    """A key only root may read in /etc, and a public file next to it."""
    tag = f"nono-redteam-{secrets.token_hex(4)}"
    key, public = Path("/etc") / f"{tag}.key", Path("/etc") / f"{tag}.pub"
    try:
        key.write_text("PRIVATE-KEY\n")
        key.chmod(0o600)
        public.write_text("PUBLIC\n")
        public.chmod(0o644)
        yield key, public
    finally:
        key.unlink(missing_ok=True)
        public.unlink(missing_ok=True)


def test_the_hosts_proc_needs_accepting(sandbox_user: SandboxUser, world_tmp: Path) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", READ, "/proc/keys"), cwd=str(work))

    refused = sandbox_user.run_request(_policy(work, ()), request, nouserns=True)

    # Before: it ran and read the uid's keys in /proc/keys.
    assert refused.code == 125 and "/proc/keys" not in refused.stdout, refused.stdout
    assert "host_proc:" in refused.stderr and "files of the host's /proc" in refused.stderr
    assert '"allow_degraded": ["host_proc"]' in refused.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="a root session needs root")
def test_root_only_files_of_etc_are_kept_from_a_root_session(
        world_tmp: Path, planted: tuple[Path, Path]) -> None:
    root = SandboxUser("root", 0, [sys.executable], {})
    work = world_tmp / "work"
    work.mkdir()
    key, public = planted
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", READ, str(key), str(public)),
                            cwd=str(work))

    result = root.run_request(_policy(work, ("host_proc",)), request, nouserns=True)

    assert result.code == 0, result.stderr
    # Before: "<key> PRIVATE-KEY".
    assert result.stdout.splitlines() == [f"{key} EACCES", f"{public} PUBLIC"], result.stdout
    assert "host_proc (" in result.stderr  # the accepted residual, reported
