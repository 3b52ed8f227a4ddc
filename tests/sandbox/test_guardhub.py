"""The fork server's guard hub on its own: real inotify, real sockets, no sandbox.

A client registers the paths that matter and hands over directory descriptors; the hub wakes
it only for changes that name one of those paths, and a broken client is dropped without
touching the others.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import msgspec

from nonod.sandbox._guardhub import GuardHub, _Adopted


def _pump(hub: GuardHub, poller: select.poll, timeout_ms: int = 200) -> None:
    for fd, _ in poller.poll(timeout_ms):
        hub.handle(fd)


def _register(hub: GuardHub, poller: select.poll, directory: Path, on_the_way: list[str]
              ) -> socket.socket:
    client = hub.new_client()
    client.settimeout(5)
    client.sendall(b"O" + msgspec.msgpack.encode(on_the_way))
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        socket.send_fds(client, [b"W" + msgspec.msgpack.encode([str(directory)])], [fd])
    finally:
        os.close(fd)
    _pump(hub, poller)
    _pump(hub, poller)
    assert client.recv(16) == b"k"
    return client


def _woken(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(16) == b"c"
    except BlockingIOError:
        return False
    finally:
        client.settimeout(5)


def test_only_changes_on_the_way_wake_a_client(tmp_path: Path) -> None:
    poller = select.poll()
    hub = GuardHub(poller)
    assert hub.error == 0
    guarded = tmp_path / "GEMINI.md"
    guarded.write_text("x")
    client = _register(hub, poller, tmp_path, [str(tmp_path), str(guarded)])

    (tmp_path / "scratch.log").write_text("busy project")  # next to it: nobody is woken
    _pump(hub, poller)
    assert not _woken(client)

    (tmp_path / "GEMINI.md.new").write_text("y")
    os.replace(tmp_path / "GEMINI.md.new", guarded)  # over it: woken
    _pump(hub, poller)
    assert _woken(client)


def test_a_broken_client_is_dropped_and_the_others_keep_their_watches(tmp_path: Path) -> None:
    poller = select.poll()
    hub = GuardHub(poller)
    guarded = tmp_path / "rules.md"
    good = _register(hub, poller, tmp_path, [str(guarded)])
    bad = hub.new_client()
    bad.settimeout(5)
    bad.sendall(b"Wnot msgpack at all")
    _pump(hub, poller)
    assert bad.recv(16) == b""  # dropped: its outer ends its session on this

    guarded.write_text("created")
    _pump(hub, poller)
    assert _woken(good)


def test_a_client_that_goes_away_releases_its_watches(tmp_path: Path) -> None:
    poller = select.poll()
    hub = GuardHub(poller)
    first = _register(hub, poller, tmp_path, [str(tmp_path / "a")])
    second = _register(hub, poller, tmp_path, [str(tmp_path / "a")])
    first.close()
    _pump(hub, poller)
    (tmp_path / "a").write_text("x")
    _pump(hub, poller)
    assert _woken(second)  # the shared watch stayed for the one still there
    second.close()
    _pump(hub, poller)
    assert hub._by_wd == {}  # the last holder gone, the watch is removed


def _adopted(hub: GuardHub, poller: select.poll) -> tuple[socket.socket, int, int]:
    """A client whose "outer launcher" hands its session over (``H``): the "init" is a real
    child process (its pidfd), the report pipe a real pipe. Returns the client, the init's
    pid and the report's read end."""
    import subprocess

    from nonod.sandbox import _reaper

    assert hub._reaper >= 0 or _reaper.load() >= 0
    client = hub.new_client()
    client.settimeout(5)
    init = subprocess.Popen(["sleep", "60"])
    pidfd = os.pidfd_open(init.pid)
    report_r, report_w = os.pipe()
    state = os.memfd_create("state")
    peer = os.dup(client.fileno())
    try:
        socket.send_fds(client, [b"H"], [pidfd, report_w, state, peer])
    finally:
        for fd in (pidfd, report_w, state, peer):
            os.close(fd)
    _pump(hub, poller)
    assert client.recv(16) == b"h"
    return client, init.pid, report_r


