"""nonod._callerfs against the real kernel: whose rights a read uses, what it refuses, and how
one caller's stuck reads are kept from everyone else's."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from nonod import _callerfs
from nonod._callerfs import (
    FileDenied,
    FileRefused,
    FileTimeout,
    FileTooLarge,
    acting_as,
    open_for,
    read_path,
    run_as,
)
from nonod.sandbox import _libc

NOBODY = 65534
IN_OPEN = 0x20
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching fsuid needs root")


@dataclass(frozen=True)
class Peer:
    uid: int
    gid: int


@pytest.fixture
def tree() -> Iterator[Path]:
    """A directory every uid can reach (pytest's tmp_path sits under a 0700 one)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="callerfs-", dir="/tmp"))
    tmp_path.chmod(0o755)
    yield from _filled(tmp_path)
    shutil.rmtree(tmp_path)


def _filled(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "private").write_text("root only")
    (tmp_path / "private").chmod(0o600)
    (tmp_path / "public").write_text("anyone")
    (tmp_path / "public").chmod(0o644)
    (tmp_path / "link").symlink_to(tmp_path / "public")
    os.mkfifo(tmp_path / "fifo")
    yield tmp_path


@needs_root
@pytest.mark.root
def test_a_caller_reads_what_it_may_and_nothing_more(tree: Path) -> None:
    async def main() -> None:
        nobody = Peer(NOBODY, NOBODY)
        assert (await open_for(nobody, str(tree / "public"), max_bytes=100)).data == b"anyone"
        with pytest.raises(FileDenied):
            await open_for(nobody, str(tree / "private"), max_bytes=100)
        # the daemon itself (a user daemon's caller) still reads it, in a thread just used
        assert (await open_for(None, str(tree / "private"), max_bytes=100)).data == b"root only"

    trio.run(main)


@needs_root
@pytest.mark.root
def test_the_thread_gets_its_own_rights_back(tree: Path) -> None:
    go = threading.Event()
    seen: list[str] = []

    def elsewhere() -> None:  # a thread that exists before the switch, as trio's workers do
        go.wait()
        seen.append((tree / "private").read_text())

    other = threading.Thread(target=elsewhere)
    other.start()
    with acting_as(_callerfs.Identity(uid=NOBODY, gid=NOBODY, groups=(NOBODY,))):
        with pytest.raises(PermissionError):
            (tree / "private").read_text()
        go.set()
        other.join()
        assert seen == ["root only"]  # the other threads never changed
    assert (tree / "private").read_text() == "root only"


def test_what_is_refused_after_fstat(tree: Path) -> None:
    with pytest.raises(FileRefused, match="a FIFO"):
        read_path(str(tree / "fifo"), max_bytes=100)  # at once: O_NONBLOCK
    with pytest.raises(FileRefused, match="a directory"):
        read_path(str(tree), max_bytes=100)
    assert read_path(str(tree), kind="dir", max_bytes=100).names == (
        "fifo", "link", "private", "public")
    with pytest.raises(FileTooLarge):
        read_path(str(tree / "public"), max_bytes=3)
    assert read_path(str(tree / "link"), max_bytes=100).data == b"anyone"
    with pytest.raises(FileRefused, match="symbolic link"):
        read_path(str(tree / "link"), max_bytes=100, symlinks="refuse")
    with pytest.raises(FileRefused):
        read_path("../" + tree.name + "/public", max_bytes=100, beneath=str(tree))


@needs_root
@pytest.mark.root
def test_a_device_is_refused_without_being_opened(tree: Path) -> None:
    """A name a policy lists (a trust policy's ``files``) can be a device whose open acts
    (``/dev/watchdog``): the daemon learns its kind without opening it (inotify sees no
    open of it), then refuses it."""
    device = tree / "null-copy"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    watch = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _libc.inotify_add_watch(watch, str(device), IN_OPEN)
        with pytest.raises(FileRefused, match="a character device"):
            read_path(str(device), max_bytes=100)
        with pytest.raises(FileRefused, match="a character device"):
            read_path(str(device), max_bytes=100, symlinks="refuse")
        with pytest.raises(BlockingIOError):
            os.read(watch, 4096)  # no event: never opened
    finally:
        os.close(watch)


@needs_root
@pytest.mark.root
def test_one_callers_stuck_threads_stall_that_caller_only() -> None:
    """Reads that hang (a hung filesystem, here a thread waiting on an event) time out; their
    abandoned threads still count against their caller, whose next read cannot start, while
    another caller is served at once."""
    release = threading.Event()
    stuck, other = Peer(NOBODY - 1, NOBODY), Peer(NOBODY - 2, NOBODY)

    async def hang() -> None:
        with pytest.raises(FileTimeout):
            await run_as(stuck, release.wait, timeout=0.5)

    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(_callerfs.THREADS_PER_CALLER):
                    nursery.start_soon(hang)
            with pytest.raises(FileTimeout):
                await run_as(stuck, lambda: True, timeout=0.5)
            assert await run_as(other, lambda: True, timeout=5)
        finally:
            release.set()

    trio.run(main)


@needs_root
@pytest.mark.root
def test_a_socket_made_as_a_user_inside_a_callers_read_leaves_the_callers_rights(
        tree: Path) -> None:
    """review28: ``made_as`` put back the daemon's own uid, not the one it found. Made inside
    ``acting_as`` (a worker thread reading as a caller), the rest of that read ran as root:
    the caller's file then read what only root may."""
    import socket

    from nonod._loopback_peers import tcp_peer_uid

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with acting_as(_callerfs.Identity(uid=NOBODY, gid=NOBODY, groups=(NOBODY,))):
            sock = _callerfs.made_as(NOBODY - 1, socket.socket)
            with sock:
                sock.connect(("127.0.0.1", port))
                accepted, _ = listener.accept()
                with accepted:
                    assert tcp_peer_uid(accepted) == NOBODY - 1  # made as that uid
            assert _callerfs.acting_uid() == NOBODY
            with pytest.raises(PermissionError):
                (tree / "private").read_text()
        assert _callerfs.acting_uid() == 0
        assert (tree / "private").read_text() == "root only"


@needs_root
@pytest.mark.root
def test_no_collection_runs_while_a_connection_is_made_as_its_user() -> None:
    """review28: trio's path made its upstream socket with the standard library's class under
    the user's file system uid, and its Python constructor allocates: the cycle collector ran
    there, and with it any finalizer of the daemon's garbage, as that user (a file it opened,
    made or removed by path then was the user's to the kernel). The socket is now made as the
    C type alone in that window and wrapped after it."""
    import gc
    import socket

    from nonod.proxy._resolve import start_connect

    seen: list[int] = []

    def collecting(phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            seen.append(_callerfs.acting_uid())

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        threshold = gc.get_threshold()
        gc.callbacks.append(collecting)
        gc.set_threshold(1)  # a collection at every allocation of a tracked object
        try:
            for _ in range(50):
                sock, _connected = start_connect("127.0.0.1", port, owner=NOBODY,
                                                 kind=socket.socket)
                assert type(sock) is socket.socket and sock.gettimeout() == 0.0
                listener.accept()[0].close()
                sock.close()
        finally:
            gc.set_threshold(*threshold)
            gc.callbacks.remove(collecting)
    assert seen  # collections ran, each as the daemon
    assert [uid for uid in seen if uid != os.geteuid()] == []
