"""The cgroup backends against the real kernel: what each writes, reads and removes.

The project's test host has a hybrid layout: v1 controllers, and a cgroup2 hierarchy at
/sys/fs/cgroup/unified with none of the controllers we use (they are bound to v1). The v2
backend's group mechanics (create, join, CPU accounting, cgroup.kill, removal, missing
limits reported) run there; its limits run only where a cgroup2 hierarchy offers them.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.cgroups import CgroupLimits, current_hierarchies
from nonod.cgroups._v1 import V1Backend, blkio_weight_for, shares_for
from nonod.cgroups._v2 import V2Backend

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups")
pytestmark = [ROOT_ONLY, pytest.mark.root]


def _tag() -> str:
    return "test-" + uuid.uuid4().hex[:8]


def _opened(backend: V1Backend | V2Backend | None, why: str
            ) -> Iterator[V1Backend | V2Backend]:
    if backend is None:
        pytest.skip(why)
    yield backend
    backend.remove_stale()
    for sub in backend.subtrees():
        if os.path.isdir(sub):
            os.rmdir(sub)


@pytest.fixture
def v1() -> Iterator[V1Backend | V2Backend]:
    yield from _opened(V1Backend.probe(current_hierarchies(), _tag()),
                       "no writable cgroup v1 memory or pids hierarchy")


@pytest.fixture
def v2() -> Iterator[V1Backend | V2Backend]:
    yield from _opened(V2Backend.probe(current_hierarchies(), _tag()),
                       "no writable cgroup2 hierarchy")


def _in_group(procs: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """A sleeping process, moved into the group's every hierarchy."""
    proc = subprocess.Popen(["/bin/sleep", "300"])
    for path in procs:
        Path(path).write_text(str(proc.pid))
    return proc


def test_v1_writes_each_limit_and_reads_the_usage(v1: V1Backend) -> None:
    group = v1.create("s1", CgroupLimits(memory=48 << 20, pids=20, cpus=0.5, cpu_weight=300))
    mem = next(Path(p).parent for p in group.procs if "/memory/" in p)
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
    memsw = mem / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        assert memsw.read_text().strip() == str(48 << 20)  # no swap on top
    pids = next(Path(p).parent for p in group.procs if "/pids/" in p)
    assert (pids / "pids.max").read_text().strip() == "20"
    cpu = next(Path(p).parent for p in group.procs if "/cpu/" in p)
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cpu / "cpu.shares").read_text().strip() == str(shares_for(300)) == "3072"
    proc = _in_group(group.procs)
    try:
        usage = group.usage()
        assert usage.pids == 1 and usage.memory_bytes >= 0
        assert group.oom_kills() == usage.oom_kills == 0  # the one file watch_oom reads
        group.remove()  # busy (the process is there): what is in it is killed
        assert proc.wait(timeout=10) == -9
    finally:
        group.kill()  # what is left in the group
        proc.wait(timeout=10)
    assert group.remove()  # once its processes have exited (zombies hold a v1 group)
    assert not any(Path(p).exists() for p in group.procs)


def test_killing_a_group_does_not_spin_on_what_it_killed(
        v1: V1Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed process stays listed in its group until it has run to its exit, which on a
    busy machine takes a while: the kill reads the groups again only while it finds
    processes it has not signalled yet, not twenty times over the same one. (The kernel
    lists the process only until it starts exiting; here the listing keeps it, as a slow
    exit would.)"""
    from nonod.cgroups import _files

    group = v1.create("s3", CgroupLimits())
    proc = _in_group(group.procs)
    reads: list[str] = []
    pids_in = _files.pids_in

    def lingering(directory: str) -> list[int]:
        reads.append(directory)
        return pids_in(directory) or [proc.pid]

    monkeypatch.setattr(_files, "pids_in", lingering)
    try:
        group.kill()
        assert proc.wait(timeout=10) == -9
        assert len(reads) <= 2 * len(set(group.dirs.values()))
    finally:
        proc.kill()
        proc.wait()
    monkeypatch.undo()
    assert group.remove()


def test_weights_map_onto_v1_scales() -> None:
    assert shares_for(100) == 1024 and shares_for(1) == 10 and shares_for(10_000) == 102_400
    assert blkio_weight_for(100) == 500 and blkio_weight_for(1) == 10
    assert blkio_weight_for(10_000) == 1000


def test_v2_group_mechanics_on_the_unified_hierarchy(v2: V2Backend) -> None:
    group = v2.create("s1", CgroupLimits(memory=32 << 20, pids=10))
    assert {m.limit for m in group.missing} == {"memory", "pids"} - v2.controllers
    busy = subprocess.Popen(["/usr/bin/python3", "-S", "-c", "while True: pass"])
    try:
        Path(group.procs[0]).write_text(str(busy.pid))
        assert Path(group.path, "cgroup.procs").read_text().split() == [str(busy.pid)]
        deadline = time.monotonic() + 60  # at once; a loaded host may run it late
        while group.usage().cpu_ns == 0:  # cpu.stat: accounting without the cpu controller
            assert time.monotonic() < deadline
            os.sched_yield()
        group.kill()  # cgroup.kill
        assert busy.wait(timeout=10) == -9
        assert group.remove()
        assert not Path(group.path).exists()
    finally:
        busy.kill()
        busy.wait()


def test_v2_limits_where_a_cgroup2_hierarchy_offers_them(v2: V2Backend) -> None:
    if not {"memory", "pids", "cpu"} <= v2.controllers:
        pytest.skip("this host's cgroup2 hierarchy offers no memory/pids/cpu controller (they "
                    f"are bound to cgroup v1 here; offered: {sorted(v2.controllers) or 'none'})")
    group = v2.create("s1", CgroupLimits(memory=48 << 20, pids=20, cpus=0.5, cpu_weight=300))
    base = Path(group.path)
    assert (base / "memory.max").read_text().strip() == str(48 << 20)
    assert (base / "memory.oom.group").read_text().strip() == "1"
    assert (base / "pids.max").read_text().strip() == "20"
    assert (base / "cpu.max").read_text().split() == ["50000", "100000"]
    assert (base / "cpu.weight").read_text().strip() == "300"
    assert group.remove()