def test_a_repair_that_fails_in_any_way_ends_its_session_with_a_report() -> None:
    """A repair's exit status other than 0 (done) and REPAIR_LOST (it reported and killed
    itself) means the view is not known to be guarded: the hub reports the guard lost on
    the session's exit pipe and kills its init. (Once, a status of 1, which a crash or a
    sanitizer also gives, was taken for "reported", and the session went on unguarded.)"""
    from nonod.sandbox import _reaper
    from nonod.sandbox._launcher import GUARD_LOST, REC_GUARD, RECORD

    poller = select.poll()
    hub = GuardHub(poller, _reaper.load())
    client, init, report = _adopted(hub, poller)
    os.set_blocking(report, False)  # a missing record fails, not hangs
    adopted = hub._inits[next(iter(hub._inits))].adopted
    assert adopted is not None
    adopted.repair = 12345  # as if that repair ran, then:
    hub._repairs[12345] = hub._inits[adopted.pidfd]
    try:
        hub._finished(12345, 1 << 8)  # exit status 1
        kind, _, why, length = RECORD.unpack(os.read(report, RECORD.size))
        assert (kind, why) == (REC_GUARD, GUARD_LOST)
        assert b"repair failed (1)" in os.read(report, length)
        assert os.waitpid(init, 0)[1] == 9  # SIGKILL
    finally:
        client.close()
        if hub._server is not None:  # the server the hand-over spawned: its job never came
            pid, sock = hub._server
            sock.close()
            assert os.waitpid(pid, 0)[1] == 0


def test_a_repair_server_that_dies_ends_the_sessions_whose_repairs_it_ran() -> None:
    """The repair server's children die with it (their parent-death signal): a session whose
    repair it was running is not known to be guarded any more, and is ended with a report;
    a session it was not repairing goes on (its next repair spawns a new server)."""
    import signal

    from nonod.sandbox import _reaper
    from nonod.sandbox._launcher import GUARD_LOST, REC_GUARD, RECORD

    poller = select.poll()
    hub = GuardHub(poller, _reaper.load())
    client, init, report = _adopted(hub, poller)
    other, kept, _ = _adopted(hub, poller)
    os.set_blocking(report, False)  # a missing record fails, not hangs
    hub.idle()  # the server, spawned ahead of need
    assert hub._server is not None
    server = hub._server[0]
    first = next(iter(hub._inits.values()))
    assert first.adopted is not None
    first.adopted.repair = 77  # as if the server ran its repair, then:
    hub._repairs[77] = first
    try:
        os.kill(server, signal.SIGKILL)
        assert os.waitpid(server, 0)[1] == signal.SIGKILL
        _pump(hub, poller)  # its socket's end
        assert hub._server is None and not hub._repairs
        kind, _, why, length = RECORD.unpack(os.read(report, RECORD.size))
        assert (kind, why) == (REC_GUARD, GUARD_LOST)
        assert b"repair server has ended" in os.read(report, length)
        assert os.waitpid(init, 0)[1] == signal.SIGKILL
        assert os.waitpid(kept, os.WNOHANG) == (0, 0)  # not being repaired: it goes on
    finally:
        client.close()
        other.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(kept, signal.SIGKILL)
        os.waitpid(kept, 0)
        if hub._server is not None:
            pid, sock = hub._server
            sock.close()
            os.waitpid(pid, 0)


def test_the_last_sessions_end_forgets_the_repairs_it_cut_short() -> None:
    """With no session left the hub closes the repair server, whose children die with it:
    the answers of the repairs it was running never come, and they are forgotten (kept,
    they would be held for good; when the hub bounded the repairs running at once, they held
    every later session's repair back, its view unrepaired)."""
    import signal

    from nonod.sandbox import _reaper

    poller = select.poll()
    hub = GuardHub(poller, _reaper.load())
    client, init, _ = _adopted(hub, poller)
    hub.idle()
    assert hub._server is not None
    server = hub._server[0]
    first = next(iter(hub._inits.values()))
    for job in range(1, 9):  # as if they ran when the session ended
        hub._repairs[job] = first
    try:
        os.kill(init, signal.SIGKILL)
        assert os.waitpid(init, 0)[1] == signal.SIGKILL
        _pump(hub, poller)  # the init's end: the last session dropped
        assert not hub._inits and hub._server is None
        assert os.waitpid(server, 0)[1] == 0  # its socket closed: it ended
        assert not hub._repairs
    finally:
        client.close()


