"""Deny-inside-allow without a mount namespace: a directory grant split around its denied
paths (``nonod.sandbox._mode.split_around``), on a real directory tree."""

from __future__ import annotations

import os
from pathlib import Path

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox._mode import split_around, view_needs
from nonod.sandbox._mounts import compile_mounts


def _tree(root: Path) -> None:
    (root / ".ssh").mkdir()
    (root / ".ssh" / "id").write_text("key")
    (root / ".config" / "gh").mkdir(parents=True)
    (root / ".config" / "gh" / "hosts.yml").write_text("token")
    (root / ".config" / "tool.toml").write_text("x")
    (root / "notes.txt").write_text("n")
    os.symlink(root / ".ssh" / "id", root / "link")


def test_grant_is_split_along_the_way_to_each_denied_path(tmp_path: Path) -> None:
    _tree(tmp_path)
    home = Grant(path=str(tmp_path), access=Access.READWRITE)
    denied = [str(tmp_path / ".ssh"), str(tmp_path / ".config" / "gh")]

    grants, split = split_around([home], denied)

    assert split == [str(tmp_path), str(tmp_path / ".config")]
    assert {(g.path, g.is_file) for g in grants} == {
        (str(tmp_path / ".config" / "tool.toml"), True),
        (str(tmp_path / "notes.txt"), True),
    }
    assert all(g.access is Access.READWRITE for g in grants)  # symlink not granted


def test_grants_without_denials_below_stay_whole_and_grants_inside_denials_go(
        tmp_path: Path) -> None:
    _tree(tmp_path)
    usr = Grant(path="/usr", access=Access.READ)
    key = Grant(path=str(tmp_path / ".ssh" / "id"), access=Access.READ, is_file=True)

    grants, split = split_around([usr, key], [str(tmp_path / ".ssh")])

    assert grants == [usr] and split == []


def test_a_denied_path_that_does_not_exist_leaves_its_parent_split(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    grant = Grant(path=str(tmp_path), access=Access.READWRITE)

    grants, split = split_around([grant], [str(tmp_path / ".aws" / "credentials")])

    assert split == [str(tmp_path)]  # tmp_path itself is not granted: .aws cannot be made
    assert [g.path for g in grants] == [str(tmp_path / "a")]


def test_writable_caches_need_private_caches_without_a_view(tmp_path: Path) -> None:
    """Without a mount namespace a writable cache grant is the host's: a directory (an
    overlay in a view) and a file (read-only in a view) both need ``private_caches``."""
    cache = tmp_path / ".cache"
    (cache / "go-build").mkdir(parents=True)
    (cache / "index").write_text("")
    rw = Access.READWRITE
    for grant in (Grant(path=str(cache / "go-build"), access=rw),
                  Grant(path=str(cache / "index"), access=rw, is_file=True)):
        policy = ResolvedPolicy(name="t", grants=(grant,), denials=(), cache_home=str(cache))
        needs = view_needs(policy, compile_mounts(policy, home=str(tmp_path)), 0, 1000)
        assert needs["private_caches"].startswith("1 writable cache grants"), needs
    reading = ResolvedPolicy(name="t", denials=(), cache_home=str(cache),
                             grants=(Grant(path=str(cache), access=Access.READ),))
    assert "private_caches" not in view_needs(
        reading, compile_mounts(reading, home=str(tmp_path)), 0, 1000)
