"""``nono-reaper``'s creation guard (``reaper_guard.c``) under a program that makes random
creation calls: random paths (refused names, ``..``, ``/proc/self`` and ``/dev/fd`` forms,
names of 255 and 256 bytes, bytes that are not UTF-8), pointers to nothing, to unmapped
memory and to the kernel's half, random descriptors, flags, modes, ``open_how`` sizes and
rename flags. Every call must be answered (the program finishes), no refused name may
appear, and the reaper must still report how the program ended; one more program storms
from a child while the program itself exits, and its exit code must still be reported at
once. Run with ``NONO_REAPER_BINARY`` naming the sanitized build too."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nonod.sandbox import _reaper

from ..conftest import SandboxUser
from .test_createguard import AFTER_REAPER, WORK_NAMES, layout_policy
from .test_createguard import layout as layout  # the fixture
from .test_reaper_guard import RAW
from .test_sandbox import probe

pytestmark = pytest.mark.userns

SEED = int(os.environ.get("NONO_FUZZ_SEED", "20261205"))
CALLS = int(os.environ.get("NONO_FUZZ_CALLS", "3000"))
NR = {
    "x86_64": {"open": 2, "creat": 85, "openat": 257, "openat2": 437, "mkdir": 83,
               "mkdirat": 258, "mknod": 133, "mknodat": 259, "symlink": 88, "symlinkat": 266,
               "link": 86, "linkat": 265, "rename": 82, "renameat": 264, "renameat2": 316},
    "aarch64": {"openat": 56, "openat2": 437, "mkdirat": 34, "mknodat": 33, "symlinkat": 36,
                "linkat": 37, "renameat": 38, "renameat2": 276},
}[os.uname().machine]

# The program: each call's arguments drawn from a seeded generator; each answer counted.
FUZZ = RAW + """
import errno, random, struct
rng = random.Random(SEED)
keep = []
def buf(data):
    b = ctypes.create_string_buffer(data, len(data) + 1)
    keep.append(b)
    return ctypes.addressof(b)
COMPONENTS = [b'.envrc', b'.ENVRC', b'.vscode', b'.github', b'.git', b'.gitmodules', b'src',
              b'.', b'..', b'', b'a', b'b', b'x' * 255, b'y' * 256, b'\\xff', b'\\xc0\\xae',
              b'.pre-commit-con\\xef\\xac\\x81g.yaml', b'.v\\xc5\\xbfcode', b'fifo']
PREFIXES = [b'', b'/', b'./', b'/proc/self/cwd/', b'/proc/thread-self/cwd/', b'/dev/fd/3/',
            b'/proc/self/fd/3/', b'/proc/1/cwd/', b'//', WORK + b'/', HOME + b'/', b'/tmp/']
def path():
    if rng.random() < 0.4:  # a fresh name in the guarded directory: what the reaper emulates
        return rng.choice([b'', b'./', WORK + b'/']) + b'n%d' % rng.randrange(200)
    parts = [rng.choice(COMPONENTS) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    return rng.choice(PREFIXES) + b'/'.join(parts) + rng.choice([b'', b'', b'/'])
def pointer():
    kind = rng.random()
    if kind < 0.9:
        return buf(path())
    return rng.choice([0, page + 4096, page + 4095, 0xffff800000000000, (1 << 63) + 5,
                       (1 << 64) - 1, 1])
DIRFDS = [-100, -100, -100, 0, 1, 3, 4, 99, -1, 0x7fffffff, (1 << 32) - 100, (1 << 64) - 100]
def dirfd():
    return rng.choice(DIRFDS)
def flags():  # always O_NONBLOCK: an open of a FIFO made earlier must not wait for a reader
    f = 0o4000 | rng.choice([0o101, 0o1101, 0o301, 0o100, 0o102, 0o2000101, 0o10000101, 0o20200000,
                    0o20200101, 0o40000101, rng.getrandbits(32), rng.getrandbits(64)])
    return f & ((1 << 64) - 1)
def mode():  # never a FIFO: creat() of one (no O_NONBLOCK there) would wait for a reader
    m = rng.choice([0o644, 0o7777, 0o20644, 0o60644, 0o140644, rng.getrandbits(32),
                    rng.getrandbits(64)])
    return m ^ 0o10000 if m & 0o170000 == 0o10000 else m
def how():
    size = rng.choice([0, 8, 24, 24, 24, 32, 4096, 4097, 1 << 40])
    raw = struct.pack('<QQQ', flags(), mode(), rng.choice([0, 0, 1, 2, 4, 8, 0x10, 0x20, 0x3f,
                                                           rng.getrandbits(64)]))
    raw += bytes(max(0, min(size, 64) - 24)) if rng.random() < 0.8 else rng.randbytes(40)
    return rng.choice([buf(raw), 0, page + 4096 - 8]), size
CALLS = []
for name, nr in NR.items():
    CALLS.append((name, nr))
answers = {}
for i in range(N):
    name, nr = rng.choice(CALLS)
    if name in ('open',):
        args = (pointer(), flags(), mode())
    elif name == 'creat':
        args = (pointer(), mode())
    elif name == 'openat':
        args = (dirfd(), pointer(), flags(), mode())
    elif name == 'openat2':
        h, size = how()
        args = (dirfd(), pointer(), h, size)
    elif name == 'mkdir':
        args = (pointer(), mode())
    elif name == 'mkdirat':
        args = (dirfd(), pointer(), mode())
    elif name == 'mknod':
        args = (pointer(), mode(), 0)
    elif name == 'mknodat':
        args = (dirfd(), pointer(), mode(), 0)
    elif name == 'symlink':
        args = (pointer(), pointer())
    elif name == 'symlinkat':
        args = (pointer(), dirfd(), pointer())
    elif name in ('link', 'rename'):
        args = (pointer(), pointer())
    elif name == 'renameat':
        args = (dirfd(), pointer(), dirfd(), pointer())
    else:  # linkat, renameat2
        args = (dirfd(), pointer(), dirfd(), pointer(), rng.choice(
            [0, 0, 1, 2, 4, 0x400, 0x1000, 0x1400, rng.getrandbits(32)]))
    r = libc.syscall(nr, *[ctypes.c_ulong(a & ((1 << 64) - 1)) for a in args])
    if r >= 0 and name in ('open', 'creat', 'openat', 'openat2') and r > 2:
        os.close(r)
    e = 'OK' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), '?')
    answers[e] = answers.get(e, 0) + 1
