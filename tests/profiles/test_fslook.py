"""FsLook: the filesystem as profile resolution sees it, each path looked at once."""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

import pytest

from nonod._callerfs import Identity, acting_as
from nonod.profiles import FsLook, _fslook


@pytest.fixture(autouse=True, params=["native", "python"])
def check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with the check's system calls made by ``libnonolooks.so`` (``looks.c``),
    then by Python's: the same answers either way."""
    if request.param == "native":
        if _fslook._native() is None:
            pytest.skip("libnonolooks.so is not built (make)")
    else:
        monkeypatch.setattr(_fslook, "_native", lambda: None)
    return str(request.param)


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


def test_a_link_whose_target_changed_type_is_a_change(tree: Path) -> None:
    """``stat`` is asked again for a path that is a symlink now (only its own answer says
    what the target is)."""
    (tree / "to_x").symlink_to("x")
    look = FsLook()
    assert look.isdir(str(tree / "to_x"))
    look.lexists(str(tree / "to_x"))
    assert look.unchanged()
    (tree / "x").rename(tree / "x-old")
    (tree / "x").write_text("")
    assert not look.unchanged()


def test_a_missing_path_below_a_missing_parent_that_appeared_is_a_change(tree: Path) -> None:
    look = FsLook()
    look.realpath(str(tree / "m" / "n" / "o"))
    look.exists(str(tree / "m" / "n"))
    assert look.unchanged()
    (tree / "m" / "n").mkdir(parents=True)
    assert not look.unchanged()


def test_unchanged_derives_what_follows_from_the_same_pass(
        tree: Path, monkeypatch: pytest.MonkeyPatch, check: str) -> None:
    """Below a parent missing now nothing is looked at, nor is ``stat`` where ``lstat`` found
    no symlink: fewer system calls for the same answer. (Python's calls, counted; looks.c's
    rules are the same, and the other tests give both the same changes.)"""
    if check == "native":
        pytest.skip("looks.c's system calls are not Python's to count")
    look = FsLook()
    look.realpath(str(tree / "m" / "n" / "o"))  # lstat of m (and nothing below: m is missing)
    for path in (tree / "m" / "n", tree / "m" / "n" / "o", tree / "a" / "b"):
        look.lexists(str(path))
        look.exists(str(path))
    asked: list[str] = []
    for name in ("lstat", "stat"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda p, *a, _r=real, **k: asked.append(p) or _r(p, *a, **k))
    assert look.unchanged()
    assert str(tree / "m" / "n") not in asked and str(tree / "m" / "n" / "o") not in asked
    assert asked.count(str(tree / "a" / "b")) == 1



@pytest.mark.skipif(os.geteuid() != 0, reason="gives a name to another uid (chown)")
def test_a_name_in_a_directory_open_to_all_that_changed_owner_is_a_change(
        tmp_path: Path) -> None:
    """redteam29's ``placed`` half of the check, asked after the native pass too: a name
    in ``/tmp``-like directory removed and made again by another user keeps its type."""
    shared = Path(os.path.realpath(tmp_path)) / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "project").mkdir()
    look = FsLook()
    placed: list[_fslook.Placed] = []
    look.realpath(str(shared / "project" / "file"), placed=placed)
    assert _fslook.Placed(str(shared / "project"), 0, 0, None) in placed
    assert look.unchanged()
    os.chown(shared / "project", 65534, 65534)
    assert not look.unchanged()


@pytest.mark.skipif(os.geteuid() != 0, reason="gives names to other uids (chown)")
def test_a_directory_its_group_may_write_is_open_to_others(tmp_path: Path) -> None:
    """known1: a group-writable directory (a team's ``2775``) lets its group's members
    place names, as ``/tmp`` lets every user: its names are recorded with their owner, the
    directory's and its group; a name made again by another member, the directory given
    to another group, or closed to its group since, is a change."""
    team = Path(os.path.realpath(tmp_path)) / "team"
    team.mkdir()
    os.chown(team, 0, 4242)
    team.chmod(0o2775)
    (team / "proj").mkdir()
    os.chown(team / "proj", 65534, 65534)
    look = FsLook()
    placed: list[_fslook.Placed] = []
    look.realpath(str(team / "proj" / "file"), placed=placed)
    assert placed[-1] == _fslook.Placed(str(team / "proj"), 65534, 0, 4242)
    assert look.unchanged()
    os.chown(team / "proj", 65533, 65534)  # another member's now
    assert not look.unchanged()
    os.chown(team / "proj", 65534, 65534)
    assert look.unchanged()
    os.chown(team, 0, 4243)  # another group may place names there
    assert not look.unchanged()
    os.chown(team, 0, 4242)
    team.chmod(0o755)  # closed to its group
    assert not look.unchanged()
    closed = FsLook()
    placed = []
    closed.realpath(str(team / "proj" / "file"), placed=placed)
    assert not [p for p in placed if p.name.startswith(str(team))]  # only its owner may
    team.chmod(0o2775)
    assert not closed.unchanged()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="takes another uid's file identity")
