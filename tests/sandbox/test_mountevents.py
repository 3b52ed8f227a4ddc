"""The kept plan's look at the mount table: read again only when the kernel says it changed
(``_mountevents``), and then always (mounts here are real, in the test's mount namespace)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import _mounts
from nonod.sandbox._mountevents import MountEvents

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    point = tmp_path / "work" / "bpf"
    point.mkdir(parents=True)
    yield point
    subprocess.run(["umount", str(point)], check=False, capture_output=True)


def _mount_bpf(point: Path) -> None:
    subprocess.run(["mount", "-t", "bpf", "none", str(point)], check=True)


def test_an_unchanged_mount_table_is_not_read_again(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept plan's second lookup asks the kernel whether the table changed (one poll)
    instead of reading and parsing ``/proc/self/mountinfo`` (before: at every launch)."""
    (tmp_path / "work").mkdir()
    policy = ResolvedPolicy(name="t", grants=(Grant(path=str(tmp_path / "work"),
                                                    access=Access.READWRITE),), denials=())
    first = _mounts.compile_mounts(policy, home=str(tmp_path / "nohome"))
    reads: list[int] = []
    real = _mounts._read_mountinfo

    def counted() -> str:
        reads.append(1)
        return real()

    monkeypatch.setattr(_mounts, "_read_mountinfo", counted)
    assert _mounts.compile_mounts(policy, home=str(tmp_path / "nohome")) is first
    assert reads == []


@pytest.mark.root
@needs_root
def test_a_kernel_file_system_mounted_below_a_kept_plans_grant_makes_a_new_plan(
        tmp_path: Path, mount_point: Path) -> None:
    """The kept plan is given again only while the mount table is as it was: a bpf file
    system mounted below the grant is masked at the next launch, and no longer once it is
    unmounted."""
    policy = ResolvedPolicy(name="t", grants=(Grant(path=str(tmp_path / "work"),
                                                    access=Access.READWRITE),), denials=())

    def plan() -> _mounts.MountPlan:
        return _mounts.compile_mounts(policy, home=str(tmp_path / "nohome"))

    first = plan()
    assert plan() is first and str(mount_point) not in first.masked
    _mount_bpf(mount_point)
    mounted = plan()
    assert mounted is not first and str(mount_point) in mounted.masked
    assert plan() is mounted
    subprocess.run(["umount", str(mount_point)], check=True)
    assert str(mount_point) not in plan().masked


@pytest.mark.root
@needs_root
def test_a_forked_child_does_not_take_its_parents_change(mount_point: Path) -> None:
    """The count of changes is kept in the open file, which a forked child shares: a child
    that asks opens its own, so the parent still hears of a change the child saw first."""
    events = MountEvents()
    assert events.changed() is True  # the first ask: nothing known yet
    assert events.changed() is False
    _mount_bpf(mount_point)
    pid = os.fork()
    if pid == 0:  # the child: asks (a new descriptor: "changed"), and asks again
        os._exit(0 if events.changed() and not events.changed() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert events.changed() is True
    assert events.changed() is False
    subprocess.run(["umount", str(mount_point)], check=True)
    assert events.changed() is True
