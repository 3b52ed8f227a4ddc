"""FsLook: the filesystem as profile resolution sees it, each path looked at once."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from nonod.profiles import FsLook


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = Path(os.path.realpath(tmp_path))
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "x").mkdir()
    (root / "a" / "lx").symlink_to("../x")
    (root / "abs").symlink_to(root / "a" / "b")
    (root / "a" / "b" / "rel").symlink_to("c/../../lx")
    (root / "dang").symlink_to("missing/zz")
    (root / "up").symlink_to("/")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    return root


NAMES = ("a", "b", "c", "x", "lx", "abs", "rel", "dang", "up", "loop1", "loop2", "..", ".",
         "missing", "")


def test_realpath_answers_as_os_path_realpath(tree: Path) -> None:
    rng = random.Random(15)
    look = FsLook()  # one look for all: its memo must not change any answer
    for _ in range(3000):
        path = str(tree) + "/" + "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 6)))
        assert look.realpath(path) == os.path.realpath(path), path
        assert FsLook().realpath(path) == os.path.realpath(path), path


def test_each_path_is_looked_at_once(tree: Path) -> None:
    look = FsLook()
    look.realpath(str(tree / "a" / "b" / "rel" / "y"))
    look.exists(str(tree / "x"))
    first = look.looks()
    for _ in range(3):
        look.realpath(str(tree / "a" / "b" / "rel" / "y"))
        look.realpath(str(tree / "a" / "lx" / "y"))  # the same inodes by another way
        look.exists(str(tree / "x"))
    assert look.looks() == first  # a/lx and its target were met through rel already


@pytest.mark.parametrize("change", ["create", "remove", "replace", "repoint", "to_symlink"])
def test_unchanged_sees_every_change_to_what_was_looked_at(tree: Path, change: str) -> None:
    look = FsLook()
    look.realpath(str(tree / "a" / "lx" / "new"))
    look.exists(look.realpath(str(tree / "a" / "b" / "c")))  # as the resolver asks
    look.isdir(str(tree / "x"))
    assert look.unchanged()
    if change == "create":
        (tree / "x" / "new").mkdir()
    elif change == "remove":
        (tree / "a" / "b" / "c").rmdir()
    elif change == "replace":  # a file where the directory was
        (tree / "x").rename(tree / "x-old")
        (tree / "x").write_text("")
    elif change == "repoint":  # the same link name, another target
        (tree / "a" / "lx").unlink()
        (tree / "a" / "lx").symlink_to("b")
    else:
        (tree / "a" / "b" / "c").rmdir()
        (tree / "a" / "b" / "c").symlink_to(tree / "x")
    assert not look.unchanged()


def test_what_resolution_cannot_see_is_no_change(tree: Path) -> None:
    """Resolution reads types and link targets only: a directory's content, its mode or a
    new directory of the same name give the same policy, so the look still holds."""
    look = FsLook()
    look.realpath(str(tree / "a" / "lx" / "new"))
    look.isdir(str(tree / "a" / "b"))
    (tree / "a" / "b" / "file").write_text("x")
    (tree / "a" / "b").chmod(0o700)
    (tree / "x").rename(tree / "x-old")
    (tree / "x").mkdir()
    assert look.unchanged()


def test_a_loop_is_answered_but_never_reused(tree: Path) -> None:
    look = FsLook()
    path = str(tree / "loop1" / "q")
    assert look.realpath(path) == os.path.realpath(path)
    assert not look.unchanged()
