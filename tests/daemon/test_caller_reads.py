"""A launch reads its caller's trust policies in the worker thread that resolves its profile
(``nonod.sessions.CallerReads``): one hop less on every launch's path. (The refusals of an
unreadable policy, the same as when it was read on a thread of its own, are
tests/daemon/test_bad_inputs.py's and test_caller_files.py's.)"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from nonod import protocol as p
from nonod import trust
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


def test_the_trust_policies_are_read_in_the_profiles_worker_thread(
        daemon_thread: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker job of the daemon, with what it did: the trust policies' read is in the
    same job as the profile's resolution, and in no job of its own."""
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
    monkeypatch.setattr(trust, "read_policy_files",
                        _marking("trust", trust.read_policy_files))
    monkeypatch.setattr(ProfilePolicies, "_resolve_launch",
                        _marking("profile", ProfilePolicies._resolve_launch))
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