def test_jobs_wait_for_a_full_server_socket_and_all_go_once_it_takes_them() -> None:
    """Every woken session's job goes to the repair server at once; when its socket is full
    (a server that reads slower than a burst of wake-ups) the next ones wait in the hub, in
    order, and are sent as soon as it can be written again: every session's repair runs.
    (Here each repair fails, the guard's state being empty: each init killed says it ran.)"""
    import signal

    from nonod.sandbox import _reaper

    poller = select.poll()
    hub = GuardHub(poller, _reaper.load())
    sessions = [_adopted(hub, poller) for _ in range(12)]
    hub.idle()
    assert hub._server is not None
    server, sock = hub._server
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the least: a few messages
    try:
        os.kill(server, signal.SIGSTOP)
        for client in list(hub._inits.values()):
            hub._repair(client)
        waited = len(hub._waiting)
        assert waited and hub._repairs  # some sent, the others waiting
        os.kill(server, signal.SIGCONT)
        with contextlib.suppress(ChildProcessError):
            for _ in range(200):
                _pump(hub, poller, 50)
                if not (hub._waiting or hub._repairs):
                    break
        assert not hub._waiting and not hub._repairs
        for _, init, _ in sessions:  # each repair ran (and, with no state, ended its session)
            assert os.waitpid(init, 0)[1] == signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGCONT)
        for client, init, _ in sessions:
            client.close()
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(init, 0)
        if hub._server is not None:
            hub._server[1].close()
        os.waitpid(server, 0)


def _send_dirs(client: socket.socket, directories: list[Path]) -> None:
    """``client`` asks the hub to watch ``directories`` (a ``W`` with their descriptors)."""
    fds = [os.open(d, os.O_PATH | os.O_DIRECTORY) for d in directories]
    try:
        socket.send_fds(client, [b"W" + msgspec.msgpack.encode([str(d) for d in directories])],
                        fds)
    finally:
        for fd in fds:
            os.close(fd)


def _watch(hub: GuardHub, poller: select.poll, uid: int, directories: list[Path],
           held: list[socket.socket]) -> bytes:
    """A client of a session running as ``uid`` asks for ``directories``; the hub's answer.
    The client is kept open in ``held`` (its watches stay)."""
    client = hub.new_client(uid)
    client.settimeout(5)
    _send_dirs(client, directories)
    _pump(hub, poller)
    held.append(client)
    return client.recv(16)


@contextlib.contextmanager
def _shared_hub(share: int) -> Iterator[tuple[GuardHub, select.poll, list[socket.socket]]]:
    """A hub giving each uid ``share`` watches, and the clients a test keeps (closed after)."""
    poller = select.poll()
    held: list[socket.socket] = []
    try:
        yield GuardHub(poller, share=share), poller, held
    finally:
        for client in held:
            client.close()


def _directories(base: Path, count: int) -> list[Path]:
    made = [base / str(i) for i in range(count)]
    for directory in made:
        directory.mkdir()
    return made


def test_one_uids_sessions_hold_at_most_their_share_of_the_watches(tmp_path: Path) -> None:
    """The hub's watches count against the fork server's user (root for the system
    daemon): one user's sessions on distinct directories could take every watch that user
    has, and every other user's launch (and root's other programs) then got ``ENOSPC``."""
    import errno
    import struct

    dirs = _directories(tmp_path, 8)
    with _shared_hub(3) as (hub, poller, held):
        assert _watch(hub, poller, 1000, dirs[:3], held) == b"k"
        # The same uid's next session, on a new directory: over its share, refused.
        refused = _watch(hub, poller, 1000, [dirs[0], dirs[3]], held)
        assert refused == b"E" + struct.pack("<i", errno.ENOSPC)
        # Directories it holds already count once, however many of its sessions watch them.
        assert _watch(hub, poller, 1000, dirs[:3], held) == b"k"
        # Another uid still has its own share, on the same directories and on others.
        assert _watch(hub, poller, 1001, [dirs[0], *dirs[4:6]], held) == b"k"
        assert len(hub._by_wd) == 5  # the refused directory is not watched
        # Its sessions gone, the first uid may watch new directories again.
        for client in held[:3]:
            client.close()
            _pump(hub, poller)
        assert _watch(hub, poller, 1000, dirs[5:8], held) == b"k"


def test_a_repair_at_the_share_keeps_its_session(tmp_path: Path) -> None:
    """A session whose directories were replaced asks for the new ones (a repair) while
    still holding the old: at its uid's share, that is not refused."""
    dirs = _directories(tmp_path, 4)
    with _shared_hub(2) as (hub, poller, held):
        assert _watch(hub, poller, 1000, dirs[:2], held) == b"k"
        client = held[0]
        _send_dirs(client, dirs[2:])
        _pump(hub, poller)
        assert client.recv(16) == b"k"
        assert len(hub._by_wd) == 2  # the old ones released


