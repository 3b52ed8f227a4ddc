"""Adversarial review of the kept cgroups (branch `daemonpath`): a group made for a launch
that went warm is kept, renamed spare-..., for a later launch with the same limits. It must
carry nothing into that session: no process, no usage, no failure count, no frozen state,
and never another set of limits."""

from __future__ import annotations

import os
from pathlib import Path

from nonoctl.client import Client
from nonod.cgroups import open_backend

from .conftest import DaemonThread
from .test_resource_limits import client, launch, profile  # noqa: F401 - fixtures

MIB = 1 << 20


def _group_of(pid: int, controller: str) -> str:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return next(line.split(":", 2)[2] for line in lines
                if controller in line.split(":", 2)[1].split(","))


def _read(path: str) -> str:
    return Path(path).read_text().strip()


def test_kept_groups_carry_nothing_into_the_next_session(
        daemon_thread: DaemonThread, client: Client, profile: Path,  # noqa: F811
        short_tmp: Path) -> None:
    backend, _ = open_backend(str(daemon_thread.state_dir))
    assert backend is not None
    subtrees = backend.subtrees()
    memory = next(sub for sub in subtrees if sub.endswith("/memory") or "/memory/" in sub)
    # Warm launches with the same limits leave spares behind; each session then ends.
    first = [launch(client, profile, short_tmp, ["/bin/sleep", "60"], memory=64 * MIB,
                    max_processes=30) for _ in range(6)]
    for session in first:
        client.stop(session.id, force=True)
    spares = [g for g in os.listdir(memory) if g.startswith("spare-")]
    assert spares, os.listdir(memory)
    for spare in spares:
        for subtree in subtrees:
            group = os.path.join(subtree, spare)
            if not os.path.isdir(group):
                continue
            assert _read(os.path.join(group, "cgroup.procs")) == "", group
            if subtree == memory:
                assert int(_read(os.path.join(group, "memory.limit_in_bytes"))) == 64 * MIB
                assert int(_read(os.path.join(group, "memory.max_usage_in_bytes"))) == 0
                assert int(_read(os.path.join(group, "memory.failcnt"))) == 0
            if os.path.exists(os.path.join(group, "pids.max")):
                assert _read(os.path.join(group, "pids.max")) == "32"
            if os.path.exists(os.path.join(group, "freezer.state")):
                assert _read(os.path.join(group, "freezer.state")) == "THAWED"
    # Sessions with other limits never get those groups; each session's group holds only
    # its own processes and has its own limits.
    later = [launch(client, profile, short_tmp, ["/bin/sleep", "60"], memory=memory_,
                    max_processes=30) for memory_ in (96 * MIB, 64 * MIB, 96 * MIB, 64 * MIB)]
    for session, memory_ in zip(later, (96, 64, 96, 64), strict=True):
        assert session.pid
        group = os.path.join(memory, _group_of(session.pid, "memory").rsplit("/", 1)[1])
        assert int(_read(os.path.join(group, "memory.limit_in_bytes"))) == memory_ * MIB
        assert int(_read(os.path.join(group, "memory.failcnt"))) == 0
        pids = {int(pid) for pid in _read(os.path.join(group, "cgroup.procs")).split()}
        others = {s.pid for s in later if s is not session}
        assert session.pid in pids and not pids & others, (group, pids)
    for session in later:
        client.stop(session.id, force=True)
