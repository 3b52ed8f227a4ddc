"""The subtrees of daemons that are gone, against the real kernel (``nonod.cgroups._sweep``).

A daemon killed with SIGKILL leaves ``nono-<tag>`` behind with a group per session and warm
launcher. The next daemon started beside it clears what no running daemon holds: here in a
group of our own in a v1 hierarchy, with one subtree of each kind the sweep must tell apart.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.cgroups import current_hierarchies
from nonod.cgroups._sweep import hold, release, sweep
from nonod.sessions._limits import SessionCgroups

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups")
pytestmark = [ROOT_ONLY, pytest.mark.root]

LONG_AGO = 1_000_000_000.0  # 2001: older than any age the sweep waits for


def _tag() -> str:
    return "nono-" + uuid.uuid4().hex[:12]


@pytest.fixture
def parent() -> Iterator[Path]:
    """A fresh group in our v1 pids hierarchy, where the subtrees of the test's "daemons" go;
    removed with what is left in it."""
    found = [h for h in current_hierarchies() if h.version == 1 and "pids" in h.controllers
             and os.access(h.directory, os.W_OK)]
    if not found:
        pytest.skip("no writable cgroup v1 pids hierarchy")
    base = Path(found[0].directory) / f"sweep-test-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    yield base
    for root, _, _ in os.walk(base, topdown=False):
        for pid in Path(root, "cgroup.procs").read_text().split():
            Path(found[0].directory, "cgroup.procs").write_text(pid)
        os.rmdir(root)


def _groups(subtree: Path, *names: str, old: bool = True) -> None:
    """Make ``subtree`` and ``names`` below it (``a/b``: nested), dated long ago if ``old``."""
    made = [subtree, *(subtree / name for name in names)]
    for directory in made:
        directory.mkdir(exist_ok=True)
    if old:
        for directory in reversed(made):
            os.utime(directory, (LONG_AGO, LONG_AGO))


def test_the_sweep_clears_what_no_running_daemon_holds(parent: Path) -> None:
    ours, dead, held, busy, young = (parent / _tag() for _ in range(5))
    _groups(ours, "s1")
    _groups(dead, "warm-0a1b2c3d4e5f", "warm-0a1b2c3d4e60", "agent", "agent/tool")
    _groups(held, "warm-0a1b2c3d4e5f")
    _groups(busy, "s1", "s2")
    _groups(young, "warm-0a1b2c3d4e5f", old=False)
    other = parent / "not-a-daemon"
    _groups(other, "g")
    sleeper = subprocess.Popen(["/bin/sleep", "300"])
    (busy / "s2" / "cgroup.procs").write_text(str(sleeper.pid))
    fds = hold(lambda: [str(held)])  # a running daemon's (another open file: the lock excludes us)
    try:
        removed = sweep([str(ours)])
    finally:
        release(fds)
        sleeper.kill()
        sleeper.wait()

    assert removed == [str(dead)]
    assert not dead.exists()
    assert (held / "warm-0a1b2c3d4e5f").is_dir()  # held: untouched
    assert not (busy / "s1").exists() and (busy / "s2").is_dir()  # a process in it stays
    assert (young / "warm-0a1b2c3d4e5f").is_dir()  # made just now: maybe not joined yet
    assert (ours / "s1").is_dir() and (other / "g").is_dir()


def test_a_running_daemon_holds_its_subtree_until_it_closes(tmp_path: Path) -> None:
    cgroups = SessionCgroups.open(tmp_path)
    if cgroups.backend is None:
        pytest.skip(cgroups.why)
    subtrees = cgroups.backend.subtrees()
    try:
        assert all(os.path.isdir(sub) for sub in subtrees)  # made at start, to be held
        for sub in subtrees:
            os.utime(sub, (LONG_AGO, LONG_AGO))
        neighbour = [os.path.join(os.path.dirname(sub), _tag()) for sub in subtrees]

        removed = sweep(neighbour)  # another daemon's sweep leaves ours

        assert not set(removed) & set(subtrees)
        assert all(os.path.isdir(sub) for sub in subtrees)
    finally:
        cgroups.close()
    assert not any(os.path.isdir(sub) for sub in subtrees)


def test_a_subtree_a_sweep_removed_under_a_starting_daemon_is_made_again_and_held(
        parent: Path) -> None:
    """Between making (or finding) its subtree and locking it, a starting daemon may lose it
    to another daemon's sweep (its predecessor's, old enough): it makes it again."""
    subtree = parent / _tag()
    made: list[int] = []

    def prepare() -> list[str]:
        if made:  # the first time, it is gone already
            subtree.mkdir()
        made.append(1)
        return [str(subtree)]

    fds = hold(prepare)
    try:
        assert len(made) == 2 and len(fds) == 1
        assert os.fstat(fds[0]).st_ino == subtree.stat().st_ino
        assert sweep([str(parent / _tag())], min_age=0) == []  # held
    finally:
        release(fds)