def test_the_check_asks_with_the_callers_identity(world_tmp: Path) -> None:
    """review25: on the system daemon the check runs in the caller's worker thread with the
    caller's fsuid (``_callerfs.acting_as``), natively too (``looks.c``'s calls are this
    thread's). A directory closed to the caller since its resolution hides what the
    resolution saw there: a resolution the caller could no longer get is stale for the
    caller, whatever root still sees."""
    shared = Path(os.path.realpath(world_tmp)) / "shared"
    (shared / "tool").mkdir(parents=True)
    nobody = Identity(65534, 65534, ())
    answers: dict[str, bool] = {}

    def caller_thread() -> None:
        with acting_as(nobody):
            look = FsLook()
            look.realpath(str(shared / "tool" / "bin"))
            answers["open"] = look.unchanged()
        shared.chmod(0o700)  # by root, its owner
        with acting_as(nobody):
            answers["closed"] = look.unchanged()
        answers["as root"] = look.unchanged()

    thread = threading.Thread(target=caller_thread)
    thread.start()
    thread.join()
    assert answers == {"open": True, "closed": False, "as root": True}


_ODD = ("a", "b", "\udcff", "l", "..", ".", "m", "x" * 255)  # \udcff: the byte 0xff
_TARGETS = ("..", "a", "../b", "/", "missing/x", "\udcff", "l", "a/..")


def _grow(root: str, rng: random.Random) -> None:
    """Directories, files and links (relative, absolute, dangling, non-UTF-8) under root."""
    for _ in range(rng.randint(3, 12)):
        path = os.path.join(root, *(rng.choice((*_ODD[:4], "m"))
                                    for _ in range(rng.randint(1, 3))))
        # Never through a link the tree holds (``b -> /``): what is made stays below root
        # (made through one, it landed at the top of the host's /).
        parent = os.path.dirname(path)
        if os.path.lexists(path) or (parent != root and not os.path.realpath(
                parent).startswith(root + "/")):
            continue
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            kind = rng.random()
            if kind < .5:
                os.makedirs(path, exist_ok=True)
            elif kind < .7:
                Path(path).touch()
            else:
                os.symlink(rng.choice((*_TARGETS, root + "/a")), path)
        except OSError:
            pass  # a name already taken by another kind, a parent that is a file


