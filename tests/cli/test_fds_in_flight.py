"""The client passes a terminal's descriptors (SCM_RIGHTS). The kernel refuses that
(ETOOMANYREFS) while the user's descriptors in flight exceed the sender's soft
RLIMIT_NOFILE: another process of the user (a session, say) can hold that many. The client
then sends again under its hard limit."""

from __future__ import annotations

import errno
import os
import resource
import socket

import pytest

from nonoctl.client import _send_fds

pytestmark = pytest.mark.root  # to be a user without CAP_SYS_RESOURCE, and to hold its count


def _in_child(body: object) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)  # no CAP_SYS_RESOURCE: the in-flight check applies
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))
            code = body()  # type: ignore[operator]
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _hold_and_send(send: object) -> int:
    holder, _unread = socket.socketpair()
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        while True:
            socket.send_fds(holder, [b"x"], [null] * 60)
    except OSError as exc:
        if exc.errno != errno.ETOOMANYREFS:
            return 2
    a, b = socket.socketpair()
    try:
        send(a, b"frame", [null])  # type: ignore[operator]
    except OSError as exc:
        return 3 if exc.errno == errno.ETOOMANYREFS else 4
    _, fds, _, _ = socket.recv_fds(b, 16, 1)
    return 0 if len(fds) == 1 else 5


def test_the_client_passes_descriptors_while_its_user_has_many_in_flight() -> None:
    assert _in_child(lambda: _hold_and_send(_send_fds)) == 0


def test_without_the_retry_the_kernel_refuses() -> None:
    plain = lambda sock, data, fds: socket.send_fds(sock, [data], list(fds))  # noqa: E731
    assert _in_child(lambda: _hold_and_send(plain)) == 3
