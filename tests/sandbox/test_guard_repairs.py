"""The guard hub's repairs beside many sessions (``_guardhub``: the repair server).

One change the host makes on a path every session guards (here: a directory renamed over the
one each session's view masks, which takes the mask away in every session's view) must be
repaired in every view, and once cost one ``nono-reaper --repair`` process spawned by the fork
server per session: 1000 spawns and execs in the fork server's loop for one change beside a
fleet of 1000. Now one repair server, spawned ahead of need, serves them all, a forked child
per session. The processes are counted from ``/proc``, as
they come, by the kernel's process events: every fork during the change, its parent, and
every exec."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sandbox._api import GuardReport, Sandboxed

from .test_reaper import _exited, _masked, _named, _outer_left, _ppid

pytestmark = [pytest.mark.userns, pytest.mark.root]

PY = sys.executable if sys.executable.startswith("/usr") else "/usr/bin/python3"
SESSIONS = 24


class ProcessEvents:
    """The kernel's process events (the proc connector: ``NETLINK_CONNECTOR``, root only), read
    by a thread while it is open: every fork (its parent, its child), exec (with the command
    line, read as the event arrives: the exec'd repairs live a few milliseconds) on the
    host. A queue that overflowed (events lost) fails the count, not hides it."""

    def __init__(self) -> None:
        self.forks: list[tuple[int, int]] = []  # (parent's tgid, child's pid)
        self.execs: dict[int, bytes] = {}  # pid -> its command line ("" if it left first)
        self.lost = False
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_CONNECTOR)
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
        self._sock.bind((0, _CN_IDX_PROC))
        listen = struct.pack("I", 1)  # PROC_CN_MCAST_LISTEN
        cn = struct.pack("IIIIHH", _CN_IDX_PROC, 1, 0, 0, len(listen), 0) + listen
        self._sock.send(struct.pack("IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)  # NLMSG_DONE
        self._sock.settimeout(0.05)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: events were dropped
                self.lost = True
                continue
            offset = 0
            while offset + 16 <= len(data):
                length = struct.unpack_from("I", data, offset)[0]
                self._event(data[offset + 16 + 20:offset + length])
                offset += (length + 3) & ~3

    def _event(self, event: bytes) -> None:
        what = struct.unpack_from("I", event)[0] if len(event) >= 4 else 0
        if what == 0x1 and len(event) >= 32:  # PROC_EVENT_FORK
            _, parent, child, tgid = struct.unpack_from("4I", event, 16)
            if child == tgid:  # a process, not a thread
                self.forks.append((parent, child))
        elif what == 0x2 and len(event) >= 24:  # PROC_EVENT_EXEC
            pid = struct.unpack_from("I", event, 16)[0]
            try:
                self.execs[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                self.execs[pid] = b""

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self._sock.close()

    def children(self, parent: int) -> list[int]:
        return [child for tgid, child in self.forks if tgid == parent]


_NETLINK_CONNECTOR = 11
_CN_IDX_PROC = 1
_SO_RCVBUFFORCE = 33


def _no_process_events() -> str:
    """Why the kernel's process events cannot be had here, "" where they can: the proc
    connector answers a fork of this process with its event within seconds. Absent from a
    kernel built without ``CONFIG_PROC_EVENTS`` (or without ``CONFIG_CONNECTOR``: no such
    netlink family), and silent outside the initial network namespace (it sends to that one
    only); the test counts processes by them, so it cannot run there."""
    try:
        events = ProcessEvents()
    except OSError as exc:
        return f"no process-event connector (NETLINK_CONNECTOR: {exc.strerror})"
    try:
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if child.pid in events.children(os.getpid()):
                return ""
            time.sleep(0.01)
    finally:
        events.close()
    return ("the process-event connector sent no event for a fork of this process within "
            "5 s (a kernel without CONFIG_PROC_EVENTS, or outside the initial network "
            "namespace)")


def _repair_server(fork_server: int) -> int:
    """The pid of the fork server's repair server (``nono-reaper --repair --serve``), 0: none."""
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if (entry.isdigit() and _ppid(int(entry)) == fork_server
                    and Path(f"/proc/{entry}/cmdline").read_bytes().startswith(
                        b"nono-repair\0--repair\0")):
                return int(entry)
    return 0


def _masks(init: int, secret: Path) -> bool:
    """Whether the session of ``init`` sees the mask on ``secret`` (an empty directory), not
    the host's directory renamed over it (with a file in it)."""
    return os.listdir(f"/proc/{init}/root{secret}") == []


@pytest.fixture
def process_events() -> None:
    """Skips the test where the kernel's process events cannot be had (``_no_process_events``:
    asked outside the test's trio run, whose skip would lose its reason)."""
    if why := _no_process_events():
        pytest.skip(why)


@pytest.mark.usefixtures("process_events")
async def test_one_host_change_beside_many_sessions_is_repaired_by_one_repair_process(
        world_tmp: Path) -> None:
    """``SESSIONS`` sessions mask one directory; the host renames a directory with a file
    in it over that one: every session's view shows the mask again, not the file, and each
    reports it restored once. The fork server spawned no repair process for it (it spawned
    and exec'd one per session before: this fails there); the repair server forked a child
    per session (two for a session whose change came while its first repair ran)."""
    policy = _masked(world_tmp)
    secret = world_tmp / "secret"
    reports: dict[int, list[GuardReport]] = {}
    sessions: list[tuple[Sandboxed, int]] = []
    try:
        async with open_launcher("namespaces") as launcher:
            for _ in range(SESSIONS):
                in_r, in_w = os.pipe()
                proc = await launcher.launch(policy, LaunchRequest(
                    argv=(PY, "-S", "-c", "import sys; sys.stdin.read()"),
                    cwd=str(world_tmp)), stdio=(in_r, 1, 2))
                os.close(in_r)
                sessions.append((proc, in_w))
                reports[proc.pid] = []
                proc.on_guard = reports[proc.pid].append
            for proc, _ in sessions:
                await _named(proc.pid, "nono-reaper")
                await _outer_left(proc.pid)  # the fork server's hub guards it now
            fork_server = _ppid(sessions[0][0].pid)
            await trio.sleep(0.3)  # the hub's spare work done (its repair server spawned)
            repair_server = _repair_server(fork_server)
            planted = world_tmp / "planted"
            planted.mkdir()
            (planted / "the-hosts-file").write_text("not for the session\n")
            events = ProcessEvents()
            try:
                os.replace(planted, secret)  # the mask goes from every session's view
                with trio.fail_after(60):
                    while not all(_masks(proc.pid, secret) for proc, _ in sessions):
                        await trio.sleep(0.01)
                await trio.sleep(0.5)  # (a repair that would come late is counted too)
            finally:
                events.close()
            for proc, stdin in sessions:
                os.close(stdin)
                assert await _exited(proc) == (0, None)
            sessions.clear()
    finally:
        for _, stdin in sessions:
            with contextlib.suppress(OSError):
                os.close(stdin)
    assert all(got == [GuardReport("restored", str(secret), what="mask")]
               for got in reports.values()), reports
    assert not events.lost
    # The repairs the fork server spawned itself (an exec of nono-reaper each) during the
    # change: none; its repair server's children: a repair per session.
    spawned = {pid: events.execs[pid] for pid in events.children(fork_server)
               if pid in events.execs and (  # (not a warm launcher's init, made meanwhile)
                   not events.execs[pid] or events.execs[pid].startswith(b"nono-repair\0"))}
    assert not spawned, spawned
    assert repair_server
    # (once each, or twice: an event of the change that came while its first repair ran)
    assert SESSIONS <= len(events.children(repair_server)) <= 2 * SESSIONS

