"""The control socket end to end: real AF_UNIX sockets, a real daemon, real sandboxed sessions."""

from __future__ import annotations

import datetime as dt
import os
import socket
import stat
import subprocess
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from nonoctl.client import (
    Connection,
    ConnectionLost,
    RemoteError,
    UnexpectedReply,
    open_async_client,
)
from nonod import protocol as p
from nonod.control import DaemonRunning, SocketError, bind_control_socket
from nonod.sessions import SessionRecord

from .conftest import DaemonHandle, DaemonThread, session_env, start_daemon, wait_pid_gone


def send_text(conn: Connection, text: str) -> None:
    conn._send_raw(conn._ws.text(text))


def send_bytes(conn: Connection, data: bytes) -> None:
    conn._send_raw(conn._ws.binary(data))


def launch(conn: Connection, argv: list[str], cwd: Path, **kwargs: object) -> p.SessionDetail:
    request = p.Launch(argv=tuple(argv), cwd=str(cwd), env=session_env(cwd),
                       options=p.LaunchOptions(allow_cwd=True), **kwargs)  # type: ignore[arg-type]
    reply = conn.request(request)
    assert isinstance(reply, p.Launched)
    return reply.session


def detached(conn: Connection, argv: list[str], cwd: Path, **kwargs: object) -> p.SessionDetail:
    return launch(conn, argv, cwd, detach=True, **kwargs)


# --------------------------------------------------------------------------- the socket


def test_socket_and_directory_are_private(daemon_thread: DaemonThread) -> None:
    sock = daemon_thread.socket
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(sock.parent).st_mode) == 0o700


def _umask_now() -> int:
    """The process umask, read without changing it."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))


def test_binding_leaves_the_process_umask_alone_and_the_socket_is_born_private(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The umask is the whole process's: a child another thread forks while the socket is
    bound (a daemon's fork server, whose sessions keep it) must not get a borrowed one. At the
    moment of ``bind`` the umask is still ours (0 here), and the file is 0600 all the same."""
    seen: list[tuple[int, int]] = []

    class Watched(socket.socket):
        def bind(self, address: object) -> None:
            super().bind(address)  # type: ignore[arg-type]
            seen.append((_umask_now(), stat.S_IMODE(os.lstat(str(address)).st_mode)))

    monkeypatch.setattr(socket, "socket", Watched)
    run = short_tmp / "run"
    run.mkdir(mode=0o700)
    old = os.umask(0)
    try:
        bound = bind_control_socket(run / "nonod.sock", default_location=False)
    finally:
        os.umask(old)
    bound.release()
    assert seen == [(0, 0o600)]


def test_a_second_daemon_does_not_steal_the_live_socket(daemon_thread: DaemonThread) -> None:
    before = os.lstat(daemon_thread.socket).st_ino
    with pytest.raises(DaemonRunning, match="already running"):
        bind_control_socket(daemon_thread.socket, default_location=False)
    assert os.lstat(daemon_thread.socket).st_ino == before
    with daemon_thread.connect() as conn:
        assert isinstance(conn.request(p.ListSessions()), p.SessionList)


def test_a_socket_some_other_process_accepts_on_is_never_replaced(short_tmp: Path) -> None:
    run = short_tmp / "run"
    run.mkdir(mode=0o700)
    path = run / "nonod.sock"
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen()
    try:
        with pytest.raises(DaemonRunning, match="already accepting"):
            bind_control_socket(path, default_location=False)
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(path))  # still theirs, still answering
        probe.close()
    finally:
        other.close()


def test_a_stale_socket_is_replaced(short_tmp: Path) -> None:
    run = short_tmp / "run"
    run.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(run / "nonod.sock"))
    dead.close()  # the file stays; nothing accepts on it
    handle = DaemonThread(short_tmp).start()
    try:
        with handle.connect() as conn:
            assert isinstance(conn.request(p.Status()), p.DaemonStatus)
    finally:
        handle.stop()
    assert not (run / "nonod.sock").exists()


