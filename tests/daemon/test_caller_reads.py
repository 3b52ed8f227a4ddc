"""A launch reads its caller's trust policies in the worker thread that resolves its profile
(``nonod.sessions.CallerReads``): one hop less on every launch's path. (The refusals of an
unreadable policy, the same as when it was read on a thread of its own, are
tests/daemon/test_bad_inputs.py's and test_caller_files.py's.)"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from nonod import _callerfs, trust
from nonod import protocol as p
from nonod._profile_source import ProfilePolicies

from .conftest import DaemonThread, session_env

_job = threading.local()


def _marking(mark: str, fn: Callable[..., object]) -> Callable[..., object]:
    def marked(*args: object, **kwargs: object) -> object:
        jobs = getattr(_job, "marks", None)
        if jobs is not None:
            jobs.add(mark)
        return fn(*args, **kwargs)
    return marked


def _count_jobs(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """Each worker job ``trio.to_thread.run_sync`` runs from now on, as the set of marks
    (``_marking``) of what it did."""
    jobs: list[set[str]] = []
    run_sync = trio.to_thread.run_sync

    async def counted(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        marks: set[str] = set()
        jobs.append(marks)

        def job() -> object:
            _job.marks = marks
            try:
                return fn(*args)
            finally:
                _job.marks = None
        return await run_sync(job, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    in_thread_then = _callerfs.in_thread_then

    async def counted_then(caller: object, fn: Callable[[], tuple[object, object]],
                           **kwargs: object) -> object:
        # A job that answers, then goes on in the same thread (a kept resolution's check).
        marks: set[str] = set()
        jobs.append(marks)

        def job() -> tuple[object, object]:
            _job.marks = marks
            try:
                return fn()
            finally:
                _job.marks = None
        return await in_thread_then(caller, job, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_callerfs, "in_thread_then", counted_then)
    monkeypatch.setattr(trust, "read_policy_files", _marking("trust", trust.read_policy_files))
    monkeypatch.setattr(ProfilePolicies, "_resolve_launch",
                        _marking("profile", ProfilePolicies._resolve_launch))
    return jobs


def test_the_trust_policies_are_read_in_the_profiles_worker_thread(
        daemon_thread: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker job of the daemon, with what it did: the trust policies' read is in the
    same job as the profile's resolution, and in no job of its own."""
    jobs = _count_jobs(monkeypatch)
    work = short_tmp / "work"
    work.mkdir()
    with daemon_thread.connect() as conn:
        conn.send(p.Launch(argv=("/bin/true",), cwd=str(work), env=session_env(work),
                           options=p.LaunchOptions(allow_cwd=True), detach=False,
                           stdio="null"))
        while not isinstance(reply := conn.receive(), p.Exited):
            assert not isinstance(reply, p.ErrorReply), reply
    assert {"profile", "trust"} in jobs
    assert {"trust"} not in jobs


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")
def test_the_system_daemon_reads_as_the_caller_in_the_profiles_worker_thread(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user of the system daemon: the caller's groups, its launch's own secret files and
    its program (looked for as the caller) come from the profile's job too, not from jobs of
    their own."""
    from nonod import _secretfiles, sandbox
    from nonod.audit import _writer

    from .conftest import hello, raw_client
    from .localusers import local_users, socket_group

    jobs = _count_jobs(monkeypatch)
    monkeypatch.setattr(_callerfs.Identity, "of",
                        classmethod(_marking("identity", _callerfs.Identity.of.__func__)))
    monkeypatch.setattr(_secretfiles, "secret_denials",
                        _marking("secrets", _secretfiles.secret_denials))
    monkeypatch.setattr(_writer, "_create_file", _marking("audit", _writer._create_file))
    monkeypatch.setattr(sandbox, "find_executable", _marking("program", sandbox.find_executable))
    daemon = DaemonThread(short_tmp, config=f'[daemon]\nsocket_group = "{socket_group()}"\n',
                          system=True).start()
    try:
        with local_users(short_tmp, 1) as (user,):
            work = user.home / "work"
            work.mkdir()
            os.chown(work, user.uid, user.gid)
            replies = [json.loads(line) for line in raw_client(daemon.socket, [
                hello(), {"type": "launch", "argv": ["true"], "cwd": str(work),
                          "env": session_env(work), "options": {"allow_cwd": True},
                          "detach": True, "stdio": "null"}], prefix=user.prefix())
                if line.startswith("{")]
            assert replies[1]["type"] == "launched", replies
    finally:
        daemon.stop()
    assert {"profile", "trust", "identity", "secrets", "program"} <= next(
        (marks for marks in jobs if "profile" in marks), set())
    assert all("profile" in marks for marks in jobs if marks & {"identity", "program"}), jobs
    # the daemon's own secret files are looked at (as the daemon) in the audit file's job
    assert all(marks & {"profile", "audit"} for marks in jobs if "secrets" in marks), jobs
