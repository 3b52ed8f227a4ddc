"""Red team, kernel interfaces inside granted directories: binds are recursive, so a grant
brings every mount below it into the view. The base group grants ``/sys``, under which hosts
mount debugfs, tracefs, securityfs, bpffs, pstore (crash dumps), efivarfs; a root session read
them (bpffs's ``progs.debug`` lists every BPF program of the host). Now each mount of a kernel
file system type below a grant is masked (``EACCES``), wherever it is: the test mounts a bpffs
inside the session's working directory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.sandbox._mounts import kernel_mounts
from tests.daemon.test_cli import CLI

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")]

READ = r'''
import os, sys
for path in sys.argv[1:]:
    try:
        print(path, sorted(os.listdir(path)))
    except OSError as exc:
        print(path, type(exc).__name__)
'''


@pytest.fixture
def bpffs(short_tmp: Path) -> Iterator[Path]:
    point = short_tmp / "bpf"
    point.mkdir()
    subprocess.run(["mount", "-t", "bpf", "none", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


def test_a_kernel_file_system_below_a_grant_is_masked(run: CLI, short_tmp: Path,
                                                      bpffs: Path) -> None:
    assert "progs.debug" in os.listdir(bpffs)  # what the host sees there
    (short_tmp / "read.py").write_text(READ)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "read.py", str(bpffs), "/sys/devices/system/cpu")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{bpffs} PermissionError"
    assert lines[1].startswith("/sys/devices/system/cpu [")  # sysfs stays readable


def test_mount_points_are_read_with_their_escapes() -> None:
    info = ("36 25 0:32 / /sys/kernel/debug rw,nosuid - debugfs debugfs rw\n"
            "37 25 0:33 / /srv/a\\040b rw shared:9 - tracefs tracefs rw\n"
            "38 25 0:34 / /home rw - ext4 /dev/sda1 rw\n")
    assert kernel_mounts(info) == ["/sys/kernel/debug", "/srv/a b"]
