"""Many sessions, many clients, and a client that dies mid-launch."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

from nonod import protocol as p

from .conftest import DaemonThread, session_env, wait_pid_gone

REPO = Path(__file__).resolve().parents[2]


CLIENTS = 15  # x 10 sessions: past the 128 inotify instances a user has on Debian, which an
# instance per session would have hit (the fork server's guard hub holds one for all)


def test_a_hundred_and_fifty_sessions_from_fifteen_clients_at_once(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    gate = short_tmp / "gate"
    os.mkfifo(gate)

    def client(index: int) -> list[tuple[str, int]]:
        launched = []
        with daemon_thread.connect() as conn:
            for n in range(10):
                code = index * 10 + n
                reply = conn.request(p.Launch(
                    argv=("sh", "-c", f"read x < gate; exit {code}"),  # blocks: a FIFO
                    cwd=str(short_tmp), env=session_env(short_tmp), detach=True, stdio="null",
                    options=p.LaunchOptions(allow_cwd=True),
                ))
                assert isinstance(reply, p.Launched)
                launched.append((reply.session.id, code))
        return launched

    with concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        sessions = [s for batch in pool.map(client, range(CLIENTS)) for s in batch]
    assert len({sid for sid, _ in sessions}) == CLIENTS * 10
    with daemon_thread.connect() as conn:
        live = conn.request(p.ListSessions())
        assert isinstance(live, p.SessionList)
        assert len(live.sessions) == CLIENTS * 10
        assert {s.state for s in live.sessions} == {"running"}
        detail = conn.request(p.Inspect(session=sessions[-1][0]))
        assert isinstance(detail, p.SessionReply)
        assert "view_guard" in {layer.name for layer in detail.session.enforcement.layers}
        # One line for each session's `read`; a session that opens the FIFO late still finds
        # its line, since the writer stays open until every session has ended.
        with open(gate, "w") as release:
            release.write("\n" * len(sessions))
            release.flush()

            def wait(session: tuple[str, int]) -> tuple[int | None, int]:
                with daemon_thread.connect() as waiter:
                    exited = waiter.request(p.Wait(session=session[0]))
                assert isinstance(exited, p.Exited)
                return exited.exit_code, session[1]

            with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
                for got, expected in pool.map(wait, sessions):
                    assert got == expected


KILL_AFTER_SEND = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from nonod import protocol as p
from nonoctl.client import Connection
conn = Connection.open(Path({socket!r}))
null = os.open(os.devnull, os.O_RDWR)
conn.send(p.Launch(argv=("sleep", "600"), cwd={cwd!r}, env={env!r}, stdio="passed",
                   options=p.LaunchOptions(allow_cwd=True)), fds=(null, null, null))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_client_killed_mid_launch_leaves_nothing_behind(
    daemon_thread: DaemonThread, short_tmp: Path
) -> None:
    from nonoctl.client import Client

    with Client(daemon_thread.socket, autostart=False) as nono, nono.events() as events:
        script = KILL_AFTER_SEND.format(repo=str(REPO), socket=str(daemon_thread.socket),
                                        cwd=str(short_tmp), env=session_env(short_tmp))
        done = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
        assert done.returncode == -9
        started = next(events)
        assert started.kind == "started" and started.session.pid
        exited = next(events)
        assert (exited.kind, exited.session.id) == ("exited", started.session.id)
        assert nono.inspect(started.session.id).reason == "client_gone"
        assert wait_pid_gone(started.session.pid)
        assert nono.sessions() == ()
