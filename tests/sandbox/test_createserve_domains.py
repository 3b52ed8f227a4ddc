"""``_createserve.Domains``, the init's record of nested Landlock domains, on real processes
and ``/proc``: this test process stands for the program, forked children for its tools (no
session: what is checked is the walk and the bookkeeping; tests/redteam/test_guard_nested_domain.py
runs the same in sessions, under each init)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nonod.sandbox import _createserve
from nonod.sandbox._createserve import Domains


@contextmanager
def _waiting(depth: int = 1) -> Iterator[list[int]]:
    """The pids of a chain of ``depth`` processes below this one, each waiting until the
    block ends."""
    hold_r, hold_w = os.pipe()
    ready_r, ready_w = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(hold_w)
        level = 0
        while level < depth - 1 and os.fork() == 0:
            level += 1
        os.write(ready_w, b"%d %d\n" % (level, os.getpid()))
        os.read(hold_r, 1)
        os._exit(0)
    os.close(hold_r)
    os.close(ready_w)
    pids = [0] * depth
    with os.fdopen(ready_r, "rb") as ready:
        for _ in range(depth):
            level, pid = map(int, ready.readline().split())
            pids[level] = pid
    try:
        yield pids
    finally:
        os.close(hold_w)
        os.waitpid(first, 0)


def _mark(domains: Domains, tid: int) -> None:
    domains.mark(tid, domains.confined, lambda: True)


def test_a_chain_is_known_until_it_passes_a_marked_process() -> None:
    domains = Domains(os.getpid())
    with _waiting(3) as (a, b, c), _waiting() as (other,):
        assert [_createserve._stat(p)[0] for p in (b, c)] == [a, b]
        assert domains.known(c)  # nothing marked: no walk
        _mark(domains, other)
        assert domains.known(c) and domains.known(os.getpid())
        assert not domains.known(other)
        _mark(domains, b)
        assert domains.known(a)
        assert not domains.known(b) and not domains.known(c)


def test_an_orphan_has_no_chain_to_the_program() -> None:
    """A child's child whose parent exited is reparented above this process: unknown."""
    domains = Domains(os.getpid())
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            os.close(go_w)
            os.write(ready_w, b"%d\n" % os.getpid())
            os.read(go_r, 1)
            os._exit(0)
        os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        orphan = int(os.read(ready_r, 32))
        os.waitpid(middle, 0)
        ppid = _createserve._stat(orphan)[0]
        assert ppid != middle  # reparented already
        if ppid == os.getpid():
            pytest.skip("this process is a child subreaper: it adopted the orphan")
        assert domains.known(orphan)  # nothing marked: no walk
        with _waiting() as (other,):
            _mark(domains, other)
            assert not domains.known(orphan) and domains.known(os.getpid())
    finally:
        os.close(go_w)
        os.close(ready_r)


def test_a_thread_marks_its_whole_process() -> None:
    domains = Domains(os.getpid())
    with _waiting() as (child,):
        tids: list[int] = []
        done = threading.Event()

        def run() -> None:
            tids.append(threading.get_native_id())
            done.wait(10)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            while not tids:
                pass
            assert domains.known(child)
            _mark(domains, tids[0])
            assert (os.getpid(), _createserve._stat(os.getpid())[1]) in domains.confined
            assert not domains.known(threading.get_native_id()) and not domains.known(child)
        finally:
            done.set()
            thread.join()


def test_the_dead_are_swept_and_a_table_full_of_the_living_stops_emulation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_createserve, "MAX_MARKS", 2)
    domains = Domains(os.getpid())
    with _waiting() as (alive,), _waiting() as (third,):
        with _waiting() as (dies,):
            _mark(domains, alive)
            _mark(domains, dies)
        assert len(domains.confined) == 2  # (one of them dead now)
        _mark(domains, third)  # full: the dead one is swept
        assert {pid for pid, _ in domains.confined} == {alive, third} and not domains.lost
        assert domains.known(os.getpid())
        with _waiting() as (fourth,):
            _mark(domains, fourth)  # full of the living: stop emulating for anyone
            assert domains.lost and not domains.known(os.getpid())


def test_a_mark_that_cannot_be_read_stops_emulation_only_if_the_call_still_waits() -> None:
    domains = Domains(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # gone: its /proc entry cannot be read
    domains.mark(pid, domains.confined, lambda: False)
    assert not domains.lost and not domains.confined
    domains.mark(pid, domains.confined, lambda: True)
    assert domains.lost and not domains.known(os.getpid())


def test_a_subreaper_on_the_way_makes_a_chain_unknown() -> None:
    domains = Domains(os.getpid())
    with _waiting(2) as (a, b), _waiting() as (other,):
        assert _createserve._stat(b)[0] == a
        _mark(domains, other)
        assert domains.known(b)
        domains.mark(a, domains.subreapers, lambda: True)
        assert domains.known(a) and not domains.known(b)
