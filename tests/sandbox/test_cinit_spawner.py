"""The C inits' spawner (``nono-reaper --spawner``, ``_cinit.Spawner``): started once, it
clones each warm launcher's init as its caller's child from a descriptor table of its own,
not a copy of the caller's (the fork server holds five descriptors per live session, which
a helper spawned per launcher copied and closed again). What the kernel shows of the init
(its parent, ``FDSize`` in its status: how much of a table was copied, whatever the process
closed afterwards) says which way it was made."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator

import pytest

from nonod.sandbox import _cinit, _libc, _reaper

pytestmark = pytest.mark.userns

FLAGS = _libc.CLONE_NEWUSER | _libc.CLONE_NEWNS | _libc.CLONE_NEWPID
MANY = 3000  # a fork server's descriptors with several hundred sessions live


@pytest.fixture
def reaper() -> Iterator[int]:
    fd = _reaper.load()
    assert fd >= 0, "make did not build nonod/sandbox/nono-reaper"
    yield fd
    os.close(fd)


@pytest.fixture
def many() -> Iterator[None]:
    """This process holds ``MANY`` more descriptors, as a busy fork server does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < MANY + 200:
        pytest.skip("cannot open enough descriptors here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, MANY + 200), hard))
    held = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(MANY)]
    yield
    for fd in held:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _made(ask: object) -> tuple[int, int, int]:
    """An init made by ``ask(plan_fd, go_fd, config_fd)`` (a config it will refuse: only its
    birth matters): its pid, parent and ``FDSize``, once it said ``r``; then let go (it ends
    on the go socket's end) and reaped."""
    plan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    go, theirs_go = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    config = os.memfd_create("cfg", os.MFD_CLOEXEC)
    try:
        ask(theirs.fileno(), theirs_go.fileno(), config)  # type: ignore[operator]
    finally:
        theirs.close()
        theirs_go.close()
        os.close(config)
    words = [go.recv(8), go.recv(8)]
    pid = next(p for p in map(_cinit.init_pid, words) if p is not None)
    assert b"r" in words, words
    seen = (pid, _status(pid, "PPid"), _status(pid, "FDSize"))
    go.close()
    plan.close()
    assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 126
    return seen


def test_the_spawners_init_is_our_child_with_a_small_table(reaper: int, many: None) -> None:
    spawner = _cinit.Spawner(reaper)
    try:
        pid, parent, fdsize = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
        assert parent == os.getpid()  # CLONE_PARENT: the fork server's child, as before
        assert fdsize == 64  # the spawner's own few descriptors, none of our MANY
        pid2, _, _ = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
        assert pid2 != pid  # one spawner, any number of inits
    finally:
        spawner.close()
        assert os.waitpid(spawner.pid, 0)[1] == 0  # it ends with its socket


def test_a_helper_spawned_per_launcher_copies_the_whole_table(reaper: int, many: None) -> None:
    """What the spawner saves: ``_cinit.spawn``'s helper (posix_spawn) is made with a copy
    of our table, and the init it clones keeps one of that size."""
    helpers: list[int] = []

    def ask(p: int, g: int, c: int) -> None:
        helpers.append(_cinit.spawn(reaper, FLAGS, p, g, c))

    _, parent, fdsize = _made(ask)
    assert os.waitpid(helpers[0], 0)[1] == 0
    assert parent == os.getpid()
    assert fdsize > MANY


def test_a_request_that_does_not_check_out_makes_nothing(reaper: int) -> None:
    """Too few descriptors for the request's head, a namespace flag it does not know, or
    another magic: the go socket ends with nothing said, and the spawner serves the next."""
    spawner = _cinit.Spawner(reaper)
    assert spawner._sock is not None
    try:
        for head, count in ((_cinit._SPAWN_HEAD.pack(b"NGS1", FLAGS, 0, 1, 0), 3),
                            (_cinit._SPAWN_HEAD.pack(b"NGS1", 1, 0, 0, 0), 3),
                            (_cinit._SPAWN_HEAD.pack(b"NGSX", FLAGS, 0, 0, 0), 3),
                            (_cinit._SPAWN_HEAD.pack(b"NGS1", FLAGS, 0, 0, 2), 3)):
            go, theirs_go = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            plan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            fds = [theirs.fileno(), theirs_go.fileno(), theirs.fileno()][:count]
            spawner._sock.setblocking(True)
            socket.send_fds(spawner._sock, [head], fds)
            theirs.close()
            theirs_go.close()
            assert go.recv(8) == b""  # the spawner closed its copies: nothing was made
            go.close()
            plan.close()
        _, parent, _ = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
        assert parent == os.getpid()
    finally:
        spawner.close()
        os.waitpid(spawner.pid, 0)


def test_a_spawner_that_ended_is_not_asked_again(reaper: int) -> None:
    spawner = _cinit.Spawner(reaper)
    os.kill(spawner.pid, 9)
    os.waitpid(spawner.pid, 0)
    assert spawner.spawn(FLAGS, 0, 1, 2) is False
    assert spawner._sock is None  # the fork server spawns helpers from here
