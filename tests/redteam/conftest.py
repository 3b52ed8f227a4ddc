"""The red team's tests drive a real daemon as the daemon tests do: their fixtures, reused,
and ``run`` (``nonoctl`` against a user daemon of the test's own uid)."""

from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, daemon_thread, short_tmp
from tests.daemon.test_caller_files import system_daemon
from tests.daemon.test_cli import CLI, cli_env

__all__ = ["daemon_thread", "run", "short_tmp", "system_daemon"]


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
