"""Session cgroups (``SessionCgroups``, v1), against the real kernel: a group made for a
launch that went warm is kept for the next launch with the same limits; one taken from the
kept ones and again left unused goes back as it is, without a rename on the event loop. An
ended session's group is removed once its last process left, killed if it does not."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from nonod.policy import ResolvedPolicy
from nonod.sessions._limits import SPARE_PREFIX, SessionCgroups, cgroup_limits, remove_group

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
              pytest.mark.root]


async def test_a_kept_group_left_unused_again_is_kept_under_its_name(tmp_path: Path) -> None:
    cgroups = SessionCgroups.open(tmp_path)
    if cgroups.backend is None or not cgroups.pool():
        cgroups.close()
        pytest.skip(cgroups.why or "no v1 hierarchies: launchers do not wait in groups")
    policy = ResolvedPolicy(name="fake", grants=(), denials=())
    limits = cgroup_limits(policy)[0]
    try:
        made, layers = await cgroups.make("s1", policy)
        assert made is not None and os.path.basename(made.path) == "s1"
        # s1 went warm (it runs in its launcher's group "w1"): its own group is kept, renamed.
        cgroups.adopt("w1", made, layers, limits)
        (kept,) = cgroups._spares[limits]
        name = os.path.basename(kept.path)
        assert name.startswith(SPARE_PREFIX) and not os.path.exists(made.path)
        dirs = sorted(kept.procs)

        again, layers = await cgroups.make("s2", policy)
        assert again is kept and cgroups._spares[limits] == []  # no mkdir
        cgroups.adopt("w2", again, layers, limits)  # s2 went warm too

        assert cgroups._spares[limits] == [kept]
        assert os.path.basename(kept.path) == name  # the same directories, not renamed
        assert sorted(kept.procs) == dirs and all(os.path.exists(p) for p in dirs)
    finally:
        cgroups.close()


def _join(pid: int, procs: tuple[str, ...]) -> None:
    for path in procs:
        Path(path).write_text(str(pid))


async def test_an_ended_sessions_group_goes_when_emptied_and_a_process_left_is_killed(
        tmp_path: Path) -> None:
    cgroups = SessionCgroups.open(tmp_path)
    if cgroups.backend is None:
        cgroups.close()
        pytest.skip(cgroups.why)
    policy = ResolvedPolicy(name="fake", grants=(), denials=())
    try:
        # A process still in the group (its launcher, exiting): the first try leaves it be.
        group, _ = await cgroups.make("s1", policy)
        assert group is not None
        leaving = subprocess.Popen(["sleep", "60"])
        _join(leaving.pid, group.procs)
        assert not group.remove(kill=False)
        assert leaving.poll() is None and all(os.path.exists(p) for p in group.procs)
        leaving.terminate()
        assert leaving.wait(10) == -signal.SIGTERM
        assert group.remove(kill=False)  # gone once it left: nothing listed, nothing killed
        assert not any(os.path.exists(os.path.dirname(p)) for p in group.procs)

        # One that does not leave is killed by the next try, and the group removed.
        group, _ = await cgroups.make("s2", policy)
        assert group is not None
        staying = subprocess.Popen(["sleep", "60"])
        _join(staying.pid, group.procs)
        await remove_group(group)
        assert staying.wait(10) == -signal.SIGKILL
        assert not any(os.path.exists(os.path.dirname(p)) for p in group.procs)
    finally:
        cgroups.close()
