"""``nono-reaper``'s parsers fed random and mutated input, run as the real binary: the
creation guard's configuration (``NGC2``, read by the init), the view guard's state
(``NGO1``, read by ``--outer`` and ``--repair``), a repair server's job message (``J``, a
number and four descriptors), the command lines and the daemon's requests on the control
socket. Whatever it gets, the binary must refuse or go on: an exit status it documents,
never a signal (a crash, or a sanitizer's abort in the ``make reaper-asan`` build, which
these runs use when ``NONO_REAPER_BINARY`` names it).

Each run is one process with nothing to act on: the init with no child (it reports and
exits at once), a repair whose session has already ended (its pidfd names a reaped
process, so ``setns`` fails with ``ESRCH`` after the state is read). Nothing is mounted or
killed. The inputs come from a seeded generator: a failure prints its seed and case."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from nonod.sandbox import _reaper
from nonod.sandbox._createserve import Supervisor
from nonod.sandbox._viewguard import ViewGuard

BINARY = Path(os.environ.get(_reaper.OVERRIDE) or _reaper.BINARY)
if not BINARY.is_file():
    pytest.skip("nono-reaper is not built (make)", allow_module_level=True)

SEED = int(os.environ.get("NONO_FUZZ_SEED", "20261205"))
ROUNDS = int(os.environ.get("NONO_FUZZ_ROUNDS", "300"))
# The sanitized build is dynamic and leaks at exit on purpose (the state lives for the
# process): a leak report is not what is looked for here.
ENV = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1"}


# ------------------------------------------------------------------ valid inputs to mutate

class _Guard:
    """What ``guard_config`` reads of a supervisor."""

    def __init__(self, rng: random.Random) -> None:
        def names() -> frozenset[str]:
            return frozenset(rng.choice([".envrc", ".git", ".vscode", "x" * rng.randint(1, 300)])
                             for _ in range(rng.randint(0, 4)))
        self.refused = {(rng.getrandbits(64), rng.getrandbits(64)): names()
                        for _ in range(rng.randint(0, 5))}
        self.refused_at = {os.fsencode("/w" + "/d" * rng.randint(0, 50)): names()
                           for _ in range(rng.randint(0, 3))}
        self.ruled = {(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(rng.randint(0, 6))}
        self.domains = _Domains(rng)


class _Domains:
    """What ``guard_config`` reads of the nested domains seen so far."""

    def __init__(self, rng: random.Random) -> None:
        def procs() -> set[tuple[int, int]]:
            return {(rng.randint(1, 1 << 22), rng.getrandbits(64))
                    for _ in range(rng.randint(0, 4))}
        self.lost = rng.random() < 0.2
        self.confined = procs()
        self.subreapers = procs()


class _Op:
    def __init__(self, rng: random.Random) -> None:
        self.kind = rng.choice([5, 6, 7, 8, 9, rng.getrandbits(32)])
        self.absent = rng.random() < 0.5
        self.target = "/t" * rng.randint(1, 40)
        self.source = "s" * rng.randint(0, 64)


class _View:
    """What ``outer_config`` reads of a view guard."""

    def __init__(self, rng: random.Random) -> None:
        self.ops = [_Op(rng) for _ in range(rng.randint(0, 6))]
        self.dirs = ["/d" * rng.randint(1, 30) for _ in range(rng.randint(0, 6))]
        self.watched = [(rng.getrandbits(64), rng.getrandbits(64)) for _ in self.dirs]
        self._mounts = {op.target: rng.randint(-1, 1 << 40) for op in self.ops}

    def mounted(self, target: str) -> int:
        return self._mounts[target]


def guard_config(rng: random.Random) -> bytes:
    data = _reaper.guard_config(cast(Supervisor, _Guard(rng)))
    assert data is not None
    return data


def outer_config(rng: random.Random) -> bytes:
    return _reaper.outer_config(cast(ViewGuard, _View(rng)))


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random edits of ``data``: bit flips, length fields made huge or off by one,
    truncation, insertion, random bytes."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(7)
        at = rng.randrange(len(buf) + 1)
        if how == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif how == 1 and len(buf) >= 4:  # a u32 (a count or a length) set to an edge
            at = min(at, len(buf) - 4)
            value = rng.choice([0, 1, 0xFF, 0xFFFF, 0x10000, 0x10001, 0x7FFFFFFF, 0x80000000,
                                0xFFFFFFFE, 0xFFFFFFFF,
                                struct.unpack_from("<I", buf, at)[0] + rng.choice([-1, 1])])
            struct.pack_into("<I", buf, at, value & 0xFFFFFFFF)
        elif how == 2:
            del buf[at:]
        elif how == 3:
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif how == 4:
            del buf[at:at + rng.randint(1, 16)]
        elif how == 5 and buf:
            end = min(len(buf), at + rng.randint(1, 32))
            buf[at:end] = rng.randbytes(end - at)
        else:
            buf += rng.randbytes(rng.randint(0, 64))
    return bytes(buf)


def inputs(rng: random.Random, valid: Callable[[random.Random], bytes], magic: bytes
           ) -> Iterator[bytes]:
    """The valid input as is, edge cases, then mutants of valid ones and random bytes."""
    yield valid(rng)
    yield b""
    yield magic
    yield magic + b"\xff\xff\xff\xff"
    yield magic + bytes(4 * 3)
    for _ in range(ROUNDS):
        choice = rng.random()
        if choice < 0.85:
            yield mutate(rng, valid(rng))
        elif choice < 0.95:
            yield magic + rng.randbytes(rng.randint(0, 200))
        else:
            yield rng.randbytes(rng.randint(0, 200))


# ------------------------------------------------------------------ running the binary

def _memfd(data: bytes) -> int:
    fd = os.memfd_create("fuzz", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def _spawn(argv: list[str], fds: dict[int, int] | None = None) -> int:
    """Start the binary with ``fds`` (source: target) and nothing else open; its pid."""
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_DUP2, src, dst)
                                      for src, dst in (fds or {}).items()]
    return os.posix_spawn(str(BINARY), argv, ENV, file_actions=actions)


def _status(pid: int, what: object) -> int:
    _, status = os.waitpid(pid, 0)
    assert not os.WIFSIGNALED(status), (
        f"seed {SEED}: {signal.Signals(os.WTERMSIG(status)).name} on {what!r}")
    return os.WEXITSTATUS(status)


@contextlib.contextmanager
def _ended_pidfd() -> Iterator[int]:
    """A pidfd of a process that has ended and been reaped: a session gone meanwhile."""
    pid = os.posix_spawn("/bin/true", ["true"], {})
    fd = os.pidfd_open(pid)
    os.waitpid(pid, 0)
    try:
        yield fd
    finally:
        os.close(fd)


def run_init(config: bytes) -> tuple[int, bytes]:
    """The init with a creation guard configured by ``config`` and no program: (its exit
    status, what it wrote on its exit pipe)."""
    exit_r, exit_w = os.pipe()
    listener, quiet = os.pipe()  # a stand-in epoll accepts (/dev/null it refuses); never read
    memfd = _memfd(config)
    try:
        pid = _spawn(["nono-reaper", "0", "3", "-1", "0", "-1", "-1", "4", "5"],
                     {exit_w: 3, listener: 4, memfd: 5})
    finally:
        for fd in (exit_w, listener, quiet, memfd):
            os.close(fd)
    status = _status(pid, config)
    with os.fdopen(exit_r, "rb") as f:
        return status, f.read()


def run_repair(config: bytes) -> tuple[int, bytes]:
    """A repair of a session that has ended with the view guard's state ``config``: (its exit
    status, the state left in the memfd)."""
    ours, hub = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe()
    memfd = _memfd(config)
    with _ended_pidfd() as pidfd, ours:
        try:
            pid = _spawn(["nono-repair", "--repair", str(os.getpid())],
                         {pidfd: 3, hub.fileno(): 4, report_w: 5, memfd: 6})
        finally:
            hub.close()
            os.close(report_w)
        status = _status(pid, config)
    os.close(report_r)
    state = os.pread(memfd, len(config) + 1, 0)
    os.close(memfd)
    return status, state


# ------------------------------------------------------------------ the tests

def test_the_valid_inputs_are_read() -> None:
    """The harness's own check: a valid configuration is accepted (the init reports its
    childless end, the repair finds its session gone), so what the mutants get is a parse."""
    rng = random.Random(SEED)
    for _ in range(5):
        status, record = run_init(guard_config(rng))
        assert (status, record) == (0, bytes([3]) + struct.pack("<iiI", 255, 0, 0))
        config = outer_config(rng)
        assert run_repair(config) == (0, config)


def test_the_creation_guards_configuration_fuzzed() -> None:
    """The init refuses (126, nothing reported) what it cannot read whole, and reads the rest:
    never a crash."""
    rng = random.Random(SEED)
    for config in inputs(rng, guard_config, b"NGC2"):
        status, record = run_init(config)
        assert status in (0, 126), (SEED, config)
        assert (record == b"") == (status == 126), (SEED, config)


def test_the_view_guards_state_fuzzed() -> None:
    """A repair refuses (2) a state it cannot read whole, leaving it as it was; never a
    crash."""
    rng = random.Random(SEED + 1)
    for config in inputs(rng, outer_config, b"NGO1"):
        status, state = run_repair(config)
        assert status in (0, 2), (SEED, config)
        assert state == config, (SEED, config)


def _send_job(sock: socket.socket, tag: bytes, fds: list[int], split: bool) -> None:
    if not fds:
        sock.send(tag)
        return
    ancdata = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
               if not split else
               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd)) for fd in fds])
    sock.sendmsg([tag], ancdata)


def test_a_repair_servers_job_fuzzed() -> None:
    """A repair server takes exactly "J", a job's number (4 bytes) and four descriptors (five:
    the session's mount namespace), runs the job in a child that reads the state on the
    fourth, and answers "R", the number and the child's wait status; anything else ends it
    (0) before it acts: never a crash."""
    rng = random.Random(SEED + 2)
    config = outer_config(rng)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    job = b"J" + struct.pack("<I", 7)
    with _ended_pidfd() as pidfd:
        cases: list[tuple[bytes, int, bool]] = [(job, 4, False), (job, 5, False)]
        cases += [(rng.choice([b"", b"J", job + b"x", b"j\0\0\0\0", b"JJ", job,
                               rng.randbytes(rng.randint(1, 8))]),
                   rng.choice([0, 1, 3, 4, 4, 5, 8]), rng.random() < 0.2)
                  for _ in range(ROUNDS // 5)]
        for tag, count, split in cases:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            ours_hub, hub = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            report_r, report_w = os.pipe()
            memfd = _memfd(config)
            answer = b""
            with ours, ours_hub:
                pid = _spawn(["nono-repair", "--repair", str(os.getpid()), "--serve"],
                             {theirs.fileno(): 3})
                theirs.close()
                fds = [pidfd, hub.fileno(), report_w, memfd] + [null] * 4
                with contextlib.suppress(OSError):  # the server may be gone already
                    if tag:
                        _send_job(ours, tag, fds[:count], split)
                if tag == job and count in (4, 5) and not split:
                    ours.settimeout(10)
                    answer = ours.recv(64)
                ours.shutdown(socket.SHUT_WR)
                status = _status(pid, (tag, count, split))
            hub.close()
            for fd in (report_r, report_w, memfd):
                os.close(fd)
            assert status == 0, (SEED, tag, count, split)
            if tag == job and count in (4, 5) and not split:  # the session had ended: done
                assert answer == b"R" + struct.pack("<Ii", 7, 0), (SEED, answer)
    os.close(null)


def _word(rng: random.Random) -> str:
    return rng.choice(["", "-", "0", "-1", "1", "3", "x", "12x", " 1", "1 ", "+1", "0x10",
                       "99999999999999999999", "-99999999999999999999", "2147483648",
                       "4294967299", "-2147483649", "--serve", "--outer", "--repair",
                       rng.randbytes(4).hex()])


def test_command_lines_fuzzed() -> None:
    """Each mode refuses a command line it cannot read (126, or 2 for a repair) without
    acting: never a crash. (The outer's is always made unreadable here: a readable one
    would signal the pid it names.)"""
    rng = random.Random(SEED + 3)
    for _ in range(ROUNDS):
        mode = rng.randrange(3)
        words = [_word(rng) for _ in range(rng.randint(0, 10))]
        if mode == 0:
            argv = ["nono-reaper", *words]
            # fds above 2 are closed in the child: whatever the numbers, nothing is named
        elif mode == 1:
            argv = ["nono-outer", "--outer", *words[:6], "not a number"]
        else:
            argv = ["nono-repair", "--repair", *words[:3]]
        pid = _spawn(argv)
        status = _status(pid, argv)
        assert status in (0, 126, 2, 255), (SEED, argv, status)


def test_control_requests_fuzzed() -> None:
    """The init answers "C" and a port (exactly three bytes) with a connection or an errno,
    ignores every other message, and is still the program's init afterwards: it forwards
    SIGTERM and reports how the program ended."""
    rng = random.Random(SEED + 4)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    port = server.getsockname()[1]
    pid, ours, exit_r = _init_of_a_sleep()
    with server, ours:
        for _ in range(ROUNDS):
            valid = rng.random() < 0.3
            if valid:
                msg = b"C" + struct.pack("<H", rng.choice([port, 1]))
            else:
                msg = rng.randbytes(rng.choice([1, 2, 3, 4, 5, 63, 64, 65, 200]))
                if len(msg) == 3 and msg[:1] == b"C":
                    msg = b"D" + msg[1:]
            ours.send(msg)
            if not valid:
                continue
            reply, ancdata, _, _ = ours.recvmsg(16, socket.CMSG_SPACE(4))
            fds = [fd for _, _, data in ancdata for fd in struct.unpack(f"{len(data) // 4}i", data)]
            for fd in fds:
                os.close(fd)
            if msg[1:] == struct.pack("<H", port):
                assert (reply, len(fds)) == (b"K", 1)
                server.accept()[0].close()
            else:
                assert (reply[:1], len(fds), len(reply)) == (b"E", 0, 5)
    _terminated(pid, exit_r)


def _init_of_a_sleep() -> tuple[int, socket.socket, int]:
    """The init of a ``sleep 60``, run directly: its pid, the daemon's end of its control
    socket, the read end of its exit pipe."""
    exit_r, exit_w = os.pipe()
    ours, control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.posix_spawn("/bin/sh", [
        "sh", "-c", 'sleep 60 & exec "$0" "$!" 3 4 0 -1 -1', str(BINARY)], ENV,
        file_actions=[(os.POSIX_SPAWN_DUP2, exit_w, 3),
                      (os.POSIX_SPAWN_DUP2, control.fileno(), 4)])
    os.close(exit_w)
    control.close()
    ours.settimeout(10)
    # Answered once the init waits in its loop (signals blocked, forwarded from then on);
    # port 1: refused at once (or, if something listens there, a connection to close).
    ours.send(b"C" + struct.pack("<H", 1))
    _, ancdata, _, _ = ours.recvmsg(16, socket.CMSG_SPACE(4))
    for _, _, data in ancdata:
        os.close(struct.unpack("i", data[:4])[0])
    return pid, ours, exit_r


def _terminated(pid: int, exit_r: int) -> None:
    """SIGTERM to the init: it forwards it and reports the sleep's death."""
    os.kill(pid, signal.SIGTERM)
    assert _status(pid, "SIGTERM") == 0
    with os.fdopen(exit_r, "rb") as f:
        assert f.read() == bytes([3]) + struct.pack("<iiI", -1, signal.SIGTERM, 0)


