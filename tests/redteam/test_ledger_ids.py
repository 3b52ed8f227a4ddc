"""Red team, a session id taken again after retention: ids are 32 random bits, checked only
against live sessions and the session directories on disk. Audit retention (``audit prune``,
``keep_days``, ``keep_sessions``) removes a sealed session's directory but keeps its line in
the ledger, so a later session could be given the id of a pruned one: its seal was then
refused ("already in the ledger") and ``audit verify`` of that id compared the new file with
the old session's ledger line. A new id now also avoids every id the ledger holds."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from nonod.sessions import _registry
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI


class _Replay:
    """``secrets`` for the registry: the first 8-hex-digit id is ``first``, then random."""

    def __init__(self, first: str) -> None:
        self.pending: Iterator[str] = iter([first])

    def token_hex(self, nbytes: int) -> str:
        if nbytes == 4:
            return next(self.pending, None) or secrets.token_hex(nbytes)
        return secrets.token_hex(nbytes)


def _launched(run: CLI) -> str:
    done = run("launch", "--detach", "--json", "--allow-cwd", "--block-net", "--", "true")
    assert done.returncode == 0, done.stderr
    session = str(json.loads(done.stdout)["id"])
    ended = run("wait", session)  # sealed, with its ledger line, once it has ended
    assert ended.returncode == 0, ended.stderr
    return session


def test_a_pruned_sessions_id_is_not_given_again(run: CLI, daemon_thread: DaemonThread,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first = _launched(run)
    forgotten = run("prune")  # the daemon forgets it (its audit file stays)
    assert forgotten.returncode == 0, forgotten.stderr
    state = str(daemon_thread.state_dir)
    pruned = run("audit", "prune", "--state-dir", state, "--keep", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert not (daemon_thread.state_dir / "sessions" / first).exists()
    monkeypatch.setattr(_registry, "secrets", SimpleNamespace(token_hex=_Replay(first).token_hex))
    second = _launched(run)
    assert second != first
    verified = run("audit", "verify", "--state-dir", state, second)
    assert verified.returncode == 0, verified.stdout + verified.stderr
