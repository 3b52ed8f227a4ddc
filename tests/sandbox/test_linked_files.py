"""Cache files hard-linked into a writable grant are read-only in the session (branch
``hardlink``).

uv (its default link mode on Linux) and pnpm hard-link their caches into projects: written in
place through the project's name, the cache's inode changed, and every later ``uv sync`` on
the host linked the session's bytes. The layouts here are made as uv makes them (a file in
``~/.cache/uv/archive-v0/...`` and a link of it in the project's ``.venv``); the sessions are
real, and the host's inode is read after them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonod.sandbox._linkscan import scan
from nonod.sandbox._mounts import BIND_DIR, MASK_DIR, OVERLAY, READONLY, MountOp

from ..conftest import SandboxUser

SITE = ".venv/lib/python3.12/site-packages/pkg"
ARCHIVE = ".cache/uv/archive-v0/Xq3/pkg"


@pytest.fixture
def uv_home(world_tmp: Path, sandbox_user: SandboxUser) -> Path:
    """``home`` with uv's cache entry ``pkg/__init__.py`` hard-linked into
    ``proj/.venv``, a file of the project's own, and a file with two names both in the
    project (``a`` and ``b``)."""
    home = world_tmp / "home"
    for d in (ARCHIVE, f"proj/{SITE}"):
        (home / d).mkdir(parents=True)
    cached = home / ARCHIVE / "__init__.py"
    cached.write_text("HOST-CODE\n")
    os.link(cached, home / "proj" / SITE / "__init__.py")
    (home / "proj/main.py").write_text("mine\n")
    (home / "proj/a").write_text("twins\n")
    os.link(home / "proj/a", home / "proj/b")
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    return home


def _ops(*ops: MountOp) -> tuple[MountOp, ...]:
    return ops


def test_the_scan_finds_names_with_a_link_outside_the_writable_grants(
        uv_home: Path) -> None:
    proj = str(uv_home / "proj")
    linked = f"{proj}/{SITE}/__init__.py"
    found = scan(_ops(MountOp(BIND_DIR, proj, proj, True)))
    assert found.names == (linked,) and found.inodes == 1 and not found.incomplete
    # Both names writable (the cache's directory a writable bind of the host's): nothing
    # the session could not already write.
    home = str(uv_home)
    assert scan(_ops(MountOp(BIND_DIR, home, home, True))).names == ()
    # The cache an overlay below a writable home: its name is not the host's to write.
    cache = str(uv_home / ".cache")
    assert scan(_ops(MountOp(BIND_DIR, home, home, True),
                     MountOp(OVERLAY, cache, cache, True))).names == (linked,)
    # A read-only bind or a mask over the way: not walked.
    venv = f"{proj}/.venv"
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, True),
                     MountOp(BIND_DIR, venv, venv, False))).names == ()
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, True), MountOp(MASK_DIR, venv))).names == ()
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, True), MountOp(READONLY, linked))).names == ()
    # A read-only grant of the project: nothing to do.
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, False))).names == ()