def test_a_daemon_gone_while_its_connection_waits_leaves_the_init_serving() -> None:
    """The daemon asks for a connection to a listener that accepts nothing, then goes away:
    the init drops the connection and still forwards a signal at once (it waited out its
    five seconds first)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        held = [socket.socket() for _ in range(3)]  # the accept queue, full
        for c in held:
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
        pid, ours, exit_r = _init_of_a_sleep()
        asked = time.monotonic()
        with ours:
            ours.send(b"C" + struct.pack("<H", port))
        _terminated(pid, exit_r)
        took = time.monotonic() - asked
        for c in held:
            c.close()
    # From the request on: the init's five seconds (CONNECT_TIMEOUT_MS) began after it, so
    # an init that waited them out takes 5 s or more here, however loaded the host; one
    # that dropped the connection at once, milliseconds.
    assert took < 4.5, took


def test_a_number_past_an_int_is_refused_not_truncated() -> None:
    """"4294967299" is not descriptor 3 (it was, truncated to an int): the init refuses its
    command line and writes nothing there."""
    exit_r, exit_w = os.pipe()
    pid = _spawn(["nono-reaper", "0", str((1 << 32) + 3), "-1", "0", "-1", "-1"], {exit_w: 3})
    os.close(exit_w)
    assert _status(pid, "4294967299") == 126
    with os.fdopen(exit_r, "rb") as f:
        assert f.read() == b""
