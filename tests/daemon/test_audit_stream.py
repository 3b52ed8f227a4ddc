"""The live audit stream over the control socket (``AuditFollow``), ``nonoctl logs``/``events``,
signal events, and a launch refused when its audit record cannot be created."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from nonoctl._output import Output
from nonoctl.client import Client, Connection
from nonod import protocol as p
from nonod.audit import AuditWriteError

from .conftest import DaemonThread, session_env
from .test_cli import CLI, cli_env

#: Each connection the proxy refuses is one ``network`` audit event.
REFUSED = r"""
import base64, os, socket, sys, time
from urllib.parse import urlsplit
if len(sys.argv) > 2:
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.02)
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
for _ in range(int(sys.argv[1])):
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
    s.sendall(f"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n"
              f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    s.recv(64)
    s.close()
"""


def _profile(base: Path) -> Path:
    (base / "refused.py").write_text(REFUSED)
    profile = base / "net.json"
    profile.write_text(json.dumps({
        "meta": {"name": "net"},
        "workdir": {"access": "readwrite"},
        "groups": {"include": ["python_runtime"]},
        "network": {"allow_domain": ["api.github.com"]},
    }))
    return profile


def _audit_file(daemon: DaemonThread, session: str) -> Path:
    return daemon.state_dir / "sessions" / session / "audit.ndjson"


def _follow(conn: Connection, request: p.AuditFollow) -> None:
    reply = conn.request(request)
    assert isinstance(reply, p.Ok), reply


def test_twenty_followers_one_stuck_none_slows_the_session(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    profile = _profile(short_tmp)
    followers = [daemon_thread.connect() for _ in range(19)]
    stuck = daemon_thread.connect()
    for conn in [*followers, stuck]:
        _follow(conn, p.AuditFollow())  # every session the caller may see
    session_id: list[str] = []
    ready = threading.Event()
    seen: list[list[bytes]] = [[] for _ in followers]
    failures: list[str] = []

    def read(index: int, conn: Connection) -> None:
        ready.wait(60)
        while True:
            reply = conn.receive()
            if not isinstance(reply, p.AuditRecord):
                failures.append(f"follower {index}: {reply!r}")
                return
            if reply.session != session_id[0]:
                continue
            seen[index].append(bytes(reply.record))
            if json.loads(bytes(reply.record))["event"]["type"] == "seal":
                return

    readers = [threading.Thread(target=read, args=(i, c), daemon=True)
               for i, c in enumerate(followers)]
    for reader in readers:
        reader.start()
    with daemon_thread.connect() as conn:
        launched = conn.request(p.Launch(
            argv=("/usr/bin/python3", "-S", "refused.py", "2000"), profile=str(profile),
            cwd=str(short_tmp), env=session_env(short_tmp), detach=True, stdio="null",
            options=p.LaunchOptions(allow_cwd=True)))
        assert isinstance(launched, p.Launched), launched
        session_id.append(launched.session.id)
        ready.set()
        exited = conn.request(p.Wait(session=launched.session.id))
    assert isinstance(exited, p.Exited) and exited.exit_code == 0, exited
    for reader in readers:
        reader.join(120)
    assert not failures, failures[:3]
    stored = _audit_file(daemon_thread, session_id[0]).read_bytes().splitlines()
    assert len(stored) > 2000  # the refused connections, and the session's own records
    for index, lines in enumerate(seen):
        assert lines == stored, f"follower {index} saw {len(lines)} of {len(stored)}"
    # The one that never read was dropped: what was queued for it, then the notice.
    replies: list[p.AnyReply] = []
    while not isinstance(reply := stuck.receive(), p.EndOfOutput):
        replies.append(reply)
    assert reply.reason == "lagged"
    assert isinstance(replies[-1], p.AuditDropped) and replies[-1].reason == "lagged"
    records = [r for r in replies if isinstance(r, p.AuditRecord)]
    assert len(records) == replies[-1].delivered < len(stored)
    assert [bytes(r.record) for r in records if r.session == session_id[0]] == stored[
        :len(records)]
    for conn in [*followers, stuck]:
        conn.close()


def test_logs_follow_json_from_start_to_seal_with_signal_events(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    started = run("launch", "-d", "--allow-cwd", "--", "sleep", "600")
    assert started.returncode == 0, started.stderr
    sid = started.stdout.strip()
    follow = run.popen("logs", sid, "-f", "--json")
    assert follow.stdout is not None
    first = json.loads(follow.stdout.readline())
    assert first["seq"] == 1 and first["event"]["type"] == "session_started"
    with Client(daemon_thread.socket) as client:
        client.signal(sid, signal.SIGCONT)  # harmless to sleep: recorded, keeps running
    assert run("stop", sid, "--timeout", "5").returncode == 0
    rest = follow.stdout.read().decode().splitlines()
    assert follow.wait(60) == 0, follow.stderr.read() if follow.stderr else ""
    records = [first, *(json.loads(line) for line in rest)]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert [r["event"]["type"] for r in records[-2:]] == ["session_ended", "seal"]
    lines = _audit_file(daemon_thread, sid).read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    signals = [r["event"] for r in records if r["event"]["type"] == "signal"]
    assert [(s["name"], s["reason"]) for s in signals] == [
        ("SIGCONT", "user"), ("SIGTERM", "stopped")]
    assert signals[0]["sender"] == "client uid 0"
    assert "sender" not in signals[1]  # the default: the daemon

    # Sealed: replayed and ended, without -f too; --kind filters; a TTY-less human view is JSON.
    again = run("logs", sid, "--kind", "signal")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["event"]["name"] for line in again.stdout.splitlines()] == [
        "SIGCONT", "SIGTERM"]
    bad = run("logs", sid, "--kind", "nonsense")
    assert bad.returncode == 1 and "unknown event kind: nonsense" in bad.stderr

    human = io.StringIO()
    Output(stdout=human).audit_record(sid, lines[0].encode(), as_json=False, wrap=False)
    assert f" {sid} session_started " in human.getvalue() and "\x1b" not in human.getvalue()


def test_events_follow_filters_by_kind(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    profile = _profile(short_tmp)
    go = short_tmp / "go"
    started = run("launch", "-d", "--profile", str(profile), "--allow-cwd", "--",
                  "/usr/bin/python3", "-S", "refused.py", "3", str(go))
    assert started.returncode == 0, started.stderr
    sid = started.stdout.strip()
    events = run.popen("events", "-f", "--kind", "network")
    assert events.stdout is not None and events.stderr is not None
    assert b"following" in events.stderr.readline()  # subscribed
    go.touch()
    try:
        got = [json.loads(events.stdout.readline()) for _ in range(3)]
    finally:
        events.kill()
        events.wait(10)
    assert {g["session"] for g in got} == {sid}
    assert [(g["record"]["event"]["type"], g["record"]["event"]["host"],
             g["record"]["event"]["decision"]) for g in got] == [
        ("network", "evil.example", "deny")] * 3
    assert run("wait", sid).returncode == 0


def test_a_launch_whose_audit_file_cannot_be_created_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nonod.audit._writer import AuditWriter

    async def refuse(*args: object, **kwargs: object) -> AuditWriter:
        raise AuditWriteError("cannot create audit.ndjson: No space left on device")

    monkeypatch.setattr(AuditWriter, "create", refuse)
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    marker = short_tmp / "ran"
    done = run("launch", "--allow-cwd", "--", "touch", str(marker))
    assert done.returncode == 125, done.stderr
    assert "audit record cannot be created: cannot create audit.ndjson" in done.stderr
    assert not marker.exists()
    assert json.loads(run("ps", "-a", "--json").stdout) == []


def test_a_launch_refused_by_the_engine_is_not_announced_to_followers(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """Its audit file existed (its first records were written and fsynced before the gate);
    the engine refused it after (the program cannot be executed). A follower of every
    session hears nothing of it; the next launch's records reach it all, in order, the
    first records before its ``enforcement``."""
    not_executable = short_tmp / "script"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)

    def launch(program: str) -> p.Launch:
        return p.Launch(argv=(program,), cwd=str(short_tmp), env=session_env(short_tmp),
                        options=p.LaunchOptions(allow_cwd=True, block_net=True),
                        detach=False, stdio="null")

    with daemon_thread.connect() as follower, daemon_thread.connect() as conn:
        _follow(follower, p.AuditFollow())
        conn.send(launch(str(not_executable)))
        refused = conn.receive()
        assert isinstance(refused, p.ErrorReply), refused
        assert refused.code.startswith("launch."), refused
        conn.send(launch("/bin/true"))
        launched = conn.receive()
        assert isinstance(launched, p.Launched), launched
        assert isinstance(conn.receive(), p.Exited)
        records: list[tuple[str, int, str]] = []
        while not records or records[-1][2] != "seal":
            reply = follower.receive()
            assert isinstance(reply, p.AuditRecord), reply
            line = json.loads(bytes(reply.record))
            records.append((reply.session, line["seq"], line["event"]["type"]))
    assert {session for session, _, _ in records} == {launched.session.id}, records
    assert [seq for _, seq, _ in records] == list(range(1, len(records) + 1)), records
    kinds = [kind for _, _, kind in records]
    assert kinds[0] == "session_started" and "enforcement" in kinds, kinds


def test_follow_is_limited_to_visible_sessions_and_known_kinds(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    with daemon_thread.connect() as conn:
        with pytest.raises(Exception, match="unknown event kind"):
            _follow(conn, p.AuditFollow(kinds=("bogus",)))
        with pytest.raises(Exception, match="no session"):
            _follow(conn, p.AuditFollow(session="nope", from_start=True))
    with pytest.raises(ValueError, match="from_start needs a session"):
        p.AuditFollow(from_start=True)


def test_a_follow_of_a_starting_session_ends_when_its_launch_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """known2: ``nonoctl logs -f ID`` (``from_start`` and ``follow``) on a session still
    starting, whose launch is then refused: nothing of it is announced (known1) and no seal
    comes, so the follow waited forever. Now it ends, saying the launch was refused. The
    launch waits in its preparation on ``op read`` (a fake 1Password CLI on the daemon's
    PATH, after its audit file exists) until the test lets it fail."""
    bin_dir, gate = short_tmp / "bin", short_tmp / "gate"
    bin_dir.mkdir()
    op = bin_dir / "op"
    op.write_text(f"#!/bin/sh\ni=0\nwhile [ ! -e {gate} ] && [ $i -lt 400 ]; do "
                  "sleep 0.05; i=$((i+1)); done\nexit 1\n")
    op.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")  # the daemon's (a thread)
    profile = short_tmp / "p.json"
    profile.write_text(json.dumps({"meta": {"name": "op"},
                                   "env_credentials": {"op://v/i/f": "SECRET"}}))
    cli = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    with daemon_thread.connect() as conn:
        conn.send(p.Launch(argv=("/bin/true",), cwd=str(short_tmp), env=session_env(short_tmp),
                           profile=str(profile), name="waits",
                           options=p.LaunchOptions(allow_cwd=True, block_net=True),
                           detach=False, stdio="null"))
        deadline = time.monotonic() + 30
        while not any(s["name"] == "waits" for s in json.loads(cli("ps", "-a", "--json").stdout)):
            assert time.monotonic() < deadline, "the launch never showed as starting"
            time.sleep(0.05)
        with daemon_thread.connect() as api:
            _follow(api, p.AuditFollow(session="waits", from_start=True))  # subscribed
            follower = cli.popen("logs", "-f", "waits")
            while not _subscribers(daemon_thread, 2):  # the CLI's follow too
                assert time.monotonic() < deadline, "nonoctl logs -f never subscribed"
                time.sleep(0.05)
            gate.touch()
            refused = conn.receive()
            assert isinstance(refused, p.ErrorReply), refused
            assert "op read" in refused.message, refused
            api.sock.settimeout(30)
            replies = []
            while not replies or isinstance(replies[-1], p.AuditRecord):
                replies.append(api.receive())  # before: no end (a timeout here)
            assert replies[-1] == p.EndOfOutput(reason="refused"), replies
            try:
                out, err = follower.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                follower.kill()
                follower.communicate()
                raise AssertionError("nonoctl logs -f never ended") from None
    assert follower.returncode == 1, (out, err)
    assert "session waits was refused before its program started" in err.decode(), err


def _subscribers(daemon: DaemonThread, count: int) -> bool:
    hub = daemon.server.registry.audit_hub if daemon.server is not None else None
    return hub is not None and hub.statistics().subscribers >= count
