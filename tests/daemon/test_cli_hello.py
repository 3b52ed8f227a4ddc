"""``nonoctl``'s deferred ``hello`` (``Connection.open(defer_hello=True)``): it goes out in
the same write as the first request, against a real daemon."""

from __future__ import annotations

import pytest

from nonoctl.client import Connection, RemoteError
from nonod import protocol as p

from .conftest import DaemonThread, session_env


def _launch(daemon: DaemonThread) -> p.Launch:
    return p.Launch(argv=("/bin/true",), cwd="/", env=session_env(daemon.base), detach=True,
                    stdio="null")


def test_the_hello_rides_with_the_first_request(daemon_thread: DaemonThread) -> None:
    with Connection.open(daemon_thread.socket, defer_hello=True) as conn:
        assert conn.welcome is None  # nothing was exchanged yet
        conn.send(_launch(daemon_thread))
        launched = conn.receive()
        assert isinstance(launched, p.Launched)
        assert conn.welcome is not None and conn.welcome.protocol == p.PROTOCOL_VERSION
        assert conn.sock.gettimeout() is None  # the connect timeout ended with the welcome
        # the conversation goes on as after an ordinary hello
        listed = conn.request(p.ListSessions(all=True))
        assert isinstance(listed, p.SessionList)
        assert [s.id for s in listed.sessions] == [launched.session.id]


def test_a_refused_hello_means_the_request_behind_it_never_runs(
    daemon_thread: DaemonThread,
) -> None:
    with Connection.open(daemon_thread.socket, defer_hello=True) as conn:
        # a client of another protocol version (what its Connection would send)
        conn._hello = conn._ws.text(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION + 1))
                                    .decode("utf-8"))
        conn.send(_launch(daemon_thread))
        with pytest.raises(RemoteError) as refused:
            conn.receive()
    assert refused.value.remote_code == "protocol.version"
    with daemon_thread.connect() as other:
        listed = other.request(p.ListSessions(all=True))
    assert isinstance(listed, p.SessionList) and listed.sessions == ()
