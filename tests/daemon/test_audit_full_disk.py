"""Nothing runs unaudited, even on a full disk: with the state directory on a small tmpfs, a
launch whose first audit record cannot be made durable never starts its program; a live
session whose audit writes fail is stopped, and its file is sealed as truncated once there is
room again, so that ``audit verify`` passes and says what happened."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.audit import verify_session_file

from .conftest import DaemonThread
from .test_cli import CLI, cli_env

pytestmark = pytest.mark.root

PROFILE = {"meta": {"name": "fulldisk"}, "workdir": {"access": "readwrite"},
           "groups": {"include": ["python_runtime"]}}


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, chunk)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)
    return filler


def _audit_files(state: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in (state / "sessions").glob("*/audit.ndjson")}


def test_full_state_dir_refuses_the_launch_and_stops_a_live_session(short_tmp: Path) -> None:
    with small_tmpfs(short_tmp / "state") as state:
        daemon = DaemonThread(short_tmp).start()
        try:
            run = CLI(cli_env(daemon.socket, short_tmp), short_tmp)
            profile = short_tmp / "p.json"
            profile.write_text(json.dumps(PROFILE))
            marker = short_tmp / "ran"

            # 1. Full before the launch: refused, and the program never ran.
            filler = fill(state)
            refused = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                          "/usr/bin/python3", "-S", "-c",
                          f"open({str(marker)!r}, 'w').write('x'); print('RAN')")
            assert refused.returncode != 0
            assert "RAN" not in refused.stdout
            assert not marker.exists()
            assert "audit" in refused.stderr, refused.stderr
            filler.unlink()

            # 2. Full while it runs: the session is stopped (it cannot be audited any more).
            net_profile = short_tmp / "net.json"
            net_profile.write_text(json.dumps({**PROFILE, "network": {
                "allow_domain": ["api.github.com"]}}))
            started = run("launch", "-d", "--json", "--profile", str(net_profile),
                          "--allow-cwd", "--", "/usr/bin/python3", "-S", "-c",
                          "import os, urllib.request\n"
                          "while True:\n"
                          "    try: urllib.request.urlopen('http://evil.example/', timeout=2)\n"
                          "    except Exception: pass\n")
            assert started.returncode == 0, started.stderr
            session_id = json.loads(started.stdout)["id"]
            filler = fill(state)
            waited = run("wait", session_id)
            assert waited.returncode != 0
            inspect = json.loads(run("inspect", "--json", session_id).stdout)
            assert inspect["state"] == "exited"
            assert inspect["reason"] == "error", inspect
            path = _audit_files(state)[session_id]
            kinds = [json.loads(line)["event"]["type"]
                     for line in path.read_bytes().splitlines() if line.endswith(b"}")]
            assert "seal" not in kinds

            # 3. Room again: the next session's end seals the truncated file; it verifies
            #    and says what happened.
            filler.unlink()
            done = run("launch", "--profile", str(profile), "--allow-cwd", "--", "/bin/true")
            assert done.returncode == 0, done.stderr
            verify_session_file(path)
            last = [json.loads(line)["event"] for line in path.read_text().splitlines()]
            ended = [e for e in last if e["type"] == "session_ended"]
            assert ended and ended[-1]["reason"] == "error"
            assert "truncated" in ended[-1]["detail"]
        finally:
            daemon.stop()
