"""Pure parts of resource limits: where the hierarchies are, sizes and durations, and how
flags, profile, defaults and ceilings make a session's effective limits."""

from __future__ import annotations

import pytest

from nonod import protocol as p
from nonod._limits import LimitExceeded, LimitSettings, effective
from nonod._units import format_size, parse_duration, parse_size
from nonod.cgroups import Hierarchy, hierarchies
from nonod.policy import Limits, ResolvedPolicy

HYBRID_MOUNTS = """\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
"""


def test_a_hybrid_layout_gives_a_group_per_v1_controller_and_the_unified_one() -> None:
    found = hierarchies(HYBRID_MOUNTS, HYBRID_SELF)
    assert Hierarchy(1, frozenset({"memory"}), "/sys/fs/cgroup/memory/process_api/abc") in found
    assert Hierarchy(1, frozenset({"cpu"}), "/sys/fs/cgroup/cpu") in found
    assert Hierarchy(1, frozenset({"cpuacct"}), "/sys/fs/cgroup/cpuacct") in found
    assert Hierarchy(2, frozenset(), "/sys/fs/cgroup/unified") in found
    assert not any("systemd" in h.directory for h in found)  # a named hierarchy: no controller


def test_pure_v2_and_combined_v1_controllers() -> None:
    v2 = hierarchies("40 1 0:33 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
                     "0::/system.slice/nonod.service\n")
    assert v2 == [Hierarchy(2, frozenset(), "/sys/fs/cgroup/system.slice/nonod.service")]
    combined = hierarchies(
        "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        "3:cpu,cpuacct:/user.slice\n")
    assert combined == [Hierarchy(1, frozenset({"cpu", "cpuacct"}),
                                  "/sys/fs/cgroup/cpu,cpuacct/user.slice")]
    # Inside a cgroup namespace the mount's root is the namespace's: paths are below it.
    nested = hierarchies("50 1 0:40 /ns /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/ns/x\n")
    assert nested == [Hierarchy(2, frozenset(), "/sys/fs/cgroup/x")]


@pytest.mark.parametrize(("text", "value"), [
    ("512M", 512 << 20), ("1G", 1 << 30), ("64k", 64 << 10), ("1.5G", 3 << 29),
    ("65536", 65536), ("2GiB", 2 << 30), (4096, 4096),
])
def test_sizes(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "12X", "-1", "1 G B"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_durations_and_formatting() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5") == 1.5
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("1 hour")
    assert format_size(512 << 20) == "512M" and format_size(1 << 30) == "1G"


POLICY = ResolvedPolicy(name="t", grants=(), denials=(), max_processes=4096,
                        limits=Limits(memory=256 << 20, cpus=2.0))


def test_flags_win_over_the_profile_and_defaults_fill_the_rest() -> None:
    settings = LimitSettings(defaults=Limits(memory=1 << 30, cpu_weight=50, wall_clock=60.0))
    got = effective(POLICY, p.LaunchOptions(memory=128 << 20, timeout=5.0), settings)
    assert got.limits == Limits(memory=128 << 20, cpus=2.0, cpu_weight=50, wall_clock=5.0)
    assert got.max_processes == 4096


def test_ceilings_refuse_more_and_fill_in_what_was_not_asked_for() -> None:
    settings = LimitSettings(ceilings=Limits(memory=512 << 20, cpus=1.0, max_processes=100))
    with pytest.raises(LimitExceeded, match=r"cpus 2 is above this daemon's ceiling 1") as exc:
        effective(POLICY, p.LaunchOptions(), settings)
    assert exc.value.code == "limits.exceeded"
    got = effective(POLICY, p.LaunchOptions(cpus=0.5), settings)
    assert got.limits == Limits(memory=256 << 20, cpus=0.5, max_processes=100)
    assert got.max_processes == 100
    with pytest.raises(LimitExceeded, match="max_processes 200"):
        effective(POLICY, p.LaunchOptions(cpus=0.5, max_processes=200), settings)


def test_profile_limits_parse_and_their_errors_name_the_key() -> None:
    import json

    from nonod.errors import ProfileError
    from nonod.profiles import parse_profile

    good = parse_profile(json.dumps({"nonod": {"max_processes": 64, "limits": {
        "memory": "512M", "cpus": 0.5, "cpu_weight": 300, "wall_clock": "1h"}}}).encode(), "p")
    assert good.nonod.limits.memory == "512M"
    with pytest.raises(ProfileError, match=r"\$\.nonod\.limits\.memory: `lots` is not a size"):
        parse_profile(b'{"nonod": {"limits": {"memory": "lots"}}}', "p.json")
    with pytest.raises(ProfileError, match=r"\$\.nonod\.limits"):
        parse_profile(b'{"nonod": {"limits": {"swap": "1G"}}}', "p.json")
    with pytest.raises(ProfileError, match="cpu_weight"):
        parse_profile(b'{"nonod": {"limits": {"cpu_weight": 0}}}', "p.json")


def test_a_memory_limit_below_one_mebibyte_is_refused_where_it_is_written() -> None:
    import subprocess
    import sys

    from nonod._config import ConfigError, parse_config
    from nonod.errors import ProfileError
    from nonod.profiles import parse_profile

    with pytest.raises(ProfileError, match=r"below the smallest memory limit"):
        parse_profile(b'{"nonod": {"limits": {"memory": "1K"}}}', "p.json")
    with pytest.raises(ConfigError, match=r"below the smallest memory limit"):
        parse_config('[limits]\nmemory = "1K"\n', source="nonod.toml")
    flag = subprocess.run([sys.executable, "-m", "nonoctl", "launch", "--memory", "1K", "--",
                           "/bin/true"], capture_output=True, text=True, check=False)
    assert flag.returncode == 2
    assert "below the smallest memory limit" in flag.stderr
