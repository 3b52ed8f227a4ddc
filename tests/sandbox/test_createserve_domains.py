"""``_createserve.Domains``, the init's record of nested Landlock domains, on real processes
and ``/proc``: this test process stands for the program, forked children for its tools (no
session: what is checked is the walk and the bookkeeping; tests/redteam/test_guard_nested_domain.py
runs the same in sessions, under each init)."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def test_a_mark_the_sweep_cannot_read_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """review24: a sweep that cannot read a marked process (no descriptor left, no memory)
    must not take it for gone: its children would then be walked to the program. Only a
    process that is not there (or whose pid another took) is swept; a table still full
    after that stops emulation."""
    monkeypatch.setattr(_createserve, "MAX_MARKS", 2)
    domains = Domains(os.getpid())
    with _waiting(2) as (tool, below):
        with _waiting() as (dies,):
            _mark(domains, tool)
            _mark(domains, dies)
        free = os.open("/dev/null", os.O_RDONLY)
        os.close(free)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (free, hard))  # every open: EMFILE
        try:
            with pytest.raises(OSError) as raised:
                os.open("/dev/null", os.O_RDONLY)
            assert raised.value.errno == errno.EMFILE
            room = domains._room(domains.confined)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert not room and {pid for pid, _ in domains.confined} == {tool, dies}
        assert not domains.known(below) and not domains.known(tool)
        assert domains._room(domains.confined)  # readable again: the dead one goes
        assert {pid for pid, _ in domains.confined} == {tool}
        assert not domains.known(below) and domains.known(os.getpid())


# reaper_guard.c's half of the sweep, on the same real processes: its functions are static,
# so the harness includes the file whole (as bench/createguard_lineage.c does).
SWEEP_HARNESS = r"""
#define main reaper_guard_unused_main
#include "reaper_guard.c"
#undef main
#include <sys/resource.h>

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    pid_t tool = (pid_t)atoi(argv[1]), below = (pid_t)atoi(argv[2]), ppid;
    uint64_t start;
    guard_program(getpid());
    if (lost || proc_stat(tool, &ppid, &start) < 0)
        return 3;
    confined.v[0] = (struct proc){tool, start};
    for (confined.n = 1; confined.n < MAX_MARKS; confined.n++) /* pids nobody has */
        confined.v[confined.n] = (struct proc){(pid_t)(0x3FFFFFFF - confined.n), 1};
    struct rlimit was, none;
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0 || getrlimit(RLIMIT_NOFILE, &was) < 0)
        return 4;
    close(fd);
    none = (struct rlimit){(rlim_t)fd, was.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &none) < 0 || open("/dev/null", O_RDONLY) >= 0 || errno != EMFILE)
        return 5;
    int fits = room(&confined);
    if (setrlimit(RLIMIT_NOFILE, &was) < 0)
        return 6;
    printf("%d %d %d %d", fits, in_marks(&confined, tool, start), known(below), known(tool));
    fits = room(&confined);
    printf(" %d %zu %d %d\n", fits, confined.n, known(below), known(getpid()));
    return 0;
}
"""


def test_a_mark_the_c_sweep_cannot_read_is_kept(tmp_path: Path) -> None:
    """The same as :func:`test_a_mark_the_sweep_cannot_read_is_kept`, for the C init."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    sources = Path(__file__).parents[2] / "nonod" / "sandbox"
    (tmp_path / "sweep.c").write_text(SWEEP_HARNESS)
    subprocess.run([cc, "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    f"-I{sources}", "-o", str(tmp_path / "sweep"), str(tmp_path / "sweep.c"),
                    str(sources / "reaper_util.c")], check=True)
    with _waiting(2) as (tool, below):
        r = subprocess.run([str(tmp_path / "sweep"), str(tool), str(below)],
                           capture_output=True, text=True, timeout=120,
                           env={"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"})
    assert r.returncode == 0, r.stderr[-4000:]
    # unreadable: kept, the table still full, the tool's child unknown; readable: swept
    assert r.stdout.split() == ["0", "1", "0", "0", "1", "1", "0", "1"]
