"""A launch's plan is made in a thread of the session's user: plans stuck in one user's file
system (the walk for hard-linked files lists the writable grants) leave the daemon's shared
threads, and other users' launches, alone."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from nonod import _callerfs
from nonod.errors import LaunchError
from nonod.policy import Access
from nonod.sandbox import LaunchRequest, _api, open_launcher

from ..conftest import NOBODY
from .test_sandbox import policy

_LIBC = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


@contextlib.contextmanager
def _unanswered_fuse(where: Path) -> Iterator[None]:
    """A FUSE file system at ``where`` whose server never answers: every look inside it
    waits (its ``INIT`` is never read) until the device is closed on the way out."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if _LIBC.mount(b"nono-stuck", str(where).encode(), b"fuse", 0, options) != 0:
            pytest.skip(f"no FUSE mount here ({os.strerror(ctypes.get_errno())})")
        try:
            yield
        finally:
            os.close(fd)  # (aborts the connection: the stuck looks return ENOTCONN)
            fd = -1
            _LIBC.umount2(str(where).encode(), MNT_DETACH)
    finally:
        if fd >= 0:
            os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                    reason="mounts a FUSE file system")
def test_plans_stuck_in_one_users_file_system_leave_another_users_launch_alone(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs, mine = world_tmp / "theirs", world_tmp / "mine"
    # The stuck plans are not given up (30 s) within the bounds below, however loaded the
    # host: their threads stay taken for the whole test.
    monkeypatch.setattr(_api, "PLAN_TIMEOUT", 300.0)
    (theirs / "stuck").mkdir(parents=True)
    mine.mkdir()
    stuck_launches = 8

    async def main() -> None:
        shared = trio.to_thread.current_default_thread_limiter()
        shared.total_tokens = 6  # (the daemon's 40, lowered: six stuck plans fill it)
        own = _callerfs.threads_of(NOBODY)
        async with open_launcher() as launcher, trio.open_nursery() as nursery:
            for _ in range(stuck_launches):
                nursery.start_soon(launcher.launch, policy((theirs, Access.READWRITE)),
                                   LaunchRequest(argv=("/bin/true",), cwd=str(theirs),
                                                 uid=NOBODY, gid=NOBODY))
            # (state no event announces: their threads taken; bounds generous for a loaded
            # host, the stuck plans hold their threads until the end)
            with trio.fail_after(60):
                while shared.borrowed_tokens < shared.total_tokens and \
                        own.borrowed_tokens < own.total_tokens:
                    await trio.sleep(0.01)
            with trio.fail_after(60):
                proc = await launcher.launch(policy((mine, Access.READWRITE)),
                                             LaunchRequest(argv=("/bin/true",), cwd=str(mine)))
                assert (await proc.wait_exited()).code == 0
            nursery.cancel_scope.cancel()

    with _unanswered_fuse(theirs / "stuck"):
        trio.run(main)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                    reason="mounts a FUSE file system")
def test_a_plan_stuck_in_a_file_system_is_a_launch_error_in_time(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = world_tmp / "theirs"
    (theirs / "stuck").mkdir(parents=True)
    monkeypatch.setattr(_api, "PLAN_TIMEOUT", 1.0)

    async def main() -> None:
        async with open_launcher() as launcher:
            # (the plan's 1 s limit, or never: 30 s for a loaded host)
            with trio.fail_after(30), pytest.raises(LaunchError, match="plan was not made"):
                await launcher.launch(policy((theirs, Access.READWRITE)),
                                      LaunchRequest(argv=("/bin/true",), cwd=str(theirs),
                                                    uid=NOBODY, gid=NOBODY))

    with _unanswered_fuse(theirs / "stuck"):
        trio.run(main)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                    reason="mounts a FUSE file system")
def test_a_plan_past_the_bound_of_all_users_threads_is_refused_at_once(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every thread of all users taken (stuck plans of one user here, the bound lowered
    to theirs), another user's plan is refused at once, not queued behind them."""
    theirs, mine = world_tmp / "theirs", world_tmp / "mine"
    (theirs / "stuck").mkdir(parents=True)
    mine.mkdir()
    monkeypatch.setattr(_api, "PLAN_TIMEOUT", 300.0)
    monkeypatch.setattr(_callerfs, "THREADS_IN_ALL", _callerfs.THREADS_PER_CALLER)

    async def main() -> None:
        own = _callerfs.threads_of(NOBODY)
        async with open_launcher() as launcher, trio.open_nursery() as nursery:
            for _ in range(_callerfs.THREADS_PER_CALLER):
                nursery.start_soon(launcher.launch, policy((theirs, Access.READWRITE)),
                                   LaunchRequest(argv=("/bin/true",), cwd=str(theirs),
                                                 uid=NOBODY, gid=NOBODY))
            with trio.fail_after(60):  # (state no event announces: their threads taken)
                while own.borrowed_tokens < own.total_tokens:
                    await trio.sleep(0.01)
            with trio.fail_after(10), pytest.raises(_callerfs.ThreadsExhausted,
                                                    match="refused at once"):
                await launcher.launch(policy((mine, Access.READWRITE)),
                                      LaunchRequest(argv=("/bin/true",), cwd=str(mine)))
            nursery.cancel_scope.cancel()

    with _unanswered_fuse(theirs / "stuck"):
        trio.run(main)