def test_a_file_that_is_not_a_socket_is_left_alone(short_tmp: Path) -> None:
    run = short_tmp / "run"
    run.mkdir(mode=0o700)
    (run / "nonod.sock").write_text("precious")
    with pytest.raises(SocketError, match="not a socket"):
        bind_control_socket(run / "nonod.sock", default_location=False)
    assert (run / "nonod.sock").read_text() == "precious"


def test_unsafe_directories_are_refused(short_tmp: Path) -> None:
    theirs = short_tmp / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(SocketError, match="belongs to uid 65534"):
        bind_control_socket(theirs / "nonod.sock", default_location=False)
    open_dir = short_tmp / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(SocketError, match="writable by other users"):
        bind_control_socket(open_dir / "nonod.sock", default_location=False)
    with pytest.raises(SocketError, match=f"{open_dir} is writable by other users"):
        bind_control_socket(open_dir / "run" / "nonod.sock", default_location=False)  # above
    readable = short_tmp / "readable"
    readable.mkdir()
    readable.chmod(0o755)
    with pytest.raises(SocketError, match="open to other users"):
        bind_control_socket(readable / "nonod.sock", default_location=False)
    link = short_tmp / "link"
    link.symlink_to(short_tmp)
    with pytest.raises(SocketError, match="not a directory"):
        bind_control_socket(link / "nonod.sock", default_location=False)


# --------------------------------------------------------------------------- the protocol


