"""A kept plan is never given for a host that changed between two launches (branch
``daemon11``): the kept mount plan's host check leaves out the questions whose answers the
others imply (``_mounts._implied``), and each one left out is shown to be seen changed
through the question that implies it; then whole plans (``build_plan``) made before and
after a rename, a symbolic link swapped, and a hard link added."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, _mounts
from nonod.sandbox._mounts import LINKED, MASK_DIR, MASK_FILE, _Look
from nonod.sandbox._plan import build_plan

NATIVE = _mounts._native_kinds() is not None


@pytest.fixture(autouse=True, params=["libnonolooks", "python"])
def asker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test with the file types asked by ``libnonolooks.so`` (built by ``make venv``),
    then by Python."""
    if request.param == "python":
        monkeypatch.setattr(_mounts, "_no_native", [True])
    elif not NATIVE:
        pytest.skip("libnonolooks.so is not built (make venv)")
    monkeypatch.setattr(_mounts, "_plans", type(_mounts._plans)())  # no plan kept before
    yield request.param


def _asked(look: _Look) -> int:
    """How many file types ``look.unchanged()`` asks again (after its first call)."""
    assert look.unchanged()
    assert look._checks is not None
    kinds, _, native = look._checks
    assert (native is not None) == (_mounts._no_native == [])
    assert native is None or native.n == len(kinds)
    return len(kinds)


def test_a_stat_left_out_is_seen_through_its_lstat(tmp_path: Path) -> None:
    """``stat`` of a file ``lstat`` found (not a link) is left out: the file replaced by a
    link to a directory changes the ``lstat``."""
    (tmp_path / "f").write_text("")
    (tmp_path / "d").mkdir()
    look = _Look()
    assert look.lexists(str(tmp_path / "f")) and not look.isdir(str(tmp_path / "f"))
    assert _asked(look) == 1
    (tmp_path / "f").unlink()
    (tmp_path / "f").symlink_to(tmp_path / "d")
    assert not look.unchanged()


def test_a_stat_of_a_link_is_asked(tmp_path: Path) -> None:
    """A link's ``stat`` is asked itself: its target swapped changes only that."""
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    (tmp_path / "l").symlink_to(tmp_path / "d")
    look = _Look()
    assert look.islink(str(tmp_path / "l")) and look.isdir(str(tmp_path / "l"))
    assert _asked(look) == 2
    (tmp_path / "l").unlink()
    (tmp_path / "l").symlink_to(tmp_path / "f")
    assert not look.unchanged()


def test_what_is_below_an_absent_directory_is_seen_through_it(tmp_path: Path) -> None:
    """Names below an absent one are left out; made (rename of a tree into its place), the
    absent one's answer changes."""
    a = tmp_path / "a"
    look = _Look()
    assert not look.lexists(str(a))
    assert not look.exists(str(a / "b")) and not look.lexists(str(a / "b" / "c"))
    assert _asked(look) == 1
    (tmp_path / "new" / "b" / "c").mkdir(parents=True)
    (tmp_path / "new").rename(a)
    assert not look.unchanged()


def test_what_is_below_a_file_is_seen_through_it(tmp_path: Path) -> None:
    """Below a file nothing is found (``ENOTDIR``); the file replaced by a directory holding
    the name changes the file's answer."""
    g = tmp_path / "g"
    g.write_text("")
    look = _Look()
    assert look.isfile(str(g)) and not look.lexists(str(g / "x"))
    assert _asked(look) == 1
    g.unlink()
    (g / "x").mkdir(parents=True)
    assert not look.unchanged()


def test_what_is_below_a_link_is_asked(tmp_path: Path) -> None:
    """Below a dangling link the walk follows it: nothing is left out by the link's
    ``lstat``, and the link's target made with the name is seen (the link's own answer
    unchanged). Its ``stat`` asked too (nothing there) does leave the name out, and sees the
    target made."""
    for stat_too in (False, True):
        link = tmp_path / f"l{stat_too}"
        link.symlink_to(tmp_path / f"nowhere{stat_too}")
        look = _Look()
        assert look.islink(str(link)) and not look.lexists(str(link / "x"))
        if stat_too:
            assert not look.exists(str(link))
        assert _asked(look) == 2
        (tmp_path / f"nowhere{stat_too}" / "x").mkdir(parents=True)
        assert not look.unchanged()


def test_dot_dot_paths_are_asked(tmp_path: Path) -> None:
    """A path that is not plain (``..``) is not left out by its prefixes (asked again
    itself: the kernel walks ``absent`` before its ``..``)."""
    (tmp_path / "d").mkdir()
    look = _Look()
    assert not look.lexists(str(tmp_path / "absent"))
    assert not look.lexists(str(tmp_path / "absent" / ".." / "d" / "x"))
    assert _asked(look) == 2
    (tmp_path / "d" / "x").write_text("")
    assert look.unchanged()  # still not found: the walk stops at ``absent``


def _policy(work: Path, *denied: Path) -> ResolvedPolicy:
    reads = [Grant(path=p, access=Access.READ) for p in ("/usr", "/etc", "/lib", "/lib64",
                                                         "/bin")]
    return ResolvedPolicy(name="kept", grants=(*reads, Grant(path=str(work),
                                                             access=Access.READWRITE)),
                          denials=tuple(Denial(path=str(d)) for d in denied))


def _ops(policy: ResolvedPolicy, work: Path, kinds: set[int]) -> dict[str, bool]:
    """The plan's operations of ``kinds``: target -> whether it was absent at the launch."""
    plan, _ = build_plan(policy, LaunchRequest(argv=("/bin/true",), cwd=str(work), env=()))
    return {op.target: op.absent for op in plan.mounts if op.kind in kinds}


def _targets(policy: ResolvedPolicy, work: Path, kinds: set[int]) -> set[str]:
    return set(_ops(policy, work, kinds))


def test_a_denied_name_renamed_into_place_between_two_launches_is_masked(
        tmp_path: Path) -> None:
    """Absent at the first launch (masked as absent: the view guard applies it if the host
    makes it), renamed into place before the second: masked as what is there."""
    work = tmp_path / "work"
    (work / "made").mkdir(parents=True)
    policy = _policy(work, work / "secret")
    masks = {MASK_DIR, MASK_FILE}
    secret = str(work / "secret")
    assert _ops(policy, work, masks)[secret] is True
    assert _ops(policy, work, masks)[secret] is True  # kept
    (work / "made").rename(work / "secret")
    assert _ops(policy, work, masks)[secret] is False


def test_a_link_swapped_between_two_launches_moves_the_mask(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for d in ("sub", "elsewhere"):
        (work / d).mkdir(parents=True)
        (work / d / "key").write_text("k")
    (work / "link").symlink_to(work / "sub")
    policy = _policy(work, work / "link" / "key")
    masks = {MASK_DIR, MASK_FILE}
    first = _targets(policy, work, masks)
    assert str(work / "sub" / "key") in first and _targets(policy, work, masks) == first
    (work / "swap").symlink_to(work / "elsewhere")
    (work / "swap").rename(work / "link")
    second = _targets(policy, work, masks)
    assert str(work / "elsewhere" / "key") in second
    assert str(work / "sub" / "key") not in second


def test_a_hard_link_added_between_two_launches_is_read_only(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "outside").write_text("host")
    policy = _policy(work)
    assert _targets(policy, work, {LINKED}) == set()
    assert _targets(policy, work, {LINKED}) == set()  # kept
    os.link(tmp_path / "outside", work / "linked")
    assert _targets(policy, work, {LINKED}) == {str(work / "linked")}
