"""A uid-0 session's /etc: idmapped where the kernel can (root's files owned by an id the
session does not map), else walked at launch for what only root may read (masked). Which one
a launch used is in its enforcement report. The sessions themselves are in
tests/redteam/test_root_session_secrets.py."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest
from nonod.sandbox._mounts import IDMAP, compile_mounts, idmap_available, idmapped_trees
from nonod.sandbox._plan import build_plan

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="plants a root-only file in /etc")]

POLICY = ResolvedPolicy(name="t", grants=(Grant(path="/usr", access=Access.READ),
                                          Grant(path="/etc", access=Access.READ)),
                        denials=())


@pytest.fixture
def root_only_file() -> Iterator[Path]:
    path = Path("/etc") / f"nono-idmap-{secrets.token_hex(4)}.key"
    try:
        path.write_text("PRIVATE\n")
        path.chmod(0o600)
        yield path
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.skipif(not idmap_available(), reason="the kernel cannot idmap /etc here")
def test_a_root_plan_idmaps_etc_and_walks_nothing(root_only_file: Path,
                                                  tmp_path: Path) -> None:
    plan = compile_mounts(POLICY, home=str(tmp_path), hide_root_only=True, idmap=True)
    assert [op.target for op in plan.ops if op.kind == IDMAP] == ["/etc"]
    assert str(root_only_file) not in plan.masked
    launch, report = build_plan(POLICY, LaunchRequest(argv=("/bin/true",), cwd=str(tmp_path),
                                                      uid=0, gid=0))
    assert [op.target for op in launch.mounts if op.kind == IDMAP] == ["/etc"]
    view = next(lay for lay in report.layers if lay.name == "filesystem_view")
    assert "root-only files: 1 read-only grants idmapped" in view.detail
    trees = idmapped_trees(launch.mounts)
    try:
        assert len(trees) == 1
    finally:
        for fd in trees:
            os.close(fd)


def test_without_the_idmap_root_only_files_are_masked(root_only_file: Path,
                                                      tmp_path: Path) -> None:
    plan = compile_mounts(POLICY, home=str(tmp_path), hide_root_only=True, idmap=False)
    assert not any(op.kind == IDMAP for op in plan.ops)
    assert str(root_only_file) in plan.masked


def test_another_uid_neither_idmaps_nor_walks(root_only_file: Path, tmp_path: Path) -> None:
    """Only uid 0 owns root's files: any other uid gets "other" bits from the kernel."""
    plan = compile_mounts(POLICY, home=str(tmp_path), hide_root_only=False, idmap=True)
    assert not any(op.kind == IDMAP for op in plan.ops)
    assert str(root_only_file) not in plan.masked
