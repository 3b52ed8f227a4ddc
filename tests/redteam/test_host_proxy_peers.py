"""Red team, a session's proxy on the host's loopback, used by another local user: with
Landlock network isolation (``linux.sandbox_policy: landlock``, and every session of the
landlock-only mode) the session has no network namespace of its own, and its proxy listens
on ``127.0.0.1:<port>`` of the host, where every local user can connect. The phantom token is
what a route asks of a request, and programs put it on their command line (``curl -H
"Authorization: Bearer $TOKEN" $SVC_BASE_URL/...``), which ``/proc/<pid>/cmdline`` shows to
every user. Another user read the token and the port there, sent a request, and the proxy
swapped in the first user's real credential for it. Now a connection to such a proxy from a
process of another uid is closed before a byte is read (its uid is the kernel's, from
``sock_diag``)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import FIND_TOKEN, RecordingUpstream, route_profile, shared_daemon

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

MARKER = "nono-rt4-marker"

#: Another user's side: find the session's shell by its command line, take the token and
#: the route's address from it, and ask the route. Prints the status, or the error.
THIEF = FIND_TOKEN + r"""
import urllib.request
request = urllib.request.Request(base + "/stolen", headers={"Authorization": "Bearer " + token})
try:
    with urllib.request.urlopen(request, timeout=10) as reply:
        print("STATUS", reply.status)
except Exception as exc:
    print("REFUSED", type(exc).__name__, getattr(exc, "code", ""),
          getattr(exc, "read", lambda: b"")()[:200])
"""


@pytest.fixture
def setting(short_tmp: Path, upstream: int) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    # The operator lets the route's loopback upstream be reached (a pinned address).
    with shared_daemon(short_tmp, 2, more=(
            f'[network]\nresolve = {{ "localhost" = "127.0.0.1:{upstream}" }}\n')) as setting:
        yield setting


def _landlock_profile(owner: LocalUser, upstream: int) -> Path:
    """The owner's profile: Landlock network isolation, one route whose secret is the
    owner's own 0600 file."""
    owner.home.chmod(0o755)
    return route_profile(owner.home, upstream, "OWNERS-REAL-SECRET", owner=owner)


def test_another_user_cannot_use_a_sessions_proxy_on_the_hosts_loopback(
        setting: tuple[DaemonThread, list[LocalUser]], upstream: int) -> None:
    handle, (owner, thief) = setting
    profile = _landlock_profile(owner, upstream)
    # The program passes its token on a command line, as `curl -H "...: Bearer $TOKEN"` does.
    launch = {"type": "launch", "argv": ["/bin/sh", "-c",
                                         'exec /bin/sh -c "while :; do sleep 1; done" '
                                         f'{MARKER} "$SVC_TOKEN" "$SVC_BASE_URL"'],
              "cwd": str(owner.home), "env": session_env(owner.home), "profile": str(profile),
              "detach": True, "stdio": "null", "name": "agent"}
    replies = raw_client(handle.socket, [hello(), launch], prefix=owner.prefix())
    assert json.loads(replies[1])["type"] == "launched", replies
    try:
        done = subprocess.run([*thief.prefix(), SYSTEM_PYTHON, "-c", THIEF, MARKER],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert done.stdout.startswith(("STATUS", "REFUSED")), done.stdout + done.stderr
        # before: STATUS 200, and the upstream got the owner's real secret
        assert done.stdout.startswith("REFUSED"), done.stdout
        assert not any("OWNERS-REAL-SECRET" in seen for seen in RecordingUpstream.seen)
        # The owner's own processes still reach the route through it.
        mine = subprocess.run([*owner.prefix(), SYSTEM_PYTHON, "-c", THIEF, MARKER],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert mine.stdout.startswith("STATUS 200"), mine.stdout + mine.stderr
        assert RecordingUpstream.seen == ["/stolen Bearer OWNERS-REAL-SECRET"]
    finally:
        raw_client(handle.socket, [hello(), {"type": "stop", "session": "agent",
                                             "force": True}], prefix=owner.prefix())


def test_the_session_itself_still_reaches_its_routes(
        setting: tuple[DaemonThread, list[LocalUser]], upstream: int) -> None:
    handle, (owner, _) = setting
    profile = _landlock_profile(owner, upstream)
    fetch = ("import os, urllib.request; r = urllib.request.Request(os.environ['SVC_BASE_URL']"
             " + '/inside', headers={'Authorization': 'Bearer ' + os.environ['SVC_TOKEN']}); "
             "print(urllib.request.urlopen(r, timeout=10).status)")
    launch = {"type": "launch", "argv": ["/usr/bin/python3", "-c", fetch],
              "cwd": str(owner.home), "env": session_env(owner.home), "profile": str(profile),
              "detach": True, "stdio": "null", "name": "inside"}
    lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": "inside"}],
                       prefix=owner.prefix())
    exited = json.loads(lines[-1])
    assert exited["type"] == "exited" and exited["exit_code"] == 0, lines
    assert RecordingUpstream.seen == ["/inside Bearer OWNERS-REAL-SECRET"]
