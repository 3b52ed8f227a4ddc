"""A launch whose profile resolution is kept (``ResolutionCache``) uses it at once and checks it
beside the launch's preparation (``ProfilePolicies.resolve_launch_early``): the launch's gate,
the last point before the fork server hears of the launch, waits for that check. A stale
resolution never reaches a program: the prepared launch is dropped (no session, no audit file,
no ledger line) and the launch is made again on a fresh resolution.

The check is held (``FsLook.unchanged`` waits for the test) while a granted path changes: a
symbolic link the launch names (``--read LINK``) is re-pointed from one directory to another.
The program reads a file of the new target: it can only if it runs under the fresh
resolution (the kept one grants the old target only, and the new one is not in its view).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nonoctl.client import Connection
from nonod import protocol as p
from nonod.audit import verify_session_file
from nonod.profiles._fslook import FsLook
from nonod.sessions._slot import SLOT_DIR

from .conftest import DaemonThread, session_env


@dataclass
class _Held:
    """The next check of a kept resolution waits until released (then answers truly)."""

    checking: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    answers: list[bool] = field(default_factory=list)
    armed: bool = True


@pytest.fixture
def held_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Held]:
    held = _Held()
    unchanged = FsLook.unchanged

    def holding(look: FsLook) -> bool:
        if held.armed:
            held.armed = False
            held.checking.set()
            assert held.release.wait(30), "the test never released the check"
        answer = unchanged(look)
        held.answers.append(answer)
        return answer

    monkeypatch.setattr(FsLook, "unchanged", holding)
    yield held
    held.release.set()


@dataclass
class _Tree:
    work: Path
    link: Path
    old: Path
    new: Path


@pytest.fixture
def tree(short_tmp: Path) -> _Tree:
    work, old, new = short_tmp / "work", short_tmp / "old", short_tmp / "new"
    for directory in (work, old, new):
        directory.mkdir()
    (old / "file").write_text("old\n")
    (new / "file").write_text("new\n")
    link = short_tmp / "link"
    link.symlink_to(old)
    return _Tree(work, link, old, new)


def _launch(tree: _Tree, path: Path) -> p.Launch:
    return p.Launch(argv=("/bin/cat", str(path)), cwd=str(tree.work),
                    env=session_env(tree.work),
                    options=p.LaunchOptions(allow_cwd=True, block_net=True,
                                            read=(str(tree.link),)),
                    detach=False, stdio="null")


def _run(conn: Connection, launch: p.Launch) -> tuple[str, int | None]:
    conn.send(launch)
    launched = conn.receive()
    assert isinstance(launched, p.Launched), launched
    exited = conn.receive()
    assert isinstance(exited, p.Exited), exited
    return launched.session.id, exited.exit_code


def _sessions(daemon: DaemonThread) -> set[str]:
    return {entry.name for entry in (daemon.state_dir / "sessions").iterdir()
            if entry.is_dir() and entry.name != SLOT_DIR}


def _in_ledger(daemon: DaemonThread, session: str) -> bool:
    return f'"{session}"' in (daemon.state_dir / "ledger.ndjson").read_text()


def _wait_starting(daemon: DaemonThread) -> p.SessionInfo:
    """The launch's session, once the registry shows it (it is ``starting`` until its
    program runs)."""
    deadline = time.monotonic() + 30
    with daemon.connect() as conn:
        while True:
            listed = conn.request(p.ListSessions(all=True))
            assert isinstance(listed, p.SessionList), listed
            live = [s for s in listed.sessions if s.state == "starting"]
            if live:
                return live[0]
            assert time.monotonic() < deadline, "the held launch never reached the registry"


def test_a_kept_resolution_that_changed_while_checked_never_reaches_the_program(
        daemon_thread: DaemonThread, tree: _Tree, held_check: _Held) -> None:
    held_check.armed = False  # the first launch resolves afresh: nothing kept to check
    with daemon_thread.connect() as conn:
        first, code = _run(conn, _launch(tree, tree.old / "file"))
        assert code == 0
        held_check.armed = True
        conn.send(_launch(tree, tree.new / "file"))
        assert held_check.checking.wait(30), "the kept resolution was not checked"
        # The launch went on without waiting for the check; its program has not started.
        starting = _wait_starting(daemon_thread)
        assert starting.state == "starting" and starting.pid is None, starting
        tree.link.unlink()
        tree.link.symlink_to(tree.new)  # the granted link now points elsewhere
        held_check.release.set()
        launched = conn.receive()
        assert isinstance(launched, p.Launched), launched
        exited = conn.receive()
        assert isinstance(exited, p.Exited), exited
    assert held_check.answers[0] is False
    # It ran under the fresh resolution: the new target is in its view (under the kept one
    # /bin/cat exits 1, "No such file or directory").
    assert exited.exit_code == 0, exited
    second = launched.session.id
    assert starting.id != second
    # The launch dropped at its gate left nothing: no session directory, no ledger line.
    assert _sessions(daemon_thread) == {first, second}
    assert _in_ledger(daemon_thread, first) and _in_ledger(daemon_thread, second)
    assert not _in_ledger(daemon_thread, starting.id)
    assert verify_session_file(
        daemon_thread.state_dir / "sessions" / second / "audit.ndjson").sealed


def test_a_kept_resolution_whose_check_passes_is_launched_once(
        daemon_thread: DaemonThread, tree: _Tree, held_check: _Held) -> None:
    held_check.armed = False
    with daemon_thread.connect() as conn:
        first, code = _run(conn, _launch(tree, tree.old / "file"))
        assert code == 0
        held_check.armed = True
        conn.send(_launch(tree, tree.old / "file"))
        assert held_check.checking.wait(30), "the kept resolution was not checked"
        starting = _wait_starting(daemon_thread)
        assert starting.pid is None, starting
        held_check.release.set()
        launched = conn.receive()
        assert isinstance(launched, p.Launched), launched
        exited = conn.receive()
        assert isinstance(exited, p.Exited), exited
    assert held_check.answers == [True]
    assert exited.exit_code == 0
    assert launched.session.id == starting.id  # the very launch that waited: not redone
    assert _in_ledger(daemon_thread, first) and _in_ledger(daemon_thread, starting.id)


def test_a_launch_dropped_at_its_gate_is_not_announced_to_audit_followers(
        daemon_thread: DaemonThread, tree: _Tree, held_check: _Held) -> None:
    import json

    held_check.armed = False
    with daemon_thread.connect() as follower, daemon_thread.connect() as conn:
        reply = follower.request(p.AuditFollow())
        assert isinstance(reply, p.Ok), reply
        _run(conn, _launch(tree, tree.old / "file"))
        held_check.armed = True
        conn.send(_launch(tree, tree.new / "file"))
        assert held_check.checking.wait(30), "the kept resolution was not checked"
        dropped = _wait_starting(daemon_thread).id
        tree.link.unlink()
        tree.link.symlink_to(tree.new)
        held_check.release.set()
        launched = conn.receive()
        assert isinstance(launched, p.Launched), launched
        assert isinstance(conn.receive(), p.Exited)
        announced: set[str] = set()
        while True:  # until the redone session's seal
            record = follower.receive()
            assert isinstance(record, p.AuditRecord), record
            announced.add(record.session)
            if record.session == launched.session.id and \
                    json.loads(bytes(record.record))["event"]["type"] == "seal":
                break
    assert dropped not in announced


def test_a_launch_dropped_at_its_gate_leaves_its_secret_binding_to_the_redone_one(
        daemon_thread: DaemonThread, tree: _Tree, held_check: _Held,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """known1: the dropped launch bound its route's secret while it was prepared; it never
    ran, so its binding goes, and the launch redone in its place binds it and says so (its
    ``secrets_bound``, the note ``nonoctl launch`` prints). Before, the redone launch found
    the secret bound already and said nothing: no launch that ran ever told of it."""
    import json

    monkeypatch.setenv("NONO_KEPT_TOKEN", "a-token-of-the-test")
    profile = tree.work.parent / "routed.json"
    profile.write_text(json.dumps({
        "meta": {"name": "routed"},
        "network": {"credentials": ["kept"], "custom_credentials": {"kept": {
            "upstream": "https://api.example.com", "credential_key": "env://NONO_KEPT_TOKEN",
            "env_var": "TOKEN"}}}}))

    def launch(path: Path) -> p.Launch:
        return p.Launch(argv=("/bin/cat", str(path)), cwd=str(tree.work),
                        env=session_env(tree.work), profile=str(profile),
                        options=p.LaunchOptions(allow_cwd=True, read=(str(tree.link),)),
                        detach=False, stdio="null")

    held_check.armed = False
    with daemon_thread.connect() as conn:
        conn.send(launch(tree.old / "file"))
        first = conn.receive()
        assert isinstance(first, p.Launched), first
        assert first.session.secrets_bound == (
            "env://NONO_KEPT_TOKEN -> https://api.example.com",), first.session
        assert isinstance(conn.receive(), p.Exited)
        # Forgotten (``secret hosts --clear``): the next launch's route binds it again.
        cleared = conn.request(p.SecretBindings(reference="env://NONO_KEPT_TOKEN", clear=True))
        assert isinstance(cleared, p.SecretBound), cleared
        held_check.armed = True
        conn.send(launch(tree.new / "file"))
        assert held_check.checking.wait(30), "the kept resolution was not checked"
        _wait_starting(daemon_thread)
        tree.link.unlink()
        tree.link.symlink_to(tree.new)
        held_check.release.set()
        redone = conn.receive()
        assert isinstance(redone, p.Launched), redone
        assert isinstance(conn.receive(), p.Exited)
    assert held_check.answers[0] is False
    # before: () (the dropped launch's binding was found)
    assert redone.session.secrets_bound == (
        "env://NONO_KEPT_TOKEN -> https://api.example.com",), redone.session
    assert "NONO_KEPT_TOKEN" in (daemon_thread.state_dir / "secret-hosts.json").read_text()
