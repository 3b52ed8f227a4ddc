"""Red team, sysfs in a session running as uid 0: the base group grants ``/sys`` read-only,
and sysfs holds thousands of files only root may read. A root daemon's session read kernel
heap state (``/sys/kernel/slab``, what ``/proc/slabinfo`` was masked for), the firmware's
ACPI tables, and read ``/sys/class/zram-control/hot_add``, which creates a zram block device
on the host at every read. Now a uid 0 session sees only the parts of sysfs programs tune
themselves by (CPUs, NUMA nodes, transparent huge pages); a session of another uid sees
``/sys`` as before (it is "other" on those files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.daemon.test_cli import CLI
from tests.redteam._programs import READ

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="a uid 0 session needs root")]

HOT_ADD = "/sys/class/zram-control/hot_add"
HIDDEN = [HOT_ADD, "/sys/kernel/slab", "/sys/firmware", "/sys/kernel/vmcoreinfo",
          "/sys/class", "/sys/module"]
KEPT = ["/sys/devices/system/cpu/online", "/sys/kernel/mm/transparent_hugepage/enabled"]


def _zram_devices() -> list[str]:
    return sorted(name for name in os.listdir("/sys/block") if name.startswith("zram"))


def test_a_root_session_sees_only_the_tuning_parts_of_sysfs(run: CLI, short_tmp: Path) -> None:
    (short_tmp / "read.py").write_text(READ)
    before = _zram_devices()
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "read.py", *HIDDEN, *[p for p in KEPT if os.path.exists(p)])
    assert done.returncode == 0, done.stderr
    answers = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert {path: answers[path] for path in HIDDEN} == dict.fromkeys(
        HIDDEN, "FileNotFoundError")
    for path in KEPT:
        if os.path.exists(path):
            assert answers[path] == Path(path).read_text().strip(), path
    assert _zram_devices() == before  # no device made on the host