def _raw_connection(path: Path) -> Connection:
    """A connection after the WebSocket handshake but before ``hello``."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(30)
    sock.connect(str(path))
    conn = Connection(sock, path)
    conn._handshake()
    return conn


def test_hello_must_come_first_and_match_the_version(daemon_thread: DaemonThread) -> None:
    with _raw_connection(daemon_thread.socket) as conn:
        conn.send(p.ListSessions())
        reply = conn.receive()
        assert isinstance(reply, p.ErrorReply)
        assert reply.code == "protocol.unexpected"
    with _raw_connection(daemon_thread.socket) as conn:
        conn.send(p.Hello(protocol=99))
        reply = conn.receive()
        assert isinstance(reply, p.ErrorReply)
        assert reply.code == "protocol.version"
        assert "speaks protocol 1" in reply.message


def test_bad_messages_get_typed_errors_and_the_connection_stays_usable(
    daemon_thread: DaemonThread,
) -> None:
    with daemon_thread.connect() as conn:
        cases = [
            ("{not json", "protocol.malformed"),
            ('{"type": "frobnicate"}', "protocol.invalid"),
            ('{"type": "inspect", "session": 7}', "protocol.invalid"),
            ('{"type": "stop"}', "protocol.invalid"),
            ('{"type": "hello", "protocol": 1}', "protocol.unexpected"),
            ('{"type": "input", "data": ""}', "protocol.unexpected"),
            ('{"type": "inspect", "session": "nosuch"}', "session.not_found"),
        ]
        for text, code in cases:
            send_text(conn, text)
            reply = conn.receive()
            assert isinstance(reply, p.ErrorReply), text
            assert reply.code == code, (text, reply)
        send_bytes(conn, b"\x00\x01binary")
        reply = conn.receive()
        assert isinstance(reply, p.ErrorReply)
        assert reply.code == "protocol.malformed"
        send_text(conn, '{"type": "frobnicate"}')
        reply = conn.receive()
        assert isinstance(reply, p.ErrorReply)
        assert "Invalid value 'frobnicate' - at `$.type`" in reply.message
        assert isinstance(conn.request(p.ListSessions()), p.SessionList)


def test_an_oversized_message_closes_only_that_connection(short_tmp: Path) -> None:
    handle = DaemonThread(short_tmp, config="[daemon]\nmax_message_bytes = 4096\n").start()
    try:
        with handle.connect() as conn:
            send_text(conn, '{"type": "hello", "client": "' + "x" * 10_000 + '"}')
            with pytest.raises(ConnectionLost, match="code 1009"):
                conn.receive()
        with handle.connect() as conn:
            assert isinstance(conn.request(p.ListSessions()), p.SessionList)
    finally:
        handle.stop()


# --------------------------------------------------------------------------- sessions


def test_detached_session_ps_inspect_stop(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    with daemon_thread.connect() as conn:
        session = detached(conn, ["sleep", "600"], short_tmp, name="napper")
        assert session.state == "running"
        assert session.pid is not None
        assert session.enforcement is not None and session.enforcement.layers
        listed = conn.request(p.ListSessions())
        assert isinstance(listed, p.SessionList)
        assert [s.id for s in listed.sessions] == [session.id]
        assert listed.sessions[0].enforcement == session.enforcement
        # what `nonoctl ps`'s table asks for: the same sessions, without usage and enforcement
        brief = conn.request(p.ListSessions(brief=True))
        assert isinstance(brief, p.SessionList)
        assert brief.sessions == (msgspec.structs.replace(
            listed.sessions[0], usage=None, enforcement=None),)
        found = conn.request(p.Inspect(session="napper"))
        assert isinstance(found, p.SessionReply)
        assert found.session.id == session.id
        assert found.session.cwd == str(short_tmp)
        prefix = conn.request(p.Inspect(session=session.id[:5]))
        assert isinstance(prefix, p.SessionReply)
        stopped = conn.request(p.Stop(session=session.id, timeout=5))
        assert isinstance(stopped, p.Exited)
        assert (stopped.signal, stopped.reason) == (15, "stopped")
        assert wait_pid_gone(session.pid)
        live = conn.request(p.ListSessions())
        assert isinstance(live, p.SessionList) and live.sessions == ()
        every = conn.request(p.ListSessions(all=True))
        assert isinstance(every, p.SessionList)
        assert [(s.id, s.state, s.signal) for s in every.sessions] == [(session.id, "exited", 15)]


def test_a_connection_narrowed_to_a_session_list_reads_ps_and_refuses_the_rest(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    # `nonoctl ps` decodes with a decoder of the replies it can get (welcome, error, list):
    # the deferred welcome, the list and an error read as before; any other reply fails to
    # decode instead of passing as something it is not.
    socket_path = str(daemon_thread.socket)
    with Connection.open(socket_path, defer_hello=True) as conn:
        conn.expect_only(p.SessionList)
        listed = conn.request(p.ListSessions(brief=True))
        assert listed == p.SessionList(sessions=())
        assert conn.welcome is not None
        with pytest.raises(RemoteError) as refused:
            conn.request(p.Inspect(session="nosuch"))
        assert refused.value.remote_code == "session.not_found"
        with pytest.raises(UnexpectedReply, match="cannot decode"):
            conn.request(p.Status())


def test_stop_force_kills_a_program_that_ignores_sigterm(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    with daemon_thread.connect() as conn:
        session = detached(conn, ["sh", "-c", "trap '' TERM; echo ready; exec sleep 600"],
                           short_tmp)
        with daemon_thread.connect() as logs:
            logs.send(p.Logs(session=session.id, follow=True))
            assert b"ready" in _read_until(logs, b"ready")
        reply = conn.request(p.Stop(session=session.id, force=True))
        assert isinstance(reply, p.Exited)
        assert reply.signal == 9


def _read_until(conn: Connection, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        reply = conn.receive()
        assert isinstance(reply, p.Output), reply
        seen += reply.data
    return seen


def test_names_are_unique_among_live_sessions(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    with daemon_thread.connect() as conn:
        first = detached(conn, ["sleep", "600"], short_tmp, name="job")
        with pytest.raises(RemoteError) as info:
            detached(conn, ["sleep", "600"], short_tmp, name="job")
        assert info.value.remote_code == "session.name_taken"
        conn.request(p.Stop(session=first.id, force=True))
        again = detached(conn, ["true"], short_tmp, name="job")
        assert again.name == "job"


def test_attached_launch_uses_the_passed_descriptors(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(stdin_w, b"hello\n")
    os.close(stdin_w)
    with daemon_thread.connect() as conn:
        request = p.Launch(argv=("sh", "-c", 'read x; echo "got $x"; echo oops >&2; exit 7'),
                           cwd=str(short_tmp), env=session_env(short_tmp),
                           options=p.LaunchOptions(allow_cwd=True), stdio="passed")
        reply = conn.request(request, fds=(stdin_r, out_w, err_w))
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)
        assert isinstance(reply, p.Launched)
        exited = conn.receive()
        assert isinstance(exited, p.Exited)
        assert (exited.exit_code, exited.reason) == (7, "exited")
    assert os.read(out_r, 100) == b"got hello\n"
    assert os.read(err_r, 100) == b"oops\n"


def test_signals_reach_an_attached_program(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    out_r, out_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    with daemon_thread.connect() as conn:
        request = p.Launch(
            argv=("/usr/bin/python3", "-c", "import signal, sys, time; "
                  "signal.signal(signal.SIGTERM, lambda *_: sys.exit(42)); "
                  "print('ready', flush=True); time.sleep(600)"),
            cwd=str(short_tmp), env=session_env(short_tmp),
            options=p.LaunchOptions(allow_cwd=True), stdio="passed",
        )
        launched = conn.request(request, fds=(null, out_w, null))
        os.close(out_w)
        os.close(null)
        assert isinstance(launched, p.Launched)
        assert os.read(out_r, 100) == b"ready\n"
        conn.send(p.SendSignal(session=launched.session.id, signal=15))
        conn.sock.settimeout(60)  # a signal lost on the way fails here instead of hanging
        replies = [conn.receive(), conn.receive()]
        assert p.Ok() in replies
        exited = next(r for r in replies if isinstance(r, p.Exited))
        assert exited.exit_code == 42


def test_a_directory_is_refused_as_stdio(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    directory = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with daemon_thread.connect() as conn:
            request = p.Launch(argv=("true",), cwd=str(short_tmp), env=session_env(short_tmp),
                               options=p.LaunchOptions(allow_cwd=True), stdio="passed")
            with pytest.raises(RemoteError) as info:
                conn.request(request, fds=(directory, 1, 2))
            assert info.value.remote_code == "protocol.fds"
            every = conn.request(p.ListSessions(all=True))
            assert isinstance(every, p.SessionList) and every.sessions == ()
    finally:
        os.close(directory)


def test_a_launch_without_its_descriptors_is_refused(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    with daemon_thread.connect() as conn:
        request = p.Launch(argv=("true",), cwd=str(short_tmp), env=session_env(short_tmp),
                           stdio="passed")
        with pytest.raises(RemoteError) as info:
            conn.request(request)
        assert info.value.remote_code == "protocol.fds"


def test_closing_an_attached_connection_stops_its_session(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    conn = daemon_thread.connect()
    request = p.Launch(argv=("sleep", "600"), cwd=str(short_tmp), env=session_env(short_tmp),
                       options=p.LaunchOptions(allow_cwd=True), stdio="passed")
    launched = conn.request(request, fds=(null, null, null))
    os.close(null)
    assert isinstance(launched, p.Launched) and launched.session.pid
    conn.sock.close()  # the client dies: no goodbye
    with daemon_thread.connect() as other:
        done = other.request(p.Wait(session=launched.session.id))
    assert isinstance(done, p.Exited)
    assert done.reason == "client_gone"
    assert wait_pid_gone(launched.session.pid)


def test_launch_refusals_are_typed(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    env = session_env(short_tmp)
    with daemon_thread.connect() as conn:
        cases = [
            (p.Launch(argv=("true",), cwd=str(short_tmp), env=env, profile="no-such-profile",
                      detach=True), "profile.not_found"),
            (p.Launch(argv=(), cwd=str(short_tmp), env=env, detach=True), "usage.invalid"),
            (p.Launch(argv=("/no/such/program",), cwd=str(short_tmp), env=env, detach=True,
                      options=p.LaunchOptions(allow_cwd=True)), "launch.failed"),
        ]
        for request, code in cases:
            with pytest.raises(RemoteError) as info:
                conn.request(request)
            assert info.value.remote_code == code
        every = conn.request(p.ListSessions(all=True))
        assert isinstance(every, p.SessionList) and every.sessions == ()


def test_dry_run_resolves_without_running(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    marker = short_tmp / "ran"
    with daemon_thread.connect() as conn:
        reply = conn.request(p.Launch(argv=("touch", str(marker)), cwd=str(short_tmp),
                                      options=p.LaunchOptions(allow_cwd=True), dry_run=True))
    assert isinstance(reply, p.DryRun)
    policy = msgspec.json.decode(reply.policy)
    assert any(g["path"] == str(short_tmp) for g in policy["grants"])
    assert not marker.exists()


# --------------------------------------------------------------------------- terminals


def test_logs_whole_tail_and_follow(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    with daemon_thread.connect() as conn:
        session = detached(conn, ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done"],
                           short_tmp)
        with daemon_thread.connect() as waiter:
            assert isinstance(waiter.request(p.Wait(session=session.id)), p.Exited)
        conn.send(p.Logs(session=session.id))
        whole = b""
        while not isinstance(reply := conn.receive(), p.EndOfOutput):
            assert isinstance(reply, p.Output)
            whole += reply.data
        assert whole == b"".join(b"line%d\r\n" % i for i in range(1, 6))
        conn.send(p.Logs(session=session.id, tail=2))
        tail = conn.receive()
        assert isinstance(tail, p.Output) and tail.data == b"line4\r\nline5\r\n"
        assert isinstance(conn.receive(), p.EndOfOutput)
    assert (daemon_thread.state_dir / "sessions" / session.id / "output.log").read_bytes() == whole


def test_follow_ends_when_the_session_does(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    with daemon_thread.connect() as conn:
        session = detached(conn, ["sh", "-c", "echo first; read x; echo second $x"], short_tmp)
        with daemon_thread.connect() as follower:
            follower.send(p.Logs(session=session.id, follow=True))
            assert b"first" in _read_until(follower, b"first")
            with daemon_thread.connect() as typist:
                assert isinstance(typist.request(p.Attach(session=session.id)), p.Attached)
                typist.send(p.Input(data=b"now\n"))
                seen = _read_until(follower, b"second now")
                assert b"second now" in seen
            end = follower.receive()
            while isinstance(end, p.Output):
                end = follower.receive()
            assert end == p.EndOfOutput(reason="exited")


def test_attach_is_exclusive_and_detach_leaves_the_session_running(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    with daemon_thread.connect() as conn:
        session = detached(conn, ["cat"], short_tmp, term=p.TermSize(rows=30, cols=100))
        with daemon_thread.connect() as first:
            reply = first.request(p.Attach(session=session.id))
            assert reply == p.Attached(session=session.id)
            with daemon_thread.connect() as second:
                with pytest.raises(RemoteError) as info:
                    second.request(p.Attach(session=session.id))
                assert info.value.remote_code == "session.busy"
            first.send(p.Input(data=b"ping\n"))
            assert b"ping" in _read_until(first, b"ping\r\n")
            first.send(p.Resize(term=p.TermSize(rows=40, cols=120)))
            first.send(p.Detach())
            while not isinstance(reply := first.receive(), p.Detached):
                assert isinstance(reply, p.Output), reply
        state = conn.request(p.Inspect(session=session.id))
        assert isinstance(state, p.SessionReply)
        assert state.session.state == "running" and not state.session.attached
        with daemon_thread.connect() as again:
            assert isinstance(again.request(p.Attach(session=session.id)), p.Attached)
            again.send(p.Input(data=b"\x04"))  # EOF: cat exits
            while not isinstance(reply := again.receive(), p.Exited):
                assert isinstance(reply, p.Output)
            assert reply.exit_code == 0


def test_attached_sessions_have_no_daemon_terminal(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    with daemon_thread.connect() as conn:
        session = detached(conn, ["sleep", "600"], short_tmp, stdio="null")
        with pytest.raises(RemoteError) as info:
            conn.request(p.Attach(session=session.id))
        assert info.value.remote_code == "session.no_tty"


# --------------------------------------------------------------------------- persistence


def test_records_survive_a_restart_and_lost_sessions_are_recorded(short_tmp: Path) -> None:
    lost_dir = short_tmp / "state" / "sessions" / "0badc0de"
    lost_dir.mkdir(parents=True)
    lost = SessionRecord(id="0badc0de", name="ghost", owner_uid=os.getuid(), owner_gid=0,
                         uid=0, gid=0, state="running", pid=999_999,
                         started_at=dt.datetime.now(dt.UTC))
    (lost_dir / "session.json").write_bytes(msgspec.json.encode(lost))
    first = DaemonThread(short_tmp).start()
    try:
        with first.connect() as conn:
            session = detached(conn, ["sleep", "600"], short_tmp)
            every = conn.request(p.ListSessions(all=True))
            assert isinstance(every, p.SessionList)
            ghost = next(s for s in every.sessions if s.id == "0badc0de")
            assert (ghost.state, ghost.signal) == ("exited", 9)
            detail = conn.request(p.Inspect(session="ghost"))
            assert isinstance(detail, p.SessionReply) and detail.session.reason == "daemon_lost"
    finally:
        first.stop()
    assert session.pid and wait_pid_gone(session.pid)
    record = msgspec.json.decode(
        (short_tmp / "state" / "sessions" / session.id / "session.json").read_bytes(),
        type=SessionRecord,
    )
    assert (record.state, record.reason) == ("exited", "daemon_shutdown")
    assert stat.S_IMODE(os.stat(short_tmp / "state" / "sessions" / session.id).st_mode) == 0o700
    second = DaemonThread(short_tmp).start()
    try:
        with second.connect() as conn:
            every = conn.request(p.ListSessions(all=True))
            assert isinstance(every, p.SessionList)
            assert {s.id for s in every.sessions} == {"0badc0de", session.id}
            pruned = conn.request(p.Prune())
            assert isinstance(pruned, p.Pruned) and set(pruned.sessions) == {"0badc0de",
                                                                              session.id}
        kept = short_tmp / "state" / "sessions" / session.id
        # Forgotten, but its audit trail stays (only audit retention removes it).
        assert sorted(p.name for p in kept.iterdir()) == ["audit.ndjson"]
    finally:
        second.stop()


def test_shutdown_request_stops_the_daemon_and_removes_the_socket(short_tmp: Path) -> None:
    handle = DaemonThread(short_tmp).start()
    with handle.connect() as conn:
        session = detached(conn, ["sleep", "600"], short_tmp)
        assert conn.request(p.Shutdown()) == p.Ok()
    assert session.pid and wait_pid_gone(session.pid)
    handle._thread.join(60)  # type: ignore[union-attr]
    assert not handle.alive()
    assert not handle.socket.exists()


# --------------------------------------------------------------------------- async API


async def test_async_client_launch_events_stop(daemon: DaemonHandle, short_tmp: Path) -> None:
    async with open_async_client(daemon.socket, autostart=False) as client:
        async with client.events() as events:
            session = await client.launch(["sleep", "600"], cwd=str(short_tmp),
                                          env=session_env(short_tmp),
                                          options=p.LaunchOptions(allow_cwd=True))
            listed = await client.sessions()
            assert [s.id for s in listed] == [session.id]
            exited = await client.stop(session.id, timeout=5)
            assert exited.signal == 15
            seen = []
            async for event in events:
                seen.append((event.kind, event.session.id, event.session.state))
                if event.kind == "exited":
                    break
        assert seen == [("started", session.id, "running"), ("exited", session.id, "exited")]


async def test_daemon_in_a_nursery_stops_its_sessions_when_cancelled(short_tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        handle = await start_daemon(nursery, short_tmp)
        async with open_async_client(handle.socket, autostart=False) as client:
            session = await client.launch(["sleep", "600"], cwd=str(short_tmp),
                                          env=session_env(short_tmp),
                                          options=p.LaunchOptions(allow_cwd=True))
        nursery.cancel_scope.cancel()
    # exited (its pidfd says so), though perhaps not reaped yet by the fork server
    assert session.pid is not None and wait_pid_gone(session.pid, timeout=0.5)
    assert not handle.socket.exists()


def test_session_output_log_is_private(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    with daemon_thread.connect() as conn:
        session = detached(conn, ["echo", "secret-ish"], short_tmp)
        with daemon_thread.connect() as waiter:
            waiter.request(p.Wait(session=session.id))
    log = daemon_thread.state_dir / "sessions" / session.id / "output.log"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert subprocess.run(["cat", str(log)], capture_output=True, check=True).stdout.startswith(
        b"secret-ish"
    )


def test_blocking_client_api(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    from nonoctl.client import Client

    with Client(daemon_thread.socket, autostart=False) as nono:
        events = nono.events()
        session = nono.launch(["sh", "-c", "echo hi"], cwd=str(short_tmp),
                              env=session_env(short_tmp),
                              options=p.LaunchOptions(allow_cwd=True))
        assert [(e.kind, e.session.id) for e in (next(events), next(events))] == [
            ("started", session.id), ("exited", session.id)]
        events.close()
        assert nono.wait(session.id).exit_code == 0
        assert b"".join(nono.logs(session.id)) == b"hi\r\n"
        assert nono.inspect(session.id).state == "exited"
        assert [s.id for s in nono.sessions(all=True)] == [session.id]
        assert nono.prune() == (session.id,)
        assert nono.status().sessions_total == 0


async def test_a_silent_connection_is_closed_after_the_handshake_timeout(
    short_tmp: Path
) -> None:
    # A real clock: with trio's autojump clock the daemon's periodic tasks (heartbeat,
    # reseal) advance time without bound while it waits on the world (threads, the fork
    # server), which once left this test spinning for minutes.
    async with trio.open_nursery() as nursery:
        handle = await start_daemon(nursery, short_tmp,
                                    config="[daemon]\nhandshake_timeout = 0.5\n")
        silent = trio.socket.socket(socket.AF_UNIX)
        await silent.connect(str(handle.socket))
        started = trio.current_time()
        with trio.fail_after(30):
            assert await silent.recv(100) == b""  # closed by the daemon, not by us
        assert trio.current_time() - started >= 0.5
        silent.close()
        async with open_async_client(handle.socket, autostart=False) as client:
            assert (await client.status()).sessions_live == 0
        nursery.cancel_scope.cancel()


async def test_a_stop_right_after_the_launch_is_a_sigterm_the_program_gets(
        daemon: DaemonHandle, short_tmp: Path) -> None:
    # The session's init forwards SIGTERM to the program; one that arrives before the init's
    # handlers exist must wait for them, not vanish (pid 1 drops unhandled signals), or the
    # stop turns into a SIGKILL after the grace period.
    async with open_async_client(daemon.socket, autostart=False) as client:
        for _ in range(10):
            session = await client.launch(["sleep", "600"], cwd=str(short_tmp),
                                          env=session_env(short_tmp),
                                          options=p.LaunchOptions(allow_cwd=True))
            exited = await client.stop(session.id, timeout=10)
            assert exited.signal == 15


def test_client_wait_needs_no_new_connection(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """``Client.wait`` answers on the kept connection: with the socket's name gone, no new
    connection could be made, and it still returns the exit status."""
    from nonoctl.client import Client

    with Client(daemon_thread.socket, autostart=False) as nono:
        session = nono.launch(["sh", "-c", "exit 3"], cwd=str(short_tmp),
                              env=session_env(short_tmp), options=p.LaunchOptions(allow_cwd=True))
        hidden = daemon_thread.socket.with_name("hidden.sock")
        daemon_thread.socket.rename(hidden)
        try:
            assert nono.wait(session.id).exit_code == 3
            assert nono.inspect(session.id).state == "exited"
        finally:
            hidden.rename(daemon_thread.socket)


class _Interrupted(Exception):
    pass


def test_an_interrupted_wait_leaves_the_client_usable(daemon_thread: DaemonThread,
                                                      short_tmp: Path) -> None:
    import signal

    from nonoctl.client import Client

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    with Client(daemon_thread.socket, autostart=False) as nono:
        session = nono.launch(["sleep", "30"], cwd=str(short_tmp), env=session_env(short_tmp),
                              options=p.LaunchOptions(allow_cwd=True))
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(_Interrupted):
                nono.wait(session.id)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        # the next requests get their own answers, not the abandoned wait's
        assert [s.state for s in nono.sessions() if s.id == session.id] == ["running"]
        assert nono.stop(session.id, timeout=5).signal == signal.SIGTERM
        assert nono.wait(session.id).signal == signal.SIGTERM