def test_native_and_python_checks_give_the_same_answers(
        world_tmp: Path, check: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """review25: ``looks.c`` and the Python check, on random trees and looks (symbolic
    links, ``..``, missing parents, names that are not UTF-8, paths of 4096 bytes and
    more), each changed or not: the same answer every time, both answers seen."""
    if check == "python":
        pytest.skip("compares both in one run")
    native = _fslook._native
    seen = set()
    for seed in range(150):
        rng = random.Random(seed)
        root = os.path.realpath(world_tmp / str(seed))
        os.mkdir(root)
        _grow(root, rng)
        look = FsLook()
        for _ in range(rng.randint(1, 10)):
            path = os.path.join(root, *(rng.choice(_ODD) for _ in range(rng.randint(1, 5))))
            rng.choice((look.realpath, look.exists, look.lexists, look.isdir))(path)
        look.lstat("/" + "z" * 5000)
        look.exists(root + "/a" * 2100)
        if rng.random() < .5:
            _grow(root, rng)
        answers = []
        for way in (native, lambda: None):
            monkeypatch.setattr(_fslook, "_native", way)
            answers.append(look.unchanged())
        assert answers[0] == answers[1], seed
        seen.add(answers[0])
    assert seen == {True, False}


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="gives a name to another uid (chown)")
def test_a_directory_opened_to_all_since_is_a_change(world_tmp: Path) -> None:
    """review25: what ``placed`` records (redteam29) depends on whether each directory on
    the way is open to every user, not only on the names' types. A directory its owner
    opened to all after the resolution (``chmod 0777``) let another user put a name of its
    own in place of one the resolution went through, of the same type: a fresh resolution
    finds that user's name there (``policy.others_place`` refuses it), the kept one was
    served as unchanged."""
    shared = Path(os.path.realpath(world_tmp)) / "shared"
    (shared / "tool").mkdir(parents=True)
    path = str(shared / "tool" / "cache")
    look, placed = FsLook(), []
    look.realpath(path, placed=placed)
    inside = str(shared) + "/"  # (world_tmp itself is a name in /tmp, root's)
    assert [p.name for p in placed if p.name.startswith(inside)] == []
    assert look.unchanged()
    shared.chmod(0o777)
    (shared / "tool").rename(shared / "gone")
    (shared / "tool").mkdir()
    os.chown(shared / "tool", 65534, 65534)
    fresh: list[_fslook.Placed] = []
    FsLook().realpath(path, placed=fresh)
    assert [(p.name, p.uid) for p in fresh if p.name.startswith(inside)] == [
        (str(shared / "tool"), 65534)]
    assert not look.unchanged()


_MODES = (0o755, 0o777, 0o1777, 0o700, 0o000, 0o711)


def _unsettle(root: str, rng: random.Random) -> None:
    """Change what review25's random trees never changed: modes (a directory opened to all,
    closed to others, unsearchable), owners, and kinds (a FIFO, a socket, a file turned
    directory), each below root."""
    names = []
    for where, dirs, files in os.walk(root):
        names += [os.path.join(where, n) for n in (*dirs, *files)]
    for path in rng.sample(names, min(len(names), rng.randint(1, 4))):
        if os.path.islink(path):
            continue
        kind = rng.random()
        try:
            if kind < .4:
                os.chmod(path, rng.choice(_MODES))
            elif kind < .6:
                os.chown(path, rng.choice((0, 65534)), rng.choice((0, 65534)))
            elif os.path.isfile(path):
                os.unlink(path)
                if kind < .8:
                    os.mkfifo(path)
                elif kind < .9:
                    with socket.socket(socket.AF_UNIX) as sock:
                        sock.bind(path)
                else:
                    os.mkdir(path)
        except OSError:
            pass  # a socket path too long to bind, a name gone with its directory


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="changes owners, and asks as another uid")
def test_native_and_python_checks_agree_on_modes_owners_and_kinds(
        world_tmp: Path, check: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """review27: the differential test above, with modes, owners and kinds changed between
    the look and its check (a directory opened to all or closed to the caller since, a name
    given to another uid in a directory open to all, a file turned FIFO, socket or
    directory), looked at and checked as root or as uid 65534 (the system daemon's caller,
    ``acting_as``, in one thread as there): the same answer every time."""
    if check == "python":
        pytest.skip("compares both in one run")
    native = _fslook._native
    nobody = Identity(65534, 65534, ())
    seen: set[bool] = set()
    failures: list[int] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        root = os.path.realpath(world_tmp / f"m{seed}")
        os.mkdir(root)
        os.chmod(root, 0o755)  # noqa: S103 - searchable by uid 65534, who looks here
        _grow(root, rng)
        _unsettle(root, rng)
        who = nobody if seed % 2 else None
        with acting_as(who):
            look = FsLook()
            for _ in range(rng.randint(1, 10)):
                path = os.path.join(root, *(rng.choice(_ODD) for _ in range(rng.randint(1, 5))))
                rng.choice((look.realpath, look.exists, look.lexists, look.isdir))(path)
        if rng.random() < .7:
            _unsettle(root, rng)
        answers = []
        with acting_as(who):
            for way in (native, lambda: None):
                monkeypatch.setattr(_fslook, "_native", way)
                answers.append(look.unchanged())
        if answers[0] != answers[1]:
            failures.append(seed)
        seen.add(answers[0])

    def all_seeds() -> None:
        for seed in range(200):
            run(seed)

    thread = threading.Thread(target=all_seeds)
    thread.start()
    thread.join()
    assert failures == []
    assert seen == {True, False}
