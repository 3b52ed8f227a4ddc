"""A direct warm init gets a descriptor table of the fork server's first few descriptors and
what is lent to it, not a copy of every session's (``_lowfds``, ``_libc.fork_into``'s
``below``): the kernel's own record of the child's table (``FDSize`` in its status) says how
much was copied, whatever the child closes afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nonod.sandbox._lowfds import LowSlots

#: Run in a fresh interpreter: ``fork_into`` is for a single-threaded caller (the fork server).
CHILD = r"""
import json, os, resource, sys
from nonod.sandbox._libc import fork_into
from nonod.sandbox._lowfds import LowSlots

MANY = int(sys.argv[1]); LEND = sys.argv[2] == "lend"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, MANY + 200), hard))
slots = LowSlots()
null = os.open("/dev/null", os.O_RDONLY)
held = [os.dup(null) for _ in range(MANY)]  # a live session's descriptors, many of them
r, w = os.pipe()

def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])

def child(out):
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    os.write(out, json.dumps({"fdsize": status("FDSize"), "fds": fds, "out": out}).encode())
    os._exit(0)

with slots.lend([w] if LEND else []) as (lent, below):
    pid = fork_into(0, below)
    if pid == 0:
        child(lent[0] if lent else w)
    os.close(w)
    seen = json.loads(os.read(r, 1 << 20))
    os.waitpid(pid, 0)
still = all(os.readlink(f"/proc/self/fd/{fd}") == "/dev/null" for fd in held)
back = all(os.readlink(f"/proc/self/fd/{fd}") == "/" for fd in slots.slots)
print(json.dumps({"child": seen, "below": below, "held_open": still, "slots_back": back,
                  "lowest_held": min(held), "slots": list(slots.slots)}))
"""

MANY = 3000


def _run(mode: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(MANY), mode], capture_output=True,
                          text=True, timeout=60, check=False)
    if proc.returncode != 0 and "RLIMIT" in proc.stderr:
        pytest.skip("cannot open enough descriptors here")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_a_child_with_lent_descriptors_gets_a_table_of_the_low_ones_alone() -> None:
    got = _run("lend")
    child = got["child"]
    assert isinstance(child, dict)
    below = got["below"]
    assert isinstance(below, int) and 0 < below < got["lowest_held"]  # type: ignore[operator]
    assert child["fdsize"] == 64  # the kernel copied the descriptors below ``below`` alone
    assert child["out"] in got["slots"]  # type: ignore[operator]
    # none of the many (the listing's own descriptor is the lowest free one: ``below``)
    assert max(child["fds"]) <= below
    assert got["held_open"] and got["slots_back"]  # ours untouched, the slots restored


def test_without_lending_the_child_gets_a_copy_of_the_whole_table() -> None:
    got = _run("copy")
    child = got["child"]
    assert isinstance(child, dict)
    assert got["below"] == 0
    assert child["fdsize"] > MANY
    assert len(child["fds"]) > MANY


def test_more_descriptors_than_slots_are_not_lent() -> None:
    slots = LowSlots(2)
    r, w = os.pipe()
    try:
        with slots.lend([r, w, r]) as lent:
            assert lent == ((), 0)
        with slots.lend([r, w]) as (numbers, below):
            assert numbers == slots.slots and below == max(numbers) + 1
            assert os.path.sameopenfile(numbers[0], r) and os.path.sameopenfile(numbers[1], w)
            assert not os.get_inheritable(numbers[0])
        assert all(os.readlink(f"/proc/self/fd/{fd}") == "/" for fd in slots.slots)
    finally:
        os.close(r)
        os.close(w)
        for fd in (*slots.slots, slots._placeholder):
            os.close(fd)
