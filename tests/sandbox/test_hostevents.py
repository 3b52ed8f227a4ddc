"""The kept plan's look at the mount table and at the modes of ``/proc``'s top files: asked
again only when the kernel says they changed (``_hostevents``), and then always (mounts and
``chmod`` here are real)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import _mounts
from nonod.sandbox._hostevents import MountEvents, ProcTopEvents

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


def test_unchanged_modes_at_the_top_of_proc_are_not_asked_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A root session's kept plan asks which files at the top of ``/proc`` only root may
    read: once the answer is known, the next launch lists ``/proc`` (a module's files may
    come or go) and asks the kernel for mode changes, instead of an ``lstat`` per file."""
    first = _mounts._host_proc_root_only()
    asked: list[str] = []
    lstat = os.lstat

    def counted(path: str, *args: object, **kwargs: object) -> os.stat_result:
        asked.append(path)
        return lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_mounts.os, "lstat", counted)
    assert _mounts._host_proc_root_only() == first
    assert not [path for path in asked if path.startswith("/proc/")]


@pytest.mark.root
@needs_root
def test_a_mode_changed_at_the_top_of_proc_is_asked_again() -> None:
    """A file made root-only (by the host's root, after the daemon started) is in the next
    answer, and out of it again once its mode is back; a forked child's ask takes nothing
    from its parent's."""
    path = "/proc/version"  # world-readable; root-only for a moment here
    mode = os.lstat(path).st_mode & 0o7777
    events = ProcTopEvents()
    assert events.changed() is True  # the first ask: nothing known yet
    assert path not in _mounts._host_proc_root_only()
    try:
        os.chmod(path, 0o400)
        pid = os.fork()
        if pid == 0:  # the child: a queue of its own (its first ask says "changed")
            os._exit(0 if events.changed() and not events.changed() else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert events.changed() is True
        assert events.changed() is False
        assert path in _mounts._host_proc_root_only()
    finally:
        os.chmod(path, mode)
    assert path not in _mounts._host_proc_root_only()
