"""The C inits' spawner (``nono-reaper --spawner``, ``_cinit.Spawner``): started once, it
clones each warm launcher's init as its caller's child from a descriptor table of its own,
not a copy of the caller's (the fork server holds five descriptors per live session, which
a helper spawned per launcher copied and closed again). What the kernel shows of the init
(its parent, ``FDSize`` in its status: how much of a table was copied, whatever the process
closed afterwards) says which way it was made."""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
from collections.abc import Iterator

import pytest

from nonod.sandbox import _cinit, _libc, _reaper
from nonod.sandbox._loginuid import Lender

pytestmark = pytest.mark.userns

FLAGS = _libc.CLONE_NEWUSER | _libc.CLONE_NEWNS | _libc.CLONE_NEWPID
TAG = 4242  # an audit tag (a loginuid) no session of this host has
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


def _loginuid(pid: int) -> int:
    with open(f"/proc/{pid}/loginuid") as loginuid:
        return int(loginuid.read())


def _made(ask: object) -> tuple[int, int, int, int]:
    """An init made by ``ask(plan_fd, go_fd, config_fd)`` (a config it will refuse: only its
    birth matters): its pid, parent, ``FDSize`` and loginuid, once it said ``r``; then let
    go (it ends on the go socket's end) and reaped."""
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
    seen = (pid, _status(pid, "PPid"), _status(pid, "FDSize"), _loginuid(pid))
    go.close()
    plan.close()
    assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 126
    return seen


def test_the_spawners_init_is_our_child_with_a_small_table(reaper: int, many: None) -> None:
    spawner = _cinit.Spawner(reaper)
    try:
        pid, parent, fdsize, _ = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
        assert parent == os.getpid()  # CLONE_PARENT: the fork server's child, as before
        assert fdsize == 64  # the spawner's own few descriptors, none of our MANY
        pid2, *_ = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
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

    _, parent, fdsize, _ = _made(ask)
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
        _, parent, *_ = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
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


def _own_fds(pid: int) -> list[str]:
    """What ``pid``'s descriptors name (a request's sockets show as ``socket:``)."""
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


def _refused(spawner: _cinit.Spawner, data: bytes, count: int, go_at: int = -1) -> None:
    """Send ``data`` with ``count`` descriptors, the go socket's at ``go_at`` (the last by
    default: the spawner closes a request's in order, so its end is the spawner's last
    close; 1: where a request has it, for the spawner to say a pid on if it made an init),
    and see nothing made."""
    assert spawner._sock is not None
    go, theirs_go = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    plan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        spawner._sock.setblocking(True)
        fds = [theirs.fileno()] * count
        fds[go_at] = theirs_go.fileno()
        socket.send_fds(spawner._sock, [data], fds)
    finally:
        theirs.close()
        theirs_go.close()
    assert go.recv(8) == b""  # the spawner closed its copies: nothing was made
    go.close()
    plan.close()


def test_a_request_with_too_many_descriptors_or_bytes_makes_nothing_and_leaves_nothing(
        reaper: int) -> None:
    """More descriptors than a request can carry (the kernel truncates them:
    ``MSG_CTRUNC``) or bytes past the head (``MSG_TRUNC``): nothing is made, the go socket
    ends; and the spawner keeps none of a request's descriptors, refused or served, only
    its stdio, socket and loginuid (review21)."""
    spawner = _cinit.Spawner(reaper)
    head = _cinit._SPAWN_HEAD.pack(b"NGS1", FLAGS, 0, 1, 64)
    bad = _cinit._SPAWN_HEAD.pack(b"NGSX", FLAGS, 0, 0, 0)
    try:
        _refused(spawner, bad, 3)  # (the spawner has its own table from here)
        before = _own_fds(spawner.pid)
        assert len(before) == 5 and sum(n.startswith("socket:") for n in before) == 1
        _refused(spawner, head, 4 + 64 + 2, go_at=1)
        _refused(spawner, head + b"x", 4 + 64, go_at=1)
        _refused(spawner, bad, 3)
        assert _own_fds(spawner.pid) == before
        _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
        _refused(spawner, bad, 3)
        assert _own_fds(spawner.pid) == before
    finally:
        spawner.close()
        os.waitpid(spawner.pid, 0)


def test_a_spawner_killed_with_a_request_queued_makes_nothing(reaper: int) -> None:
    """The spawner dying (killed, OOM) with a request not yet taken: the kernel drops the
    request's descriptors with its socket, so the go socket ends at once (the fork server
    drops that launcher: ``_Warm.made``) rather than waiting for words that never come."""
    spawner = _cinit.Spawner(reaper)
    os.kill(spawner.pid, signal.SIGSTOP)
    go, theirs_go = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    plan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    config = os.memfd_create("cfg", os.MFD_CLOEXEC)
    try:
        assert spawner.spawn(FLAGS, theirs.fileno(), theirs_go.fileno(), config)
    finally:
        theirs.close()
        theirs_go.close()
        os.close(config)
    os.kill(spawner.pid, signal.SIGKILL)
    assert os.waitpid(spawner.pid, 0)[1] == signal.SIGKILL
    assert select.select([go], [], [], 10)[0] == [go]
    assert go.recv(8) == b""
    go.close()
    plan.close()
    spawner.close()


UNSET = 4294967295


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="loginuids need CAP_AUDIT_CONTROL")
def test_a_tag_is_lent_for_its_clone_alone(reaper: int) -> None:
    """The spawner lends a tag for the init's clone and takes it back before the next
    request: the tagged init carries it, the spawner's own loginuid is unset again, and an
    untagged init made next carries no other session's tag (review21)."""
    if not Lender().usable(TAG):
        pytest.skip("this kernel does not let us lend a loginuid")
    spawner = _cinit.Spawner(reaper)
    try:
        *_, lent = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c, tag=TAG))
        assert lent == TAG
        assert _loginuid(spawner.pid) == UNSET
        *_, plain = _made(lambda p, g, c: spawner.spawn(FLAGS, p, g, c))
        assert plain == UNSET
    finally:
        spawner.close()
        os.waitpid(spawner.pid, 0)
