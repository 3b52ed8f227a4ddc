"""Red team, the metrics endpoint kept from its scraper by another local user: on a loopback
port every local user can connect, and the endpoint serves 16 connections at once, each for
up to 10 s, closing the others unanswered. One user holding 16 connections that never send a
request (and opening new ones as they time out) left Prometheus without an answer: the
daemon's monitoring went blind while that user did whatever it did next. Now one uid (the
kernel's answer for the peer socket, ``sock_diag``) holds at most 4 of them."""

from __future__ import annotations

import os
import urllib.request

import pytest

from tests.daemon.conftest import DaemonThread
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import hold_tcp

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


def test_one_user_cannot_keep_the_scraper_from_the_metrics(
        metrics_daemon: tuple[DaemonThread, LocalUser, int]) -> None:
    _, user, port = metrics_daemon
    holder = hold_tcp(user, port, 16)
    try:
        # The scraper (another uid: root here) is still answered. Before: closed unanswered.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert reply.status == 200
            assert b"nono_sessions" in reply.read()
    finally:
        holder.communicate(timeout=30)