print('done', sum(answers.values()), sorted(answers.items()), flush=True)
"""

# The program's child storms the guard; the program exits 7 while it does.
STORM = AFTER_REAPER + """
import threading
pid = os.fork()
if pid == 0:
    def storm(i):
        n = 0
        while True:
            n += 1
            try:
                os.close(os.open(f's{i}-{n % 50}', os.O_CREAT | os.O_WRONLY, 0o644))
                os.rename(f's{i}-{n % 50}', '.envrc')
            except OSError:
                pass
    for i in range(8):
        threading.Thread(target=storm, args=(i,), daemon=True).start()
    threading.Event().wait()
time.sleep(0.5)
print('leaving', flush=True)
os._exit(7)
"""


def test_random_creation_calls_are_all_answered(sandbox_user: SandboxUser,
                                                layout: tuple[Path, Path]) -> None:
    """Every random call gets an answer, the refused names never appear, and the program's
    exit status is reported."""
    home, work = layout
    code = (f"SEED, N, NR = {SEED}, {CALLS}, {NR!r}\n"
            f"WORK, HOME = {os.fsencode(work)!r}, {os.fsencode(home)!r}\n" + FUZZ)
    r = sandbox_user.run(layout_policy(home, work), probe(code), cwd=str(work),
                         env=(("HOME", str(home)),), timeout=300)
    assert r.code == 0, r.stderr
    done = [line for line in r.stdout.splitlines() if line.startswith("done ")]
    assert done and done[0].split()[1] == str(CALLS), r.stdout
    for name in WORK_NAMES:
        assert not os.path.lexists(work / name), name
    for name in (".bashrc", ".ssh", ".profile"):
        assert not os.path.lexists(home / name), name


def test_the_exit_is_reported_while_a_child_storms_the_guard(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """A child of the program makes creation calls from eight threads as fast as it can;
    the program exits 7 meanwhile: the reaper reports 7 and the session ends at once (the
    storm does not keep it, or its exit record, waiting)."""
    home, work = layout
    start = time.monotonic()
    r = sandbox_user.run(layout_policy(home, work), probe(STORM), cwd=str(work),
                         env=(("HOME", str(home)),), timeout=60)
    took = time.monotonic() - start
    assert "leaving" in r.stdout, r.stderr
    assert r.code == 7, (r.code, r.stderr)
    assert took < 30, took
    assert not os.path.lexists(work / ".envrc")


ASAN = _reaper.BINARY.with_name("nono-reaper-asan")


@pytest.mark.skipif(not ASAN.is_file(), reason="the sanitized build is not made (make reaper-asan)")
def test_the_sanitized_build_runs_as_the_init(sandbox_user: SandboxUser, layout: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The review build (``make reaper-asan``) starts under the session's seccomp filter
    and serves the guard (it died before main when AddressSanitizer set RLIMIT_CORE to 0,
    refused by the filter: every test run with it failed)."""
    home, work = layout
    monkeypatch.setenv(_reaper.OVERRIDE, str(ASAN))
    r = sandbox_user.run(layout_policy(home, work), probe(AFTER_REAPER + (
        "t(lambda: os.close(os.open('made', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        "t(lambda: os.close(os.open('.envrc', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        "sys.exit(5)\n")), cwd=str(work), env=(("HOME", str(home)),))
    assert (r.code, r.stdout.splitlines()) == (5, ["OK ", "EACCES"]), r.stderr
    assert (work / "made").is_file()
