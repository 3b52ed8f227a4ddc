"""What the daemon and the fork server keep of the memory their work freed (``nonod._malloc``,
``nonod._idle_trim``): each effect measured in a fresh interpreter, on glibc's own figures
(``/proc/self/smaps_rollup``, ``mallinfo2``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nonod import _malloc
from nonod._idle_trim import Burst

pytestmark = pytest.mark.skipif(not _malloc.can_trim(), reason="glibc's malloc only")

ANONYMOUS = """
def anonymous_kib():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Anonymous:"):
            return int(line.split()[1])
"""

# 40 MiB in blocks too large for Python's own allocator (glibc's heap), every 50th kept: the
# kept ones hold the heap's top up, so glibc returns nothing of the rest by itself.
LITTER = """
junk = [bytes(2000) for _ in range(20000)]
kept = junk[::50]
del junk
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (its allocator untouched by this test run)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], check=True,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_a_quiet_daemon_returns_what_a_burst_of_work_freed() -> None:
    # The daemon's own task, with its real trim, on a short interval: the burst is the litter.
    out = _run(ANONYMOUS + """
import trio
from nonod._idle_trim import trim_after_bursts

async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trim_after_bursts(interval=0.2, quiet=0.02))
        await trio.sleep(0.3)
""" + textwrap.indent(LITTER, "        ") + """
        before = anonymous_kib()
        # Quiet: one whole interval with (almost) no work is enough, a loaded host may
        # run it late (1 s did not always do at load 16). glibc returns nothing of it
        # by itself (the kept blocks hold the heap's top up): only the trim can end this.
        for _ in range(150):
            await trio.sleep(0.2)
            if before - anonymous_kib() > 20 * 1024:
                break
        print("returned", before - anonymous_kib())
        nursery.cancel_scope.cancel()

trio.run(main)
""").stdout
    returned = next(line for line in out.splitlines() if line.startswith("returned "))
    assert int(returned.split()[1]) > 20 * 1024  # KiB returned of about 40 MiB freed


def test_the_fork_servers_loop_returns_what_a_burst_freed_once_it_is_quiet() -> None:
    # The fork server has no timer: its loop ticks the trimmer each time it wakes with no
    # launch waiting (at least once a second). The burst is the litter, then quiet wakes.
    out = _run(ANONYMOUS + """
import time
from nonod._malloc import TrimAfterBursts

trimmer = TrimAfterBursts(interval=0.2, quiet=0.02)
""" + LITTER + """
before = anonymous_kib()
trimmed, ends = False, time.monotonic() + 30.0  # ticks until trimmed: at once, unloaded
while not trimmed and time.monotonic() < ends:
    time.sleep(0.05)  # the loop's wait in poll()
    trimmed = trimmer.tick()
print(trimmed, before - anonymous_kib())
""").stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 20 * 1024  # KiB returned of about 40 MiB freed


def test_a_quiet_daemon_frees_the_reference_cycles_a_burst_left() -> None:
    # A session with a proxy ends as a cycle (its server, acceptor, nurseries, tasks, records)
    # that refcounting never frees. Automatic collection is off here, so that only the task's
    # own collection can be what frees them (an idle daemon allocates too little to run one).
    freed = _run("""
import gc, weakref
import trio
from nonod._idle_trim import trim_after_bursts

class Node:
    pass

async def main():
    gc.disable()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trim_after_bursts(interval=0.2, quiet=0.02))
        await trio.sleep(0.3)
        nodes = [Node() for _ in range(200000)]  # the burst: CPU time, and cycles
        for a, b in zip(nodes[::2], nodes[1::2]):
            a.peer, b.peer = b, a
        last = weakref.ref(nodes[-1])
        del nodes, a, b
        assert last() is not None  # garbage, not yet freed
        # Quiet: one whole interval with (almost) no work is enough, a loaded host may
        # run it late; with collection off, only the task's own can free them.
        for _ in range(150):
            await trio.sleep(0.2)
            if last() is None:
                break
        print("freed", last() is None)
        nursery.cancel_scope.cancel()

trio.run(main)
""").stdout
    assert "freed True" in freed.splitlines(), freed


def test_a_burst_ends_once_and_a_busy_process_is_left_alone() -> None:
    burst = Burst(0.0, quiet=0.2)
    assert not burst.over(0.05)  # quiet from the start: nothing to return
    assert not burst.over(0.1)
    assert not burst.over(2.0)  # busy
    assert not burst.over(3.5)  # busy still: its free pages are about to be used again
    assert burst.over(3.55)  # the first quiet interval after: trim
    assert not burst.over(3.6)  # still quiet: once per burst
    assert not burst.over(3.75)  # idle work (0.15 s) never makes a burst
    assert not burst.over(3.9)
    assert not burst.over(4.5)  # the next burst
    assert burst.over(4.5)


def test_a_pinned_threshold_keeps_large_buffers_out_of_the_heap() -> None:
    # One large buffer freed (a module's code read whole, a 1 MiB receive buffer) raises glibc's
    # threshold; later buffers under it come from the heap, and the small blocks allocated
    # between them keep the heap from shrinking back.
    code = """
import ctypes, sys
from nonod import _malloc

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
        "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "pinned":
    _malloc.fix_mmap_threshold()
big = bytearray(1 << 20)
del big
start = libc.mallinfo2().arena
kept = []
for i in range(50):
    buffer = bytearray(200_000 + i * 1000)
    kept.append(bytearray(1000))
    del buffer
print((libc.mallinfo2().arena - start) // 1024)
"""
    grown: dict[str, int] = {}
    for mode in ("pinned", "moving"):
        grown[mode] = int(_run(code, mode).stdout)
    assert grown["pinned"] < 200  # KiB: the small blocks only
    assert grown["moving"] > 2 * grown["pinned"]
