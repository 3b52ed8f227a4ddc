"""The folding rule (nonod/learn/_fold.py), on observations made by hand over a real tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonod.learn import FOLD_MIN_ENTRIES
from nonod.learn._fold import Coverage, Folded, fold
from nonod.learn._strace import Call
from nonod.learn._trace import Observations, Use
from nonod.policy import Access
from nonod.profiles import ResolveContext

OK = Call(pid=1, name="x", args=(), result="0")


def refused(errno_name: str) -> Call:
    return Call(pid=1, name="x", args=(), result=f"-1 {errno_name} (refused)")


@pytest.fixture
def tree(scratch: Path) -> Path:
    # Not under /tmp: the base groups cover /tmp (each session's private one).
    tmp_path = scratch
    for d in ("home/.ssh", "home/.cache/tool", "home/.config/app", "work/src", "srv/data/many",
              "srv/data/few", "srv/listed", "srv/cache", "srv/mixed", "bin"):
        (tmp_path / d).mkdir(parents=True)
    for f in ("home/.ssh/id_rsa", "home/.config/app/a.json", "work/src/main.py",
              "srv/data/many/1", "srv/data/many/2", "srv/data/many/3", "srv/data/few/1",
              "srv/data/few/2", "srv/mixed/read-me", "home/notes.txt"):
        (tmp_path / f).write_text("x")
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "srv" / "link").symlink_to(tmp_path / "srv" / "data" / "few" / "1")
    return tmp_path


def coverage(tree: Path, *, workdir: str = "work") -> Coverage:
    ctx = ResolveContext.for_user(home=str(tree / "home"), workdir=str(tree / workdir),
                                  uid=os.getuid(), environ={})
    return Coverage.build(ctx)


def run(tree: Path, uses: list[tuple[str, Use, Call]], *, workdir: str = "work",
        ignore: tuple[str, ...] = ()) -> Folded:
    obs = Observations()
    for path, use, call in uses:
        obs.record(path if path.startswith("/") else str(tree / path), use, call)
    return fold(obs, coverage(tree, workdir=workdir), ignore=ignore)


def grants(folded: Folded) -> dict[str, tuple[Access, bool]]:
    return {g.path: (g.access, g.is_file) for g in folded.grants}


def test_denied_paths_are_reported_never_granted(tree: Path) -> None:
    folded = run(tree, [("home/.ssh/id_rsa", Use.READ, refused("EACCES")),
                        ("home/.ssh", Use.LIST, refused("EACCES")),
                        ("home/.netrc", Use.READ, refused("ENOENT"))])
    assert folded.grants == ()
    touched = {d.path: d for d in folded.denied_touched}
    assert set(touched) == {str(tree / "home/.ssh"), str(tree / "home/.ssh/id_rsa"),
                            str(tree / "home/.netrc")}
    assert touched[str(tree / "home/.ssh/id_rsa")].denied_by == "group:deny_credentials"
    assert touched[str(tree / "home/.ssh")].uses == ("list",)


def test_probes_and_lookups_need_nothing(tree: Path) -> None:
    folded = run(tree, [("srv/nothing-here", Use.READ, refused("ENOENT")),
                        ("srv/data/few/1", Use.STAT, OK),
                        ("srv/data", Use.STAT, OK)])
    assert folded.grants == () and folded.skipped == ()


def test_files_stay_files_below_the_threshold(tree: Path) -> None:
    assert FOLD_MIN_ENTRIES == 3
    folded = run(tree, [("srv/data/few/1", Use.READ, OK), ("srv/data/few/2", Use.READ, OK)])
    assert grants(folded) == {str(tree / "srv/data/few/1"): (Access.READ, True),
                              str(tree / "srv/data/few/2"): (Access.READ, True)}


def test_three_entries_make_a_directory_grant(tree: Path) -> None:
    folded = run(tree, [(f"srv/data/many/{i}", Use.READ, OK) for i in (1, 2, 3)])
    assert grants(folded) == {str(tree / "srv/data/many"): (Access.READ, False)}
    assert folded.grants[0].why == "3 entries used"


def test_a_listing_makes_a_directory_grant_and_takes_in_what_is_below(tree: Path) -> None:
    folded = run(tree, [("srv/listed", Use.LIST, OK), ("srv/mixed", Use.LIST, OK),
                        ("srv/mixed/read-me", Use.READ | Use.WRITE, OK)])
    assert grants(folded) == {str(tree / "srv/listed"): (Access.READ, False),
                              str(tree / "srv/mixed"): (Access.READWRITE, False)}


def test_creating_entries_needs_the_directory(tree: Path) -> None:
    folded = run(tree, [
        ("srv/cache/new", Use.CREATE, OK),  # mkdir of a directory that is gone again
        ("srv/cache/new/tmp.bin", Use.WRITE | Use.CREATE | Use.REMOVE, OK),
    ])
    assert grants(folded) == {str(tree / "srv/cache"): (Access.WRITE, False)}


def test_the_workdir_folds_into_workdir_access(tree: Path) -> None:
    folded = run(tree, [("work/src/main.py", Use.READ, OK), ("work/out", Use.CREATE, OK)])
    assert folded.grants == ()
    assert folded.workdir_access is Access.READWRITE
    assert {c.covered_by for c in folded.covered} == {"workdir"}


def test_an_untouched_workdir_is_still_readable(tree: Path) -> None:
    folded = run(tree, [("srv/data/few/1", Use.READ, OK)])
    assert folded.workdir_access is Access.READ


def test_groups_cover_what_they_grant(tree: Path) -> None:
    folded = run(tree, [("/usr/lib/os-release", Use.READ, OK),
                        ("home/.cache/tool/db", Use.WRITE | Use.CREATE, OK),
                        ("/proc/self/status", Use.READ, OK),
                        ("/dev/null", Use.WRITE, OK),
                        ("/dev/fd/3", Use.READ, OK)])
    assert folded.grants == ()
    assert folded.groups == ("user_caches_linux",)
    by = {c.path: c.covered_by for c in folded.covered}
    assert by[os.path.realpath("/usr/lib/os-release")] == "system_read_linux"
    assert by[str(tree / "home/.cache/tool")] == "user_caches_linux"
    # the sandbox's own /proc and /dev, whatever the groups say
    assert by["/proc/self/status"] == by["/dev/null"] == by["/dev/fd/3"] == "sandbox"


def test_never_up_to_home(tree: Path) -> None:
    folded = run(tree, [("home", Use.LIST, OK),
                        ("home/notes.txt", Use.READ | Use.WRITE | Use.CREATE, OK),
                        ("home/.config/app/a.json", Use.READ, OK),
                        ("home/.lesshst", Use.READ, OK),
                        ("home/.viminfo", Use.READ, OK)])
    assert grants(folded) == {str(tree / "home/notes.txt"): (Access.READWRITE, True),
                              str(tree / "home/.config/app/a.json"): (Access.READ, True)}
    reasons = " ".join(s.reason for s in folded.skipped if s.path == str(tree / "home"))
    assert "listed" in reasons and "creates or removes entries" in reasons


def test_a_workdir_at_home_is_not_used(tree: Path) -> None:
    folded = run(tree, [("home/.config/app/a.json", Use.READ, OK)], workdir="home")
    assert folded.workdir_access is None
    assert grants(folded) == {str(tree / "home/.config/app/a.json"): (Access.READ, True)}


def test_scripts_bring_their_interpreter(tree: Path) -> None:
    folded = run(tree, [("bin/tool", Use.EXEC | Use.READ, OK)])
    assert grants(folded) == {str(tree / "bin/tool"): (Access.READ, True)}
    assert any(c.path == os.path.realpath("/bin/sh") for c in folded.covered)


def test_symlinks_are_resolved_and_merged(tree: Path) -> None:
    folded = run(tree, [("srv/link", Use.READ, OK), ("srv/data/few/1", Use.WRITE, OK)])
    assert grants(folded) == {str(tree / "srv/data/few/1"): (Access.READWRITE, True)}


def test_refused_writes_are_reported(tree: Path) -> None:
    folded = run(tree, [("/usr/share/x", Use.WRITE | Use.CREATE, refused("EROFS"))])
    assert folded.grants == ()
    assert [s.reason for s in folded.skipped] == ["writing was refused while learning (EROFS)"]


def test_learns_own_files_are_ignored(tree: Path) -> None:
    folded = run(tree, [("srv/cache/trace", Use.WRITE, OK)],
                 ignore=(str(tree / "srv/cache"),))
    assert folded.grants == () and folded.covered == ()


def test_paths_a_profile_cannot_spell_are_left_out(tree: Path) -> None:
    (tree / "srv" / "$price").write_text("1")
    folded = run(tree, [("srv/$price", Use.READ, OK)])
    assert folded.grants == ()
    assert folded.skipped[0].path == str(tree / "srv/$price")
    assert "variable" in folded.skipped[0].reason