def _adopted_ahead(hub: GuardHub, poller: select.poll, client: socket.socket,
                   ours: socket.socket, init: int) -> _Adopted:
    """``client`` (the init ``init``'s end; ``ours``, the hub's) hands its guard over before
    any plan (``A``: the init's pidfd, a state memfd, its hub socket, its mount namespace);
    the hub's record of the adoption."""
    pidfd = os.pidfd_open(init)
    state = os.memfd_create("state")
    mntns = os.open(f"/proc/{init}/ns/mnt", os.O_RDONLY)
    try:
        socket.send_fds(client, [b"A"], [pidfd, state, client.fileno(), mntns])
    finally:
        for fd in (pidfd, state, mntns):
            os.close(fd)
    _pump(hub, poller)
    assert client.recv(16) == b"h"
    adopted = hub._clients[ours.fileno()].adopted
    assert adopted is not None
    return adopted


def test_a_session_adopted_ahead_gets_what_was_held_at_its_launch_and_only_then() -> None:
    """``A`` (a direct init hands its guard over before any plan): the hub gives its repairs
    a pipe of its own to report to; ``launched`` passes the exit pipe, what was held first,
    once. A launcher whose guard the hub does not hold (never adopted, or dropped since) is
    refused: its session would run unguarded."""
    import subprocess

    from nonod.sandbox import _reaper
    from nonod.sandbox._launcher import GUARD_RESTORED, REC_GUARD, RECORD, record

    poller = select.poll()
    hub = GuardHub(poller, _reaper.load())
    ours, client = hub.client_for()
    other, other_client = hub.client_for()
    client.settimeout(5)
    init = subprocess.Popen(["sleep", "60"])
    exit_r, exit_w = os.pipe()
    try:
        adopted = _adopted_ahead(hub, poller, client, ours, init.pid)
        held = record(REC_GUARD, 7, GUARD_RESTORED, b"/etc/shadow")
        os.write(adopted.report, held)  # what a repair before the launch reports
        assert hub.launched(other, exit_w) is False  # never adopted
        assert hub.launched(ours, exit_w) is True
        os.set_blocking(exit_r, False)
        assert os.read(exit_r, 4096) == held
        assert RECORD.unpack_from(held)[0] == REC_GUARD
        assert hub.launched(ours, exit_w) is False  # once
        init.kill()
        init.wait()
        _pump(hub, poller)  # the init's pidfd: the session is dropped
        assert ours.fileno() < 0
        assert hub.launched(ours, exit_w) is False
    finally:
        init.kill()
        for end in (client, other_client):
            end.close()
        os.close(exit_r)
        os.close(exit_w)


def test_a_full_holding_pipe_before_the_launch_blocks_neither_the_hub_nor_a_repair() -> None:
    """A direct init's guard reports into a holding pipe until its launch (``A``), which
    nobody reads before then: a launcher that waits long while the host keeps changing what
    its view guards fills it. Its write end was blocking: a repair then hung on its record
    (the waiting view repaired no more), and a guard lost then (``_lost``) hung the fork
    server itself, every session's launches and repairs with it. Now a record that does
    not fit is dropped (nobody has seen the session yet) and the lost guard still ends the
    init."""
    import subprocess
    import threading

    from nonod.sandbox import _reaper

    poller = select.poll()
    hub = GuardHub(poller, _reaper.load())
    ours, client = hub.client_for()
    client.settimeout(5)
    init = subprocess.Popen(["sleep", "60"])
    try:
        adopted = _adopted_ahead(hub, poller, client, ours, init.pid)
        writer = subprocess.Popen(  # a repair's records, until the pipe is full
            ["python3", "-c", f"import os\nwhile True: os.write({adopted.report}, b'r' * 512)"],
            pass_fds=[adopted.report], stderr=subprocess.DEVNULL)
        try:
            writer.wait(timeout=5)  # EAGAIN (a blocking pipe: still writing)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
        assert writer.returncode == 1  # the write that did not fit failed, not waited
        adopted.repair = 12345  # as if a repair ran, and failed:
        hub._repairs[12345] = hub._clients[ours.fileno()]
        done = threading.Thread(target=hub._finished, args=(12345, 1 << 8), daemon=True)
        done.start()
        done.join(5)
        stuck = done.is_alive()
        if stuck:  # let it go: drain the pipe
            os.set_blocking(adopted.hold, False)
            with contextlib.suppress(BlockingIOError):
                while os.read(adopted.hold, 65536):
                    pass
            done.join(5)
        assert not stuck
        assert os.waitpid(init.pid, 0)[1] == 9  # the lost guard ended the init (SIGKILL)
    finally:
        init.kill()
        client.close()
        if hub._server is not None:
            pid, sock = hub._server
            sock.close()
            os.waitpid(pid, 0)
