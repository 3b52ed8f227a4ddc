"""Red team, a session running as uid 0 (a root user's daemon, or a system daemon that allows
root): capabilities dropped, but root *owns* the host's private configuration, so owner bits
let it read what only root may read in the system trees every session is granted: TLS private
keys (``/etc/ssl/private``), VPN keys, cluster admin configurations, keytabs. Now what others
may not read under ``/etc`` is kept from such a session; the world-readable rest is as it was.
Where the kernel can, by an idmapped mount (root shown as an id the session does not map, so
the kernel gives the session only the "other" bits); elsewhere by masks from a walk at launch.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.sandbox._mounts import ROOT_ONLY_IDMAP_ID, idmap_available
from tests.daemon.test_cli import CLI
from tests.redteam._programs import READ

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="a root session needs root")]

@pytest.fixture
def planted() -> Iterator[dict[str, Path]]:
    tag = f"nono-redteam-{secrets.token_hex(4)}"
    key = Path("/etc") / f"{tag}.key"
    private = Path("/etc") / f"{tag}.d"
    public = Path("/etc") / f"{tag}.pub"
    try:
        key.write_text("PRIVATE-KEY\n")
        key.chmod(0o600)
        private.mkdir(mode=0o700)
        (private / "admin.conf").write_text("CLUSTER-ADMIN\n")
        (private / "admin.conf").chmod(0o644)  # readable, but its directory is not
        public.write_text("PUBLIC\n")
        public.chmod(0o644)
        yield {"key": key, "inner": private / "admin.conf", "public": public}
    finally:
        key.unlink(missing_ok=True)
        public.unlink(missing_ok=True)
        shutil.rmtree(private, ignore_errors=True)


def test_a_root_session_reads_in_etc_only_what_everyone_may(
        run: CLI, short_tmp: Path, planted: dict[str, Path]) -> None:
    (short_tmp / "read.py").write_text(READ)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "read.py", str(planted["key"]), str(planted["inner"]), str(planted["public"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{planted['key']} PermissionError",
                                        f"{planted['inner']} PermissionError",
                                        f"{planted['public']} PUBLIC"]


STAT_READ = r'''
import os, sys
for path in sys.argv[1:]:
    try:
        owner = os.stat(path).st_uid
        print(path, owner, open(path).read().strip())
    except OSError as exc:
        print(path, owner, type(exc).__name__)
'''

needs_idmap = pytest.mark.skipif(not idmap_available(),
                                 reason="the kernel cannot idmap /etc here (the walk is used)")


@needs_idmap
def test_root_only_files_in_etc_are_the_kernels_refusal_under_the_idmap(
        run: CLI, short_tmp: Path, planted: dict[str, Path]) -> None:
    """The session sees /etc through the idmapped mount (root's files owned by an id it does
    not map, shown as the overflow id) and the kernel refuses it the root-only ones."""
    (short_tmp / "read.py").write_text(STAT_READ)
    shown = ROOT_ONLY_IDMAP_ID  # unmapped in the session too: the overflow id, 65534
    for _ in range(3):  # the first launch is cold, the next ones normally warm
        done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
                   "read.py", str(planted["key"]), str(planted["public"]))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{planted['key']} {shown} PermissionError",
                                            f"{planted['public']} {shown} PUBLIC"]


REREAD = r'''
import sys
path, go = sys.argv[1:]
def read():
    try:
        print(open(path).read().strip(), flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
read()
with open(go) as f:
    f.read()
read()
'''


@needs_idmap
def test_a_file_made_root_only_while_the_session_runs_is_refused_to_it(
        run: CLI, short_tmp: Path, planted: dict[str, Path]) -> None:
    """The walk judged each file once, at launch: one made root-only later stayed readable
    to the root session (its owner). The idmap is the kernel's check at every open."""
    (short_tmp / "reread.py").write_text(REREAD)
    go = short_tmp / "go"
    os.mkfifo(go)
    proc = run.popen("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
                     "reread.py", str(planted["public"]), str(go))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"PUBLIC\n"
        planted["public"].chmod(0o600)
        with open(go, "w") as f:
            f.write("go")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == b"PermissionError\n"


CONSOLE = r'''
import os
try:
    os.close(os.open("/dev/console", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
    print("OPEN")
except OSError as exc:
    print(type(exc).__name__)
'''


def test_a_root_session_cannot_read_the_hosts_console(run: CLI, short_tmp: Path) -> None:
    """/dev/console (root's, 0600) was bound from the host: a root session opened it and
    could read what is typed there and change its settings (tcsetattr needs no write)."""
    (short_tmp / "console.py").write_text(CONSOLE)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "console.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["FileNotFoundError"]


PROC = r'''
import sys
for path in sys.argv[1:]:
    try:
        open(path, "rb").read(1)
        print(path, "READ")
    except OSError as exc:
        print(path, type(exc).__name__)
'''


def test_a_root_session_reads_no_root_only_kernel_file_in_proc(run: CLI,
                                                               short_tmp: Path) -> None:
    """/proc/slabinfo, vmallocinfo, timer_list, kpageflags... are 0400 root: heap layout,
    kernel addresses and physical page state that exploits lean on. A root session's fresh
    procfs had them readable; world-readable ones stay."""
    root_only = sorted(str(p) for p in Path("/proc").iterdir()
                       if p.is_file() and not p.stat().st_mode & 0o004)
    assert "/proc/slabinfo" in root_only
    (short_tmp / "proc.py").write_text(PROC)
    done = run("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3", "-S",
               "proc.py", *root_only, "/proc/meminfo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "/proc/meminfo READ"
    assert [line for line in lines[:-1] if line.endswith(" READ")] == []
