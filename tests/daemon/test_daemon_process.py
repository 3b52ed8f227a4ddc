"""The ``nonod`` program itself: detaching, signals, a second daemon, dying with its sessions."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nonoctl.client import Connection, ConnectionLost
from nonod import protocol as p

from .conftest import session_env, wait_pid_gone

REPO = Path(__file__).resolve().parents[2]


class Nonod:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "run" / "nonod.sock"
        self.env = {**session_env(base), "PYTHONPATH": str(REPO),
                    "XDG_STATE_HOME": str(base / "state"),
                    "XDG_CONFIG_HOME": str(base / "config")}

    def start(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """``nonod --daemonize`` detaches and returns once it serves (or failed)."""
        return subprocess.run([sys.executable, "-m", "nonod", "--daemonize",
                               "--socket", str(self.socket),
                               *extra], capture_output=True, text=True, env=self.env,
                              timeout=60, check=False)

    def connect(self) -> Connection:
        return Connection.open(self.socket)

    def pid(self) -> int:
        with self.connect() as conn:
            status = conn.request(p.Status())
        assert isinstance(status, p.DaemonStatus)
        return status.pid

    def launch_sleeper(self) -> p.SessionDetail:
        with self.connect() as conn:
            reply = conn.request(p.Launch(argv=("sleep", "600"), cwd=str(self.base),
                                          env=session_env(self.base), detach=True,
                                          options=p.LaunchOptions(allow_cwd=True)))
        assert isinstance(reply, p.Launched) and reply.session.pid
        return reply.session

    def sessions(self) -> tuple[p.SessionInfo, ...]:
        with self.connect() as conn:
            reply = conn.request(p.ListSessions(all=True))
        assert isinstance(reply, p.SessionList)
        return reply.sessions

    def reason(self, session_id: str) -> str:
        with self.connect() as conn:
            reply = conn.request(p.Inspect(session=session_id))
        assert isinstance(reply, p.SessionReply)
        return reply.session.reason


@pytest.fixture
def nonod(short_tmp: Path) -> Nonod:
    return Nonod(short_tmp)


def test_sigterm_stops_sessions_removes_the_socket_and_exits(nonod: Nonod) -> None:
    assert nonod.start().returncode == 0
    pid = nonod.pid()
    session = nonod.launch_sleeper()
    os.kill(pid, signal.SIGTERM)
    assert wait_pid_gone(pid)
    assert session.pid is not None and wait_pid_gone(session.pid, timeout=5)
    assert not nonod.socket.exists()
    assert nonod.start().returncode == 0
    try:
        ended = {s.id: s for s in nonod.sessions()}[session.id]
        assert (ended.state, ended.signal) == ("exited", 15)
        assert nonod.reason(session.id) == "daemon_shutdown"
    finally:
        os.kill(nonod.pid(), signal.SIGTERM)


def _kill_under_a_session(nonod: Nonod) -> p.SessionDetail:
    """Start the daemon, launch a sleeper, SIGKILL the daemon; the session it had."""
    assert nonod.start().returncode == 0
    pid = nonod.pid()
    session = nonod.launch_sleeper()
    os.kill(pid, signal.SIGKILL)
    assert wait_pid_gone(pid)
    return session


def test_a_killed_daemon_takes_its_sessions_along_and_the_next_one_records_them(
    nonod: Nonod,
) -> None:
    session = _kill_under_a_session(nonod)
    assert session.pid is not None and wait_pid_gone(session.pid, timeout=10)
    assert nonod.socket.exists()  # stale: the next daemon replaces it
    assert nonod.start().returncode == 0
    try:
        lost = {s.id: s for s in nonod.sessions()}[session.id]
        assert lost.state == "exited"
        assert nonod.reason(session.id) == "daemon_lost"
        # Its audit file, cut off by the kill, is closed with daemon_lost and verifies.
        from nonod.audit import verify_session_file

        audit = next(nonod.base.rglob(f"{session.id}/audit.ndjson"))
        events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
        assert any(e["type"] == "session_ended" and e["reason"] == "daemon_lost"
                   for e in events)
        assert events[-2]["type"] == "session_ended" and events[-1]["type"] == "seal"
        # ...and the next daemon entered its seal in the ledger.
        ledger = nonod.base / "state" / "nono" / "ledger.ndjson"
        result = verify_session_file(audit, ledger=ledger)
        assert result.sealed and result.ledger_line == 1
    finally:
        os.kill(nonod.pid(), signal.SIGTERM)


def test_a_second_daemon_on_the_same_socket_exits_with_a_clear_message(nonod: Nonod) -> None:
    assert nonod.start().returncode == 0
    pid = nonod.pid()
    try:
        second = nonod.start()
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert nonod.pid() == pid
    finally:
        os.kill(pid, signal.SIGTERM)
        assert wait_pid_gone(pid)


def test_a_bad_configuration_is_refused_before_anything_starts(nonod: Nonod) -> None:
    config = nonod.base / "nonod.toml"
    config.write_text("[daemon]\nmax_conections = 3\n")
    done = nonod.start("--config", str(config))
    assert done.returncode == 2
    assert "unknown key `daemon.max_conections`" in done.stderr
    assert not nonod.socket.exists()


@pytest.mark.parametrize("flags", [(), ("--foreground",)], ids=["default", "old-flag"])
def test_nonod_stays_in_the_foreground_notifies_systemd_and_stops_on_sigint(
    nonod: Nonod, flags: tuple[str, ...],
) -> None:
    """Plain ``nonod`` is the daemon itself (its pid serves), as ``nonod &`` and supervisors
    expect; ``--foreground`` is a no-op kept for older unit files."""
    import socket as socketlib

    notify = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    notify_path = nonod.base / "notify.sock"
    notify.bind(str(notify_path))
    notify.settimeout(60)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nonod", *flags, "--socket", str(nonod.socket)],
        env={**nonod.env, "NOTIFY_SOCKET": str(notify_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        ready = notify.recv(4096).decode()
        assert "READY=1" in ready and f"MAINPID={proc.pid}" in ready
        assert nonod.pid() == proc.pid
        proc.send_signal(signal.SIGHUP)  # reload: no file, nothing changes, still serving
        assert notify.recv(4096) == b"RELOADING=1"
        assert notify.recv(4096) == b"READY=1"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert notify.recv(4096) == b"STOPPING=1"
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert '"event":"nonod ready"' in log  # JSON lines: stderr is not a terminal


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed (Debian: package systemd)")
def test_socket_activation_uses_the_inherited_socket(nonod: Nonod) -> None:
    nonod.socket.parent.mkdir(mode=0o700)
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(nonod.socket), "-E", "PYTHONPATH",
         "-E", "XDG_STATE_HOME", "-E", "XDG_CONFIG_HOME", "-E", "XDG_RUNTIME_DIR",
         sys.executable, "-m", "nonod"],
        env=nonod.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        assert b"Listening on" in proc.stderr.readline()  # the socket exists before nonod
        with nonod.connect() as conn:  # the first connection starts nonod
            status = conn.request(p.Status())
        assert isinstance(status, p.DaemonStatus)
        assert status.socket == str(nonod.socket)
        assert not (nonod.socket.parent / "nonod.sock.lock").exists()  # systemd owns it
        os.kill(status.pid, signal.SIGTERM)
        assert wait_pid_gone(status.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_lost_session_ends_when_it_was_last_known_alive_not_at_the_next_start(
    nonod: Nonod,
) -> None:
    session = _kill_under_a_session(nonod)
    state = nonod.base / "state" / "nono"
    heartbeat = state / "daemon.alive"
    assert heartbeat.exists()  # the daemon said it was alive while it ran
    # Pretend the session started two hours ago and the daemon died one hour ago: its last
    # heartbeat, and the session's last audit record, are that old. The next daemon must
    # not date the end to its own start.
    record_path = next(nonod.base.rglob(f"{session.id}/session.json"))
    record = json.loads(record_path.read_text())
    record["started_at"] = "2020-01-01T00:00:00Z"
    record_path.write_text(json.dumps(record))
    died = time.time() - 3600
    os.utime(heartbeat, (died, died))
    audit = next(nonod.base.rglob(f"{session.id}/audit.ndjson"))
    os.utime(audit, (died - 60, died - 60))
    assert nonod.start().returncode == 0
    try:
        lost = {s.id: s for s in nonod.sessions()}[session.id]
        assert lost.ended_at is not None
        assert abs(lost.ended_at.timestamp() - died) < 1.0
    finally:
        os.kill(nonod.pid(), signal.SIGTERM)


def _environ(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was executed with (what its interpreter read)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _fork_server(daemon: int) -> int:
    children = [int(task) for t in Path(f"/proc/{daemon}/task").iterdir()
                for task in (t / "children").read_text().split()]
    return next(c for c in children
                if b"_forkserver" in Path(f"/proc/{c}/cmdline").read_bytes())


def test_the_fork_server_runs_on_glibc_malloc_whatever_the_daemon_runs_on(
    nonod: Nonod,
) -> None:
    """CPython's small-object allocator keeps a 1 MiB arena mapped while one block in it
    lives: the fork server runs on glibc's ``malloc`` (``PYTHONMALLOC``), whose free pages it
    returns after a burst (docs/daemon.md). Its environment is its own, never the daemon's:
    an allocator named for the daemon does not reach it."""
    nonod.env["PYTHONMALLOC"] = "pymalloc"
    assert nonod.start().returncode == 0
    pid = nonod.pid()
    try:
        nonod.launch_sleeper()  # the fork server runs
        server = _environ(_fork_server(pid))
        assert server["PYTHONMALLOC"] == "malloc"
        assert sorted(k for k in server if k.startswith("PYTHON")) == ["PYTHONMALLOC"]
    finally:
        os.kill(pid, signal.SIGTERM)


def test_the_daemon_does_not_load_rich() -> None:
    """structlog imports rich when it is installed (for tracebacks the daemon renders plainly):
    the daemon's entry point keeps it out (3.5 MiB of its memory)."""
    import importlib.util

    if importlib.util.find_spec("rich") is None:
        pytest.skip("rich is not installed here: nothing to keep out")
    probe = ("import sys\n"
             "from nonod.__main__ import main\n"
             "try:\n"
             "    main(['--help'])\n"
             "except SystemExit:\n"
             "    pass\n"
             "print(sys.modules.get('rich') is not None, 'structlog' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.split()[-2:] == ["False", "True"]


def test_python_m_nonod_does_not_import_from_the_working_directory(tmp_path: Path) -> None:
    """``python -m nonod`` started from a directory someone else can write: a module planted
    there under the name of one the daemon imports later must not run."""
    mark = tmp_path / "ran"
    (tmp_path / "structlog.py").write_text(
        f"open({str(mark)!r}, 'w').write('planted')\nraise SystemExit('planted')\n")
    done = subprocess.run([sys.executable, "-m", "nonod", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert not mark.exists(), done.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nonod ")


def test_a_daemon_killed_during_a_launch_forgets_its_unconfirmed_secret_bindings(
        nonod: Nonod, short_tmp: Path) -> None:
    """known2 (known1's residual): a launch binds the secret of its route to the route's
    upstream while it is prepared, provisionally (undone if the launch is refused). A
    daemon killed before the launch was settled kept the binding for good: the next daemon
    read it as a launch's that ran, and the user's own profile routing the secret to its
    real host was refused. The kill comes from inside the launch's preparation, after the
    binding, through what the daemon runs: the 1Password CLI (``op read`` of the launch's
    ``env_credentials``, a fake on the daemon's PATH) kills its parent, the daemon."""
    bin_dir = short_tmp / "bin"
    bin_dir.mkdir()
    op = bin_dir / "op"
    op.write_text("#!/bin/sh\nkill -KILL $PPID\nsleep 10\nexit 1\n")
    op.chmod(0o755)
    nonod.env["PATH"] = f"{bin_dir}:{nonod.env['PATH']}"
    token = short_tmp / "token"
    token.write_text("REAL-TOKEN")
    token.chmod(0o600)
    key = f"file://{token}"

    def profile(name: str, upstream: str, **more: object) -> str:
        path = short_tmp / f"{name}.json"
        path.write_text(json.dumps({
            "meta": {"name": name}, "filesystem": {"read": ["/usr", "/etc"]},
            "network": {"credentials": [name], "custom_credentials": {name: {
                "upstream": upstream, "credential_key": key, "env_var": "TOKEN"}}}, **more}))
        return str(path)

    def launch(profile: str) -> p.AnyReply:
        with nonod.connect() as conn:
            return conn.request(p.Launch(argv=("/bin/true",), cwd=str(short_tmp),
                                         env=session_env(short_tmp), profile=profile,
                                         options=p.LaunchOptions(allow_cwd=True)))

    def hosts() -> tuple[str, ...]:
        with nonod.connect() as conn:
            reply = conn.request(p.SecretBindings(reference=key))
        assert isinstance(reply, p.SecretBound), reply
        return reply.hosts

    started = nonod.start()
    assert started.returncode == 0, started.stderr
    pid = nonod.pid()
    theirs = profile("theirs", "http://127.0.0.1:9",
                     env_credentials={"op://vault/item/field": "OTHER"})
    with pytest.raises(ConnectionLost):  # the daemon dies under the launch
        launch(theirs)
    assert wait_pid_gone(pid)
    [saved] = list(short_tmp.rglob("secret-hosts.json"))
    bound = {entry["reference"]: entry for entry in json.loads(saved.read_text())["bindings"]}
    assert bound[key]["origins"] == ["http://127.0.0.1:9"], bound  # saved before the gate...
    assert bound[key].get("pending"), bound  # ...as not yet confirmed

    restarted = nonod.start()
    assert restarted.returncode == 0, restarted.stderr
    try:
        assert hosts() == ()  # before: ("http://127.0.0.1:9",), kept for good
        assert json.loads(saved.read_text())["bindings"] == []
        mine = profile("mine", "http://localhost:9")
        # before: refused, "has been sent only to http://127.0.0.1:9"
        done = launch(mine)
        assert isinstance(done, p.Launched), done
        assert hosts() == ("http://localhost:9",)
        # A launch that ran keeps its binding across a restart (confirmed on disk too).
        for _ in range(100):
            if not json.loads(saved.read_text())["bindings"][0].get("pending"):
                break
            time.sleep(0.05)
        pid = nonod.pid()
        os.kill(pid, signal.SIGKILL)
        assert wait_pid_gone(pid)
        assert nonod.start().returncode == 0
        assert hosts() == ("http://localhost:9",)
    finally:
        with contextlib.suppress(Exception):
            os.kill(nonod.pid(), signal.SIGTERM)
