"""One inotify instance for every session's view guard, in the fork server.

The kernel counts inotify instances per user (``fs.inotify.max_user_instances``, 128 on
Debian) across user namespaces, so an instance per session would cap a user at that many
sessions. The fork server holds one for all of them. Each launcher's outer process (see
``_viewguard``) is a client on its own SEQPACKET socket:

  outer -> hub   ``O`` + msgpack list: the paths whose change matters (``on_the_way``)
  outer -> hub   ``W`` + msgpack list of directory names, with their ``O_PATH`` descriptors
                 (opened in the session's view): watch these, instead of what was watched
  hub -> outer   ``k`` watched; ``E`` + errno: could not (the launch, or the session, ends)
  hub -> outer   ``c``: something on the way to a guarded path changed: check now
  outer -> hub   ``H`` with four descriptors (the init's pidfd, the report pipe, a memfd with
                 the guard's state, the session's end of this socket), once the init no
                 longer dies with the outer: the hub guards this session from now on
  hub -> outer   ``h``: taken (the outer leaves); ``E`` + errno: not (the session ends)
  init -> hub    ``A`` with four (the pidfd, the memfd, the socket's end, the init's mount
                 namespace): an init without an outer (``_launcher.direct``), its view built
                 and watched before any plan;
                 until its launch (``launched``: the fork server passes the exit pipe) the
                 guard's records wait in a pipe of the hub's; ``h`` or ``E`` as for ``H``

Once it has taken a session (in a pid namespace, the outer launcher leaves once the init
runs ``nono-reaper``: one process per session), a change on the way starts a repair instead
of a ``c``: ``nono-reaper --repair`` (``reaper_outer.c``) enters the session's user and mount
namespaces through the init's pidfd, or, for an init adopted ahead, through the mount
namespace it sent and that namespace's owner (its image may have been exec'd outside the
session's user namespace, and the kernel then lets only a fork server with CAP_SYS_PTRACE in
its own enter through the pidfd), does what the outer did on ``c`` (its ``W`` arrive on the
session's socket like the outer's), and writes the state back to the memfd; one at a time per
session, again if a change came meanwhile. The repairs are run by one repair server,
``nono-reaper --repair --serve``, spawned ahead of need (from the fork server's memfd of the
reaper) and kept while any session is guarded here: the hub sends it a job (``J``, the job's
number and the session's four descriptors, five with the mount namespace), it forks a child
that does the repair, and it answers ``R`` with the job's number and the child's wait status.
A change on the way of every session (the host's ``useradd`` renaming ``/etc/shadow``, beside
a fleet of 1000) costs the fork server a message per session, not a spawn and an exec each
(1000 ``nono-reaper`` images, one per session). Every job is sent when its session is woken:
no bound on the repairs running at once, since a repair stuck in a session's view (a file
system there that does not answer) would then hold the others' back, their views unrepaired.
Only when the server's socket is full do the next jobs wait here, in the order they were
woken, until it can be written again. The session is dropped when its init exits (its
pidfd).

A watch is added through ``/proc/self/fd/N``, so it is on the inode the session sees, whatever
the fork server's own view of that path. One inode watched for several sessions is one watch
descriptor with several clients; a client's socket closing (its session ended) drops its
watches. An event wakes only the clients for which it names a path on the way to one of their
guarded paths.

The kernel counts the hub's watches against the fork server's user (root, for the system
daemon), whose every other program (systemd, editors, file managers) shares
``fs.inotify.max_user_watches``. A session may ask for up to ``MAX_FDS`` directories, so one
user's sessions on distinct directories could take them all (a few hundred sessions; on a host
with 4 GiB of memory the limit is about 32,000). Each client carries the uid its session
runs as, and one uid holds at most :func:`watch_share` distinct watches of the hub; more are
refused with ``ENOSPC`` (the launch, or the repair, fails: its session ends). A watch shared
by several sessions of one uid counts once (once in each of the two instances below).

One session must not slow the guards of the others (docs/security-model.md, "The guard hub,
kept busy by one session"). The kernel queues an instance's events in one line, and a
program can fill it (files made and removed at full speed in its working directory, which is
on the way to its ``.git``): the others' changes would wait behind its events, and the
queue's overflow (``IN_Q_OVERFLOW``: changes lost) would start a repair of every session. So
a client whose watches see more than ``LOUD_EVENTS`` events a second is moved to a second
instance, shared only by such clients: it is woken, its launcher or repair sends its watches
again, and they are added there. An overflow wakes only the clients with a watch in the
instance that overflowed (they check again: fail closed). Each call of :meth:`handle` reads
at most ``BATCH`` bytes of one instance, so that the fork server's launches, the other
instance and the clients' messages are served between batches; the loud instance is read at
most every ``LOUD_PAUSE`` (a timerfd), so that a storm costs the fork server one wake-up for
many events (its clients' changes wait up to that much longer).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

import msgspec

from . import _libc, _reaper
from ._poller import Poller

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_WAKE_ALWAYS = _IN_Q_OVERFLOW | _libc.IN_DELETE_SELF | _libc.IN_MOVE_SELF
DIR_EVENTS = (_libc.IN_CREATE | _libc.IN_MOVED_TO | _libc.IN_MOVED_FROM | _libc.IN_DELETE
              | _libc.IN_DELETE_SELF | _libc.IN_MOVE_SELF | _libc.IN_ONLYDIR)
MAX_FDS = 200  # directories per W message (SCM_MAX_FD is 253)
REPAIR_LOST = 42  # a repair's exit status: guard lost, reported, init killed (reaper_outer.c)
MAX_MESSAGE = 1 << 20
BATCH = 16384  # bytes of events read per call of ``handle``: a few hundred events
LOUD_EVENTS = 2000  # events a second on a client's watches that move it to the loud instance
LOUD_PAUSE = 0.002  # seconds the loud instance is left after each read: its events gather
_JOB = struct.Struct("<I")  # a job's number, in the server's ``J``
_ANSWER = struct.Struct("<Ii")  # the server's ``R``: the job's number, the repair's wait status
_Key = tuple[int, int]  # (the instance's descriptor, a watch descriptor in it)
_MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"


def watch_share() -> int:
    """The distinct watches one uid's sessions may hold: an eighth of the fork server's
    user's ``max_user_watches`` (8,192 assumed if unreadable), at least 1,024."""
    try:
        with open(_MAX_USER_WATCHES, encoding="ascii") as f:
            limit = int(f.read().strip())
    except (OSError, ValueError):
        limit = 8192
    return max(1024, limit // 8)


@dataclass
class _Adopted:
    """A session whose outer launcher has left: the hub repairs its view itself."""

    pidfd: int  # the init's
    report: int  # the exit pipe: guard records
    config: int  # the guard's state (``_reaper.outer_config``), updated by each repair
    peer: int  # the session's end of its hub socket, for the repairs' ``W``
    repair: int = 0  # the number of the repair job running, 0: none
    again: bool = False  # a change came while it ran
    hold: int = -1  # adopted ahead (``A``): where the records wait until the launch (read end)
    launched: bool = True  # False until ``launched`` for one adopted ahead
    mntns: int = -1  # the init's mount namespace (adopted ahead): what its repairs enter


@dataclass
class _Client:
    """One launcher's connection: the paths it guards and, once adopted, its session."""

    sock: socket.socket
    on_the_way: frozenset[str] = frozenset()
    watches: dict[_Key, list[str]] = field(default_factory=dict)  # watch -> its directories
    #: Per watch, the names in its directories that are on the way (as the kernel gives them).
    wanted: dict[_Key, frozenset[bytes]] = field(default_factory=dict)
    adopted: _Adopted | None = None
    uid: int = -1  # the uid its session runs as: whose share its watches count against
    woken: bool = False  # sent a ``c`` before it was adopted
    loud: bool = False  # its watches are (to be) in the loud instance
    seen: int = 0  # events on its watches since ``since``
    since: float = 0.0

    def want(self) -> None:
        """:attr:`wanted` from :attr:`on_the_way` and :attr:`watches`."""
        names = _names_by_dir(self.on_the_way)
        self.wanted = {key: names.get(dirs[0], _NONE) if len(dirs) == 1
                       else frozenset().union(*(names.get(d, ()) for d in dirs))
                       for key, dirs in self.watches.items()}


_NONE: frozenset[bytes] = frozenset()


@functools.lru_cache(maxsize=64)
def _names_by_dir(on_the_way: frozenset[str]) -> dict[str, frozenset[bytes]]:
    """The names on the way, by the directory they are in (as inotify names them: bytes).
    Read only. Remembered per set of paths: the sessions of one view send the same set, with
    each watch request of their launchers and repairs (a fleet's 49 paths: 0.05 ms of the
    fork server's loop each time, 0.001 remembered; docs/benchmarks.md, ``fleet2``)."""
    names: dict[str, set[bytes]] = {}
    for path in on_the_way:
        if name := os.path.basename(path):
            names.setdefault(os.path.dirname(path), set()).add(os.fsencode(name))
    return {directory: frozenset(found) for directory, found in names.items()}


class GuardHub:
    """The fork server's half. ``poller`` is the fork server's; the hub registers its
    inotify descriptor and its clients' sockets there, and :meth:`handle` takes their
    events."""

    def __init__(self, poller: Poller, reaper: int = -1,
                 share: int | None = None) -> None:
        self._poller = poller
        self._share = watch_share() if share is None else share
        self._held: dict[int, dict[_Key, set[int]]] = {}  # uid -> watch -> clients
        self._reaper = reaper  # the memfd of nono-reaper, for repairs; -1: none (no adopting)
        self._clients: dict[int, _Client] = {}
        self._by_wd: dict[_Key, set[int]] = {}  # watch -> client descriptors
        self._inits: dict[int, _Client] = {}  # an adopted session's init pidfd -> its client
        self._repairs: dict[int, _Client] = {}  # a repair job running -> its client
        self._waiting: dict[int, _Client] = {}  # woken, the server's socket full: fd -> client
        self._jobs = 0  # the last job's number
        self._server: tuple[int, socket.socket] | None = None  # the repair server: pid, socket
        self._server_retry = 0.0  # when to try spawning one again after a failure
        self._armed = False  # the server's socket is polled for POLLOUT too (jobs waiting)
        self.fd = -1
        self.loud_fd = -1  # the instance of the loud clients, opened for the first one
        self._pause = -1  # a timerfd: when to read the loud instance again
        self.error = 0
        self._open_inotify()

    def _new_instance(self) -> int:
        fd = _libc.inotify_init1(_libc.IN_CLOEXEC | _libc.IN_NONBLOCK)
        self._poller.register(fd, select.POLLIN)
        return fd

    def _open_inotify(self) -> bool:
        """The hub's inotify instance; False (``error`` set) if the user has none left. Tried
        again at each watch request until it succeeds: a shortage when the fork server
        started refuses the launches made during it (fail closed), not every later one."""
        try:
            self.fd = self._new_instance()
        except OSError as exc:
            self.error = exc.errno or errno.EMFILE
            return False
        self.error = 0
        return True

    def _instance(self, client: _Client) -> int:
        """The instance ``client``'s watches go to: the loud one if it is loud and that
        instance exists or can be made (if not, the shared one, as before it was loud)."""
        if client.loud and self.loud_fd < 0:
            try:
                self.loud_fd = self._new_instance()
                self._pause = _libc.timerfd()
                self._poller.register(self._pause, select.POLLIN)
            except OSError:
                client.loud = False
        return self.loud_fd if client.loud else self.fd

    def new_client(self, uid: int = -1) -> socket.socket:
        """A socket pair for one launcher of a session running as ``uid``: the hub keeps one
        end, the launcher gets the other (which the caller closes after the fork)."""
        return self.client_for(uid)[1]

    def client_for(self, uid: int = -1) -> tuple[socket.socket, socket.socket]:
        """``new_client``, with the hub's end too: the key ``launched`` takes (closed once
        the hub drops the client)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._clients[ours.fileno()] = _Client(ours, uid=uid, since=time.monotonic())
        self._poller.register(ours, select.POLLIN)
        return ours, theirs

    @property
    def adopts(self) -> bool:
        """Whether sessions can be guarded here without an outer launcher (repairs run)."""
        return self._reaper >= 0

    def handle(self, fd: int) -> bool:
        """Take the event on ``fd``; False if ``fd`` is not the hub's. Never raises: the
        fork server carries every session, and one broken client must not end them all
        (a client that makes the hub fail is dropped; its outer then ends its session)."""
        if fd == self._pause and fd >= 0:  # the loud instance's pause is over
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 8)
            self._poller.register(self.loud_fd, select.POLLIN)
            return True
        if fd >= 0 and fd in (self.fd, self.loud_fd):
            try:
                self._events(fd)
            except Exception:  # noqa: BLE001 - wake everyone: each outer checks its own view
                self._wake(set(self._clients))
            return True
        if fd in self._inits:
            try:
                self._drop(self._inits[fd])  # the init has exited
            except Exception:  # noqa: BLE001 - see below
                if fd in self._inits:  # not to be seen again, whatever is left of it
                    self._poller.unregister(fd)
                    self._inits.pop(fd)
            return True
        if self._server is not None and fd == self._server[1].fileno():
            try:
                self._answers()
                self._next()  # (writable again: the jobs that waited)
            except Exception:  # noqa: BLE001 - its jobs' sessions are ended (fail closed)
                self._server_ended("the view guard's repair server failed")
            return True
        client = self._clients.get(fd)
        if client is None:
            return False
        try:
            self._from_client(client)
        except Exception:  # noqa: BLE001 - see above
            if fd in self._clients:
                self._drop(client)
        return True

    # ----------------------------------------------------------------------- clients

    def _from_client(self, client: _Client) -> None:
        try:
            msg, fds, _, _ = socket.recv_fds(client.sock, MAX_MESSAGE, MAX_FDS)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        try:
            if not msg:
                self._drop(client)
            elif msg[:1] == b"O":
                client.on_the_way = frozenset(msgspec.msgpack.decode(msg[1:], type=list[str]))
                client.want()
            elif msg[:1] == b"W":
                names = msgspec.msgpack.decode(msg[1:], type=list[str])
                self._reply(client, self._watch(client, names, fds))
            elif msg[:1] == b"H" and len(fds) == 4 and client.adopted is None:
                self._adopt(client, fds)
                fds = []
            elif msg[:1] == b"A" and len(fds) == 4 and client.adopted is None:
                self._adopt_ahead(client, fds)
                fds = []
            else:
                self._drop(client)  # not our protocol: that launcher is broken
        except msgspec.DecodeError:
            self._drop(client)
        finally:
            for descriptor in fds:
                os.close(descriptor)

    def _watch(self, client: _Client, names: list[str], fds: list[int]) -> int:
        """Watch ``fds`` (named ``names``) for ``client`` instead of what it had; an errno
        if that fails (what it had is kept: the outer ends the session on an error)."""
        if self.fd < 0 and not self._open_inotify():
            return self.error
        if len(names) != len(fds):
            return errno.EINVAL
        instance = self._instance(client)
        watches: dict[_Key, list[str]] = {}
        held = self._held.setdefault(client.uid, {})
        # What this client alone holds goes once replaced (a repair's new directories): not
        # counted, so that a repair near the share does not end its session.
        alone = {wd for wd in client.watches if held.get(wd) == {client.sock.fileno()}}
        for name, descriptor in zip(names, fds, strict=True):
            try:
                wd = (instance, _libc.inotify_add_watch(instance, f"/proc/self/fd/{descriptor}",
                                                        DIR_EVENTS))
                if wd not in held and len(held) - len(alone - watches.keys()) >= self._share:
                    if wd not in self._by_wd:  # nobody else's: it was just made
                        _libc.inotify_rm_watch(*wd)
                    raise OSError(errno.ENOSPC, "this user's sessions hold their share of "
                                  "the fork server's inotify watches")
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # gone since it was opened: its parent's watch covers that
                for added in watches.keys() - client.watches.keys():
                    self._release(added, client)
                return exc.errno or errno.EIO
            watches.setdefault(wd, []).append(name)
            self._by_wd.setdefault(wd, set()).add(client.sock.fileno())
            held.setdefault(wd, set()).add(client.sock.fileno())
        for old in client.watches.keys() - watches.keys():
            self._release(old, client)
        client.watches = watches
        client.want()
        return 0

    def _release(self, wd: _Key, client: _Client) -> None:
        held = self._held.get(client.uid, {})
        mine = held.get(wd)
        if mine is not None:
            mine.discard(client.sock.fileno())
            if not mine:
                del held[wd]
        holders = self._by_wd.get(wd)
        if holders is None:
            return
        holders.discard(client.sock.fileno())
        if not holders:
            del self._by_wd[wd]
            _libc.inotify_rm_watch(*wd)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        for wd in list(client.watches):
            self._release(wd, client)
        self._clients.pop(fd, None)
        self._poller.unregister(fd)
        client.sock.close()
        self._waiting.pop(fd, None)
        adopted = client.adopted
        if adopted is not None:  # a repair still running ends on its own (``_finished``)
            self._pass_held(adopted, last=True)
            self._inits.pop(adopted.pidfd, None)
            self._poller.unregister(adopted.pidfd)
            for descriptor in (adopted.pidfd, adopted.report, adopted.config, adopted.peer):
                os.close(descriptor)
            if adopted.mntns >= 0:
                os.close(adopted.mntns)
            client.adopted = None
            if not self._inits and self._server is not None:
                # No session left to guard: the server's socket closed, it exits (reaped),
                # its children with it: their answers never come, and their slots are free
                # (kept, they would hold the next sessions' repairs back for good).
                self._close_server()
                self._repairs.clear()

    # ----------------------------------------------------------------------- adopted

    def _adopt(self, client: _Client, fds: list[int]) -> None:
        """Guard ``client``'s session from now on (``H``: its outer launcher leaves; a fifth
        descriptor, the init's mount namespace: ``A``)."""
        if self._reaper < 0:
            for descriptor in fds:
                os.close(descriptor)
            self._reply(client, errno.ENOEXEC)
            return
        client.adopted = _Adopted(fds[0], fds[1], fds[2], fds[3],
                                  mntns=fds[4] if len(fds) > 4 else -1)
        self._inits[fds[0]] = client
        self._poller.register(fds[0], select.POLLIN)
        try:
            client.sock.send(b"h")
        except OSError:
            self._drop(client)

    def _adopt_ahead(self, client: _Client, fds: list[int]) -> None:
        """``A``: guard the session of an init without an outer launcher from now on, before
        its launch; its records wait in a pipe until ``launched``. A change it was woken for
        before (``c``: no outer reads it) is repaired at once."""
        # Both ends non-blocking: nobody reads the pipe before the launch, and a full one
        # must not hang a repair's record (the view then repaired no more) or ``_lost``'s
        # (the fork server, every session with it). A record that does not fit is dropped:
        # each is one write below PIPE_BUF, whole or not at all, and no program has run.
        hold, held = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._adopt(client, [fds[0], held, fds[1], fds[2], fds[3]])
        if client.adopted is None:
            os.close(hold)
            return
        client.adopted.hold = hold
        client.adopted.launched = False
        if client.woken:
            self._repair(client)

    def launched(self, key: socket.socket, report: int) -> bool:
        """The session of ``key`` (``client_for``), adopted ahead, is being launched: its
        guard's records go to ``report`` (the exit pipe) from now on, those held first.
        False if the hub does not guard it (any more): the launch must not go on."""
        client = self._clients.get(key.fileno())
        adopted = client.adopted if client is not None and client.sock is key else None
        if adopted is None or adopted.launched:
            return False
        held = adopted.report
        adopted.report = fcntl.fcntl(report, fcntl.F_DUPFD_CLOEXEC, 3)
        adopted.launched = True
        os.close(held)  # ours; a repair running has its own, drained when it ends
        self._pass_held(adopted)
        return True

    @staticmethod
    def _pass_held(adopted: _Adopted, last: bool = False) -> None:
        """Write what the guard reported before the launch to the exit pipe (once launched);
        once no repair can write there any more (or the session is ``last`` seen), close
        the holding pipe."""
        if adopted.hold < 0 or not (adopted.launched or last):
            return
        if not adopted.launched:
            os.close(adopted.hold)  # never launched: nobody to report to
            adopted.hold = -1
            return
        try:
            while data := os.read(adopted.hold, 65536):
                os.write(adopted.report, data)
        except BlockingIOError:
            pass
        except OSError:
            pass  # the daemon has gone
        if last or not adopted.repair:
            os.close(adopted.hold)
            adopted.hold = -1

    def _repair(self, client: _Client) -> None:
        """Have ``client``'s session repaired: now, or after the one running if it runs
        already (or after those waiting for the server's socket, if any)."""
        adopted = client.adopted
        if adopted is None:
            return
        if adopted.repair:
            adopted.again = True
            return
        fd = client.sock.fileno()
        if fd in self._waiting:
            return  # its turn comes: that repair sees this change too
        if self._waiting or not self._start(client):
            self._wait(client, first=False)

    def _wait(self, client: _Client, first: bool) -> None:
        """``client``'s job waits until the server's socket can be written (``first``: before
        the others waiting); the hub is told when it can."""
        fd = client.sock.fileno()
        if first:
            self._waiting = {fd: client, **self._waiting}
        else:
            self._waiting[fd] = client
        if self._server is not None and not self._armed:
            self._poller.register(self._server[1], select.POLLIN | select.POLLOUT)
            self._armed = True

    def _next(self) -> None:
        """Send the jobs that waited for the server's socket, while it takes them."""
        while self._waiting:
            fd = next(iter(self._waiting))
            client = self._waiting.pop(fd)
            if not self._start(client):
                self._wait(client, first=True)
                return
        if self._server is not None and self._armed:
            self._poller.register(self._server[1], select.POLLIN)
        self._armed = False

    def _start(self, client: _Client) -> bool:
        """Send ``client``'s session to the repair server (spawned now if there is none; a
        server that has died meanwhile: once more with a new one). False: its socket is full,
        the job was not sent."""
        adopted = client.adopted
        if adopted is None:
            return True
        job = [adopted.pidfd, adopted.peer, adopted.report, adopted.config]
        if adopted.mntns >= 0:
            job.append(adopted.mntns)
        self._jobs = self._jobs % 0xFFFFFFFF + 1  # never 0: "none"
        for _ in range(2):
            try:
                if self._server is None:
                    self._server = self._spawn_server()
                socket.send_fds(self._server[1], [b"J" + _JOB.pack(self._jobs)], job)
            except BlockingIOError:
                return False
            except OSError as exc:
                error = exc
                if self._server is not None:
                    self._server_ended("the view guard's repair server has ended", later=True)
                continue
            adopted.again = False
            adopted.repair = self._jobs
            self._repairs[self._jobs] = client
            return True
        self._lost(client, f"\0the view guard's repair could not start: {error}")
        return True

    def _answers(self) -> None:
        """The repair server's answers (``R``: a job's number, its repair's wait status); its
        socket's end (it has died): its jobs in flight end their sessions."""
        while self._server is not None:
            try:
                msg = self._server[1].recv(64)
            except BlockingIOError:
                return
            except OSError:
                msg = b""
            if len(msg) != 1 + _ANSWER.size or msg[:1] != b"R":
                self._server_ended("the view guard's repair server has ended" if not msg
                                   else "the view guard's repair server failed")
                return
            self._finished(*_ANSWER.unpack_from(msg, 1))

    def _finished(self, job: int, status: int) -> None:
        """Repair ``job`` ended with wait status ``status``: what it came to."""
        client = self._repairs.pop(job, None)
        adopted = client.adopted if client is not None else None
        if client is not None and adopted is not None and adopted.repair == job:
            adopted.repair = 0
            self._pass_held(adopted)
            code = os.waitstatus_to_exitcode(status)
            if code == 0:
                if adopted.again:
                    self._repair(client)
            elif code == REPAIR_LOST:  # reported by the repair, the init killed: again, surely
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(adopted.pidfd, signal.SIGKILL)
            else:  # whatever it did, the view is not known to be guarded: end the session
                self._lost(client, f"\0the view guard's repair failed ({code})")

    def _server_ended(self, why: str, later: bool = False) -> None:
        """The repair server has died (or answered what it should not): the sessions whose
        repairs it ran are not known to be guarded and end; those waiting for its socket
        go to a new server (``later``: the caller sends them)."""
        self._close_server()
        running, self._repairs = self._repairs, {}
        for client in running.values():
            if client.adopted is not None:
                client.adopted.repair = 0
                self._pass_held(client.adopted)
                self._lost(client, "\0" + why)
        if not later:
            self._next()

    def _close_server(self) -> None:
        """Close the server's socket (it exits, its children with it; the fork server reaps
        it)."""
        if self._server is not None:
            self._poller.unregister(self._server[1])
            self._server[1].close()
            self._server = None
            self._armed = False

    @property
    def holds_nothing(self) -> bool:
        """No client, adopted init, repair or repair server: nothing a fresh hub would not
        have."""
        return not (self._clients or self._inits or self._repairs or self._server)

    def wants_spare(self) -> bool:
        """Whether the repair server is to be spawned (``idle``): sessions are guarded here
        and there is none."""
        return (self._server is None and bool(self._inits)
                and time.monotonic() >= self._server_retry)

    def idle(self) -> None:
        """The fork server has nothing else to do: spawn the repair server if one is
        wanted. Not at once when a session is adopted: the spawn would compete for the CPU
        with the launch that is being finished."""
        if self.wants_spare():
            self._refill()

    def _refill(self) -> None:
        try:
            self._server = self._spawn_server()
        except OSError:  # the next repair spawns one itself; the next try here in a second
            self._server = None
            self._server_retry = time.monotonic() + 1

    def _spawn_server(self) -> tuple[int, socket.socket]:
        """``nono-reaper --repair --serve``, waiting for jobs on its socket: a change then
        waits for a message, not for a spawn and an exec (the view guard's window)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        binary = fcntl.fcntl(self._reaper, fcntl.F_DUPFD_CLOEXEC, 10)  # not on 3, the job's
        try:
            pid = os.posix_spawn(f"/proc/self/fd/{binary}",
                                 _reaper.repair_argv(os.getpid(), serve=True), {},
                                 file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)])
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(binary)
        ours.setblocking(False)
        self._poller.register(ours, select.POLLIN)
        return pid, ours

    def reaped(self, pid: int, status: int) -> None:
        """The fork server reaped ``pid``: if it was the repair server, its jobs in flight
        end their sessions (its socket's end says the same, whichever comes first)."""
        del status
        if self._server is not None and self._server[0] == pid:
            self._server_ended("the view guard's repair server has ended")

    def _lost(self, client: _Client, why: str) -> None:
        """Report ``client``'s guard lost and end its session (as ``reaper_outer.c`` would)."""
        from ._launcher import GUARD_LOST, REC_GUARD, record

        adopted = client.adopted
        if adopted is None:
            return
        try:
            os.write(adopted.report, record(REC_GUARD, 0, GUARD_LOST, why.encode()[:4000]))
        except OSError:
            pass  # the daemon has gone
        try:
            signal.pidfd_send_signal(adopted.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _reply(client: _Client, err: int) -> None:
        try:
            client.sock.send(b"k" if not err else b"E" + struct.pack("<i", err))
        except OSError:
            pass  # its launcher is gone; its socket's end is seen next

    # ----------------------------------------------------------------------- events

    def _events(self, instance: int) -> None:
        """One batch of ``instance``'s events: the rest waits for the next call."""
        wake: set[int] = set()
        try:
            data = os.read(instance, BATCH)
        except BlockingIOError:
            return
        if instance == self.loud_fd and self._pause >= 0:
            # Coalesced: a storm is read every LOUD_PAUSE, many events a wake-up, not the
            # few that came since the last read (the fork server's cost is per wake-up).
            # Left only once the timer is armed: an instance nobody reads guards nobody.
            try:
                _libc.timerfd_after(self._pause, LOUD_PAUSE)
            except OSError:
                pass
            else:
                self._poller.unregister(instance)
        touched = self._sort(instance, data, wake)
        if instance == self.fd:
            wake.update(self._louder(touched))
        self._wake(wake)

    def _louder(self, touched: set[int]) -> set[int]:
        """Of the clients whose watches the batch touched, those now over ``LOUD_EVENTS`` a
        second: marked loud, to be woken (they send their watches again, to the loud
        instance)."""
        now = time.monotonic()
        moved: set[int] = set()
        for fd in touched:
            client = self._clients.get(fd)
            if client is None or client.loud:
                continue
            elapsed = now - client.since
            if client.seen > LOUD_EVENTS * max(1.0, elapsed):
                client.loud = True
                moved.add(fd)
            elif elapsed >= 1:
                client.seen, client.since = 0, now
        return moved

    def _wake(self, wake: set[int]) -> None:
        for fd in wake:
            client = self._clients.get(fd)
            if client is not None and client.adopted is not None:
                self._repair(client)
            elif client is not None:
                client.woken = True
                try:
                    client.sock.send(b"c")
                except BlockingIOError:
                    pass  # a wake-up is already waiting to be read: this one adds nothing
                except OSError:
                    self._drop(client)

    def _sort(self, instance: int, data: bytes, wake: set[int]) -> set[int]:
        """Add to ``wake`` the clients ``data`` concerns; return those it had events for.

        The batch's events are gathered per watch first (how many, their masks together,
        their names), then each watch's holders are looked at once: a directory watched for
        every session (``/tmp``, on the way to each one's working directory) that the host
        changes at full speed cost the fork server's loop events x sessions steps (a batch
        of 387 events beside 300 sessions 24 ms, beside 1000 77 ms, while no launch is
        served), now events + sessions (0.4 and 0.6 ms). A holder is woken as before: by any
        event of a kind that always wakes, or that names one of the names it wants there."""
        touched: set[int] = set()
        # watch -> ([events, masks together], names, its holders when first seen)
        batch: dict[_Key, tuple[list[int], set[bytes], set[int]]] = {}
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            start = offset + _EVENT.size
            offset = start + length
            if mask & _IN_Q_OVERFLOW:  # lost: whoever watches here checks again
                wake.update(fd for fd, client in self._clients.items()
                            if not client.watches
                            or any(key[0] == instance for key in client.watches))
                continue
            key = (instance, wd)
            holders = self._by_wd.get(key, set())
            if mask & _IN_IGNORED:  # the directory is gone; its clients rewatch when woken
                self._by_wd.pop(key, None)
                for fd in holders:
                    client = self._clients.get(fd)
                    if client is not None:
                        client.watches.pop(key, None)
                        self._held.get(client.uid, {}).pop(key, None)  # gone from its share
                wake.update(holders)
                continue
            gathered = batch.get(key)
            if gathered is None:
                # (the holders as they are now: an IN_IGNORED later in the batch takes the
                # watch from the table, and wakes each of them anyway)
                gathered = batch[key] = ([0, 0], set(), holders)
            gathered[0][0] += 1
            gathered[0][1] |= mask
            gathered[1].add(data[start:offset].rstrip(b"\0"))
        for key, ((count, masks), names, holders) in batch.items():
            for fd in holders:
                client = self._clients.get(fd)
                if client is None:
                    continue
                client.seen += count
                touched.add(fd)
                if masks & _WAKE_ALWAYS or not names.isdisjoint(client.wanted.get(key, _NONE)):
                    wake.add(fd)
        return touched


__all__ = ["DIR_EVENTS", "MAX_FDS", "GuardHub"]
