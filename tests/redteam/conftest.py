"""The red team's tests drive a real daemon as the daemon tests do: their fixtures, reused."""

from tests.daemon.conftest import daemon_thread, short_tmp

__all__ = ["daemon_thread", "short_tmp"]
