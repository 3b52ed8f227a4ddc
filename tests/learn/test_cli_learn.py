"""``nonoctl learn``: the command line runs a learn in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nonod.profiles import parse_profile

from .conftest import needs_tools

REPO = Path(__file__).resolve().parents[2]
PROGRAM = "import sys\nprint(open(sys.argv[1]).read().strip())\n"


def _nonoctl(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # As in scenario.environment: a home of its own, a runtime dir that does not exist.
    env = {"HOME": str(base / "home"), "PATH": "/usr/bin:/bin",
           "XDG_RUNTIME_DIR": str(base / "run"), "XDG_CONFIG_HOME": str(base / "config"),
           "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "nonoctl", "learn", "--timeout", "20", *args, "--",
         "/usr/bin/python3", "-S", "prog.py", str(base / "data" / "config.txt")],
        cwd=base / "work", env=env, capture_output=True, text=True, timeout=120, check=False)


def _setup(scratch: Path) -> Path:
    (scratch / "home").mkdir()
    work = scratch / "work"
    work.mkdir()
    (work / "prog.py").write_text(PROGRAM)
    (scratch / "data").mkdir()  # outside the working directory: a grant of its own
    (scratch / "data" / "config.txt").write_text("hello\n")
    return work


@needs_tools()
def test_learn_json(scratch: Path) -> None:
    work = _setup(scratch)
    done = _nonoctl(scratch, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    fs = data["filesystem"]
    assert str(scratch / "data" / "config.txt") in fs["read_file"], data
    assert data["nonod"]["workdir"] == str(work)
    assert "hello" in done.stderr  # the program's stdout goes to stderr with --json


@needs_tools()
def test_learn_output_profile(scratch: Path) -> None:
    work = _setup(scratch)
    done = _nonoctl(scratch, "--output", "p.json")
    assert done.returncode == 0, done.stderr
    assert "learned:" in done.stdout
    profile = parse_profile((work / "p.json").read_bytes(), "p.json")
    assert profile.meta.name == "p"


@needs_tools()
def test_learn_save_refuses_overwrite(scratch: Path) -> None:
    _setup(scratch)
    assert _nonoctl(scratch, "--save", "mine").returncode == 0
    saved = scratch / "config" / "nono" / "profiles" / "mine.json"
    assert saved.is_file() and (saved.parent.stat().st_mode & 0o777) == 0o700
    again = _nonoctl(scratch, "--save", "mine")
    assert again.returncode == 1 and "--force" in again.stderr


FETCH = r'''
import os, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler(
    {"http": os.environ["HTTP_PROXY"]}))
try:
    print("fetched", opener.open("http://api.learn.test:8080/x", timeout=20).read().decode())
except Exception as exc:
    print("failed", exc)
'''


@needs_tools()
def test_learn_uses_the_daemons_host_pins(scratch: Path) -> None:
    """A name that nonod.toml's `[network] resolve` pins to a local fake is reached while
    learning, as in a session, and proposed without an "unreachable" note."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n"
                         b"pinned")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    _setup(scratch)
    (scratch / "work" / "prog.py").write_text(FETCH)
    config = scratch / "config" / "nono" / "nonod.toml"  # the user daemon's default file
    config.parent.mkdir(parents=True)
    config.write_text(f'[network]\nresolve = {{"api.learn.test" = "127.0.0.1:{port}"}}\n')
    try:
        done = _nonoctl(scratch, "--json")
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert "fetched pinned" in done.stderr, done.stderr
    data = json.loads(done.stdout)
    assert [(h["hostname"], h["port"]) for h in data["network"]["outbound"]] == [
        ("api.learn.test", 8080)]
    assert "could not be reached" not in done.stdout + done.stderr
