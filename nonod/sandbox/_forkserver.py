"""The fork server: a single-threaded process that forks launchers on request.

The daemon is a threaded trio process, which must not fork. It starts this server once, with a
clean environment, and sends it one ``LaunchPlan`` per SEQPACKET message together with five
descriptors (stdin, stdout, stderr, launch pipe, exit pipe). The server forks, the child runs
``_launcher.run_outer`` and the server goes back to reading. All results travel on the pipes,
straight to the daemon; the server answers nothing.

It dies with the daemon (PR_SET_PDEATHSIG), and its children die with it, so a killed daemon
leaves no sandboxed process behind.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import math
import os
import resource
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

import msgspec

from .. import _malloc
from ..cgroups._v1 import apply_limits
from . import _cinit, _launcher, _libc, _reaper, _renewal
from ._guardhub import GuardHub
from ._launcher import (
    FDS_PER_PLAN,
    MAX_PLAN,
    PENDING,
    READY,
    REC_AUDIT,
    REC_CGROUP,
    REC_ERROR,
    REC_PID,
    STEPS,
    WARM_HELLO,
    LaunchPlan,
    View,
    direct,
    join_cgroups,
    map_ids,
    record,
    run_direct,
    run_outer,
    run_warm,
    set_oom_score_adj,
    view_of,
)
from ._loginuid import Lender, session_of
from ._lowfds import LowSlots
from ._mounts import BIND_DIR, BIND_FILE, IDMAP, OVERLAY, idmapped_trees
from ._poller import EPoller, Poller
from ._viewguard import guarded


def _reap(hub: GuardHub, maps: _Maps | None = None) -> None:
    """Reap ended launchers, the inits they left to us (``_launcher.hands_over``), and the hub's
    repairs (whose status it needs)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        hub.reaped(pid, status)
        if maps is not None:
            maps.reaped(pid)


def _wake_on_exits(poller: Poller) -> int:
    """A pipe that becomes readable when a child exits (SIGCHLD), registered in ``poller``: an
    outer launcher that leaves its session (``_launcher.hands_over``) is reaped at once, not left
    a zombie until the next round. Launchers drop this (``_launcher._reset_signals``)."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    signal.set_wakeup_fd(wake_w)
    poller.register(wake_r, select.POLLIN)
    return wake_r


def _raise_nofile() -> None:
    """The hub holds four descriptors per session it guards (``_guardhub``): take the hard
    limit (the server polls, it never selects), and leave the inherited one to launchers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _launcher.INHERITED_NOFILE = (soft, hard)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


# At most this many keys without a view, and with one, have warm launchers; the least
# recently launched is dropped for a new one. With the depths below, at most 8 launchers
# wait (4 x 1 + 2 x 2), as many as before views were prepared (4 keys x 2); 12 while both
# views are busy (4 x 1 + 2 x ``BUSY_DEPTH``).
MAX_WARM_KEYS = 4
MAX_VIEWS = 2
# Launchers kept ready per key: one, and two for a view launched again within ``HOT``
# seconds (one is not enough for launches that come back to back: the next would find its
# launcher still preparing).
WARM_DEPTH = 2
HOT = 1.0
# A view launched within ``HOT`` of a launch of it beside another one in flight (several
# clients) keeps this many, refilled at once: at 4 in flight, two left 44% of the launches
# to find none and go cold, their launches coming in bursts (docs/benchmarks.md,
# ``fleet5``).
BUSY_DEPTH = 4
# A view not launched for this long has its launchers dropped (those without a view stay,
# one per key): the daemon's ``[sandbox] warm_idle``.
WARM_IDLE = 30.0
REAP_INTERVAL_MS = 1000  # ended launchers are reaped at least this often
SPARE_DELAY_MS = 5  # the hub's repair server, spawned once nothing has happened for this long
# A warm launcher prepares itself this much nicer than the fork server, so that on a small
# machine a launch in progress wins the CPU over it; the fork server sets it back before it
# hands it a plan, which needs CAP_SYS_NICE: other daemons' launchers prepare at the
# daemon's own priority. (Not SCHED_IDLE: on a host busy with other work an idle-policy
# launcher gets no CPU at all, and the launch then waits for its whole preparation:
# docs/benchmarks.md, branch `engine`.)
WARM_NICE = 10
WarmKey = tuple[int, int, int, int, int]  # uid, gid, namespaces, audit tag, oom_score_adj
PoolKey = tuple[WarmKey, bytes]  # and the encoded view (b"": none, only namespaces and root)


def _bound_sources(view: View) -> tuple[tuple[int, int], ...]:
    """(device, inode) of what each of the view's binds names on the host now ((0, 0): not
    there): a warm launcher's prepared binds are current while these stay equal. Idmapped
    trees are binds too: the fork server clones them when it makes the launcher, and an
    overlay's lower layer is the host's directory it was made of."""
    out: list[tuple[int, int]] = []
    for op in view.mounts:
        if op.kind in (BIND_DIR, BIND_FILE, IDMAP, OVERLAY):
            try:
                st = os.stat(op.source)
            except OSError:
                out.append((0, 0))
                continue
            out.append((st.st_dev, st.st_ino))
    return tuple(out)


class MountTable:
    """Changes of the fork server's mount table since it opened it: the kernel reports one
    ``POLLPRI`` on ``/proc/self/mountinfo`` for any number of changes since the last poll
    (``mounts_poll``). A prepared view holds copies of the host's mounts under its binds as
    they were when it was built; a host ``umount`` since (a volume locked) must not stay
    visible in a session that starts afterwards, nor a mount replaced since."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLPRI)
        self._changes = 0

    def generation(self) -> int:
        """A number that differs from every earlier one once the table has changed."""
        if self._poller.poll(0):  # only POLLPRI (or POLLERR with it): a change
            self._changes += 1
        return self._changes


def _pool_group(pool: tuple[tuple[str, str], ...]) -> tuple[str, dict[str, str]]:
    """A group for one warm launcher in every v1 hierarchy of ``pool``: its name and its
    directories by controller (none if it cannot be made: the launcher is then moved into
    the session's groups at launch, as a cold one joins them)."""
    if not pool:
        return "", {}
    name = f"warm-{os.urandom(6).hex()}"  # (secrets would load hashlib, hmac, random)
    dirs = {controller: os.path.join(subtree, name) for controller, subtree in pool}
    made: list[str] = []
    try:
        for directory in sorted(set(dirs.values())):
            os.makedirs(directory, 0o755)
            made.append(directory)
    except OSError:
        for directory in made:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        return "", {}
    return name, dirs


class _Warm:
    """One launcher waiting, namespaces made, for a plan with its uid, gid, namespaces and
    audit tag (written before the namespaces were made); its init waits in a cgroup of its
    own when the daemon's sessions get v1 cgroups (``pool``)."""

    #: A C init's words still to come on its ``go`` socket (``_c_direct``).
    _making: _Making | None = None

    def __init__(self, key: WarmKey, hub: GuardHub, pool: tuple[tuple[str, str], ...] = (),
                 reaper: int = -1, view: View | None = None,
                 mounts: MountTable | None = None, lender: Lender | None = None,
                 config: int = -1, poller: Poller | None = None,
                 spawner: _cinit.Spawner | None = None) -> None:
        """With a ``view``, the launcher also builds it (``run_warm``); its binds must still
        name what they named then (``_bound_sources``) when it is handed a plan. Any
        launcher's mount namespace is a copy of the host's mount table (``mounts``) when it
        was made, which must not have changed since (``stale``). Raises OSError if the
        view's idmapped trees cannot be made or the fork fails (the pool then makes none for
        this key until it is launched again). With ``poller``, a C init is made without
        waiting for it (``_c_direct``): the caller hands ``made`` what its ``go_fd`` says;
        with ``spawner``, by that (``_cinit.Spawner``), not by a helper of its own."""
        self.view = view
        self.mounts = mounts
        self.generation = mounts.generation() if mounts is not None else 0
        # Taken before the idmapped trees are cloned (and the other binds made, in the
        # launcher): a source replaced in between then differs at hand-over, never the
        # other way round.
        self.sources = _bound_sources(view) if view is not None else ()
        trees = tuple(idmapped_trees(view.mounts)) if view is not None else ()
        self.group, self.group_dirs = _pool_group(pool)
        procs = tuple(sorted({os.path.join(d, "cgroup.procs") for d in self.group_dirs.values()}))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_PLAN)  # a plan is one datagram
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)  # the server's, the session's
        self.nicer = os.geteuid() == 0
        self.sock = ours
        self.audit_tag = key[3]
        #: The outer's hello, known here when there is no outer (``_launcher.direct``).
        self.hello: tuple[int, int, int] | None = None
        #: The hub's end of the socket a direct init hands its view guard over on, if any.
        self.hub_key: socket.socket | None = None
        self.hub = hub
        #: Its init is ``nono-reaper --init`` (``_cinit``): plans go to it in the flat form.
        self.c_init = False
        if config >= 0:
            self._c_direct(key, theirs, procs, reaper, config, trees, lender, poller, spawner)
            return
        if view is not None and direct(key, view, lender is not None and bool(key[3])
                                       and lender.usable(key[3]), hub.adopts):
            self._direct(key, theirs, procs, reaper, view, trees, lender)
            return
        client = hub.new_client(key[0])
        try:
            try:
                self.pid = pid = os.fork()
            except OSError:
                ours.close()
                self._remove_group()
                raise
            if pid == 0:
                ours.close()
                try:
                    if self.nicer:
                        os.setpriority(os.PRIO_PROCESS, 0, min(19, self.nice + WARM_NICE))
                    run_warm(key[0], key[1], key[2], theirs.detach(), key[3], client.detach(),
                             key[4], procs, reaper, view, trees)
                finally:
                    os._exit(126)
        finally:
            theirs.close()
            client.close()
            for fd in trees:
                os.close(fd)

    def _direct(self, key: WarmKey, theirs: socket.socket, procs: tuple[str, ...], reaper: int,
                view: View, trees: tuple[int, ...], lender: Lender | None) -> None:
        """Make the launcher's init straight in its namespaces (``_launcher.run_direct``):
        no outer process. Its id maps, ``oom_score_adj`` and group are written from here
        once it says it is dumpable (its ``/proc`` files its own, not root's: a daemon that
        is not root may write them then), before it goes on; if they cannot be, it is
        killed and the OSError raised. With an audit tag, ``lender`` lends it our loginuid
        for the ``clone`` (``_loginuid``). A view with something to guard gets a hub socket,
        on which the init hands the guard over (``_launcher._adopt_ahead``). What the init
        keeps is lent to it in the server's low slots (``_lowfds``), and only those and the
        server's first descriptors are copied into its table, not every session's."""
        go, theirs_go = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client: socket.socket | None = None
        if guarded(view.mounts):
            self.hub_key, client = self.hub.client_for(key[0])
        pid = 0
        # all but the cgroup namespace: the init's own, once it is in its group
        flags = key[2] & ~_libc.CLONE_NEWCGROUP
        kept = (theirs.fileno(), theirs_go.fileno(), reaper,
                client.fileno() if client is not None else -1, *trees)
        live = tuple(fd for fd in kept if fd >= 0)
        with _lent(live) as (slots, below):
            at = dict(zip(live, slots, strict=False))  # (empty: nothing lent)
            try:
                if key[3] and lender is not None:
                    self.pid = pid = lender.fork(key[3], lambda: _libc.fork_into(flags, below))
                else:
                    self.pid = pid = _libc.fork_into(flags, below)
                if pid == 0:
                    # With ``below``, our table holds the server's first descriptors and
                    # the lent copies alone (``run_direct`` closes all but those): the
                    # sockets' own numbers are not ours to close.
                    for server_end in (self.sock, go):
                        if below:
                            server_end.detach()
                        else:
                            server_end.close()
                    for child_end in (theirs, theirs_go, client):
                        if child_end is not None:
                            child_end.detach()
                    mine = [at.get(fd, fd) for fd in kept]
                    try:
                        run_direct(key, mine[0], mine[1], mine[2], view, tuple(mine[4:]),
                                   mine[3])
                    finally:
                        os._exit(126)
                theirs_go.close()
                if _first_word(go, pid) != b"r":  # (said once it has its own table)
                    raise OSError(errno.ECHILD, "the warm init ended before its maps")
                self._let_go(key, pid, procs, go)
            except OSError:
                self._failed(pid)
                raise
            finally:
                _close(go, theirs_go, theirs, client, trees)

    def _let_go(self, key: WarmKey, pid: int, procs: tuple[str, ...], go: socket.socket) -> None:
        """A direct init said ``r``: its refill priority (only now: the server waited for
        its ``r``, and every launch with it), id maps, ``oom_score_adj`` and group, then
        ``g``."""
        if self.nicer:
            os.setpriority(os.PRIO_PROCESS, pid, min(19, self.nice + WARM_NICE))
        map_ids(pid, key[0], key[1])
        set_oom_score_adj(key[4], pid)
        join_cgroups(procs, pid)
        go.send(b"g")
        self.hello = (pid, *session_of(pid)) if key[3] else (pid, 0, 0)

    def _failed(self, pid: int) -> None:
        """A direct launcher that could not be made: its init (if any) killed, reaped with
        the others."""
        if pid:
            os.kill(pid, signal.SIGKILL)
        self.sock.close()
        self._remove_group()

    def _c_direct(self, key: WarmKey, theirs: socket.socket, procs: tuple[str, ...],
                  reaper: int, config: int, trees: tuple[int, ...],
                  lender: Lender | None, poller: Poller | None,
                  spawner: _cinit.Spawner | None) -> None:
        """``_direct`` with the init in C, made by the ``spawner`` (``_cinit.Spawner``) or
        else by a helper spawned for it (``_cinit.spawn``), without waiting: the spawner or
        helper says the init's pid, the init ``r``, on the ``go`` socket, which the
        server's loop watches (``poller``; ``made``) until both came, then lets the init go
        as ``_direct`` does; a launch that takes the launcher before waits for them
        (``_finish``), and so does this without a ``poller``. An audit tag is lent for the
        init's clone, by the spawner or by ``lender`` for the helper's spawn: the init
        inherits the loginuid and a fresh audit session. (Waiting here held the server's loop
        6-17 ms per launcher while the CPUs were busy, and launches from several clients
        found none ready: docs/benchmarks.md, ``fleet5``.)"""
        go, theirs_go = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client: socket.socket | None = None
        if self.view is not None and guarded(self.view.mounts):
            self.hub_key, client = self.hub.client_for(key[0])
        try:
            def spawn() -> int:
                return _cinit.spawn(reaper, key[2], theirs.fileno(), theirs_go.fileno(),
                                    config, trees, client.fileno() if client else -1)

            lends = bool(key[3]) and lender is not None and lender.usable(key[3])
            if spawner is not None and (lends or not key[3]) and spawner.spawn(
                    key[2], theirs.fileno(), theirs_go.fileno(), config, trees,
                    client.fileno() if client else -1, key[3]):
                pass
            elif key[3] and lender is not None:
                lender.fork(key[3], spawn)
            else:
                spawn()  # (reaped by the server's loop, with every other child)
        except OSError:
            go.close()
            self._failed(0)
            raise
        finally:
            _close(theirs_go, theirs, client, trees)
        self.c_init = True
        self.pid = 0
        self._making = _Making(key, procs, go, poller)
        if poller is None and not self._finish(time.monotonic() + READY_PATIENCE):
            raise OSError(errno.ECHILD, "the C init ended before its maps")

    def made(self) -> bool | None:
        """Take what the ``go`` socket has (the server's loop saw it readable): True once
        the init was let go, None while the helper or the init has more to say, False if
        either ended first (the launcher killed: drop it)."""
        making = self._making
        if making is None:
            return True
        try:
            while True:
                try:
                    word = making.go.recv(8, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return None
                if not making.take(word):
                    raise OSError(errno.ECHILD, "the C init ended before its maps")
                if making.pid:
                    self.pid = making.pid
                if making.done:
                    self._let_go(making.key, making.pid, making.procs, making.go)
                    return True
        except OSError:
            self._failed(making.pid)
            return False
        finally:
            if making.done or self.sock.fileno() < 0:
                self._making = None
                making.close()

    def _finish(self, deadline: float) -> bool:
        """Wait (at most until ``deadline``) for the helper's and the init's words and let
        the init go; False if it ended first (killed), or is late (killed too)."""
        making = self._making
        while making is not None and self._making is not None:
            if not _readable_by(making.go, deadline):
                self._failed(making.pid)
                self._making = None
                making.close()
                return False
            if self.made() is False:
                return False
        return True

    @property
    def go_fd(self) -> int:
        """The ``go`` socket the server's loop watches while the launcher is made (-1:
        made)."""
        return self._making.go.fileno() if self._making is not None else -1

    def _remove_group(self) -> None:
        for directory in sorted(set(self.group_dirs.values())):
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    def stale(self) -> bool:
        """Whether the host's mount table changed since this launcher copied it (its
        namespace's, every launcher's: binds at launch come from there too), or a bound path
        of its view names another file now."""
        if self.mounts is not None and self.mounts.generation() != self.generation:
            return True
        return self.view is not None and _bound_sources(self.view) != self.sources

    def discard(self) -> tuple[str, ...]:
        """Let the launcher go (its init exits on the closed socket); the directories of its
        group, for the caller to remove once it has."""
        self._close()
        return tuple(sorted(set(self.group_dirs.values())))

    def _close(self) -> None:
        self.sock.close()
        if self._making is not None:
            self._making.close()
            self._making = None

    def _wait_ready(self) -> tuple[int, int, int] | None:
        """The outer's hello and the init's ``READY`` (in either order): (init pid, audit
        session, errno), or None if the launcher died first (preparing its view, say), or
        is not ready within ``READY_PATIENCE``: then it is killed, and the launch goes cold.
        Both processes get the session's priority back first: one still preparing must not
        keep the launch waiting at the refill's."""
        deadline = time.monotonic() + READY_PATIENCE
        if not self._finish(deadline):
            return None
        if self.nicer:
            self._restore(self.pid)
        hello = self.hello
        ready = False
        while hello is None or not ready:
            if not self._serve_guard(deadline) or not _readable_by(self.sock, deadline):
                self._stuck(deadline)
                return None
            data = self.sock.recv(WARM_HELLO.size)
            if data == READY:
                ready = True
            elif len(data) == WARM_HELLO.size:
                hello = WARM_HELLO.unpack(data)
                if self.nicer:
                    self._restore(hello[0])
            else:
                return None
        return hello

    def _serve_guard(self, deadline: float) -> bool:
        """Until the launcher says something, take what its init sends the hub: a direct
        init hands its view guard over before ``READY`` and waits for the hub's answers
        (``_launcher._adopt_ahead``), which the server's loop gives only once we are back
        there. False if the hub dropped it meanwhile (its guard is not set up), or at
        ``deadline``."""
        key = self.hub_key
        if key is None:
            return True
        if key.fileno() < 0:
            return False
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        poll.register(key, select.POLLIN)
        while key.fileno() >= 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                events = dict(poll.poll(math.ceil(left * 1000)))
            except InterruptedError:
                continue
            if self.sock.fileno() in events:
                return True
            if key.fileno() in events:
                self.hub.handle(key.fileno())
        return False

    def _stuck(self, deadline: float) -> None:
        """A launcher not ready by ``deadline`` (its view's preparation hangs: a path on a
        file system whose server stopped answering, say) is killed, not waited for: the
        fork server serves every session's launches and repairs, and must not wait with
        them on one launcher. Its init dies with its outer process (or is the process)."""
        if time.monotonic() >= deadline and _child_of_ours(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _restore(self, pid: int) -> None:
        os.setpriority(os.PRIO_PROCESS, pid, self.nice)

    def _into_session(self, plan: LaunchPlan, init_pid: int) -> bytes:
        """Make the init's group the session's: the limits written into its own group (it
        was born there; its record for the daemon returned), or, without one, the init
        moved into the session's groups."""
        if self.group and plan.cgroup_procs and plan.cgroup_limits is not None:
            apply_limits(self.group_dirs, plan.cgroup_limits)
            return record(REC_CGROUP, 0, 0, self.group.encode())
        join_cgroups(plan.cgroup_procs, init_pid)
        return b""

    def hand_over(self, msg: bytes, fds: list[int], plan: LaunchPlan) -> Cue | bool | None:
        """Give the plan to the waiting init: the launch's ``Cue``, or False if the init is
        not there any more. The init's group becomes the session's first (it forks the
        program afterwards, which is born there); if it cannot, the launch fails at step
        ``cgroup`` (None) and this launcher ends."""
        handed = False
        try:
            if self.c_init:
                flat = _cinit.launch_message(plan)
                if flat is None:
                    return False  # not for a C init: the launch goes the Python way
                msg = flat
            if self.stale():
                return False  # the host changed its mounts, or replaced a bound path, since
            hello = self._wait_ready()
            if hello is None:
                return False
            init_pid, ses, ses_err = hello
            if self.hub_key is not None and not self.hub.launched(self.hub_key, fds[4]):
                return False  # its guard is not with the hub (any more): not this launcher
            try:
                pending = self._into_session(plan, init_pid)
            except OSError as exc:
                os.write(fds[3], record(REC_ERROR, STEPS.index("cgroup"), exc.errno or 0,
                                        str(exc.filename or "").encode()[:500]))
                return None
            if self.audit_tag:
                pending += record(REC_AUDIT, ses, ses_err)
            pending += record(REC_PID, init_pid, 0)
            # The init writes them on the launch pipe just before the program starts (or
            # with its error); the pipe's end tells the daemon: no wake-up here on the way.
            socket.send_fds(self.sock, [PENDING.pack(len(pending)), pending, msg], fds)
            handed = True
            return Cue(self.sock)
        except OSError:
            return False
        finally:
            if not handed:
                self._close()


class _Making:
    """A C init being made (``_Warm._c_direct``): its helper's ``P`` + pid and the init's
    ``r`` still to come on ``go``, in either order."""

    def __init__(self, key: WarmKey, procs: tuple[str, ...], go: socket.socket,
                 poller: Poller | None) -> None:
        self.key, self.procs, self.go, self._poller = key, procs, go, poller
        self.pid = 0
        self.ready = False
        if poller is not None:
            poller.register(go, select.POLLIN)

    def close(self) -> None:
        """Stop watching ``go`` (before it is closed: ``_poller``) and close it."""
        if self._poller is not None and self.go.fileno() >= 0:
            self._poller.unregister(self.go)
        self.go.close()

    @property
    def done(self) -> bool:
        return bool(self.pid) and self.ready

    def take(self, word: bytes) -> bool:
        """One word from the helper or the init; False for anything else (an end)."""
        if word == b"r" and not self.ready:
            self.ready = True
            return True
        said = _cinit.init_pid(word)
        if said is None or self.pid:
            return False
        self.pid = said
        return True


def _close(*held: socket.socket | tuple[int, ...] | None) -> None:
    """Close sockets (closing one twice does nothing) and descriptors."""
    for item in held:
        if isinstance(item, socket.socket):
            item.close()
        elif item is not None:
            for fd in item:
                os.close(fd)


#: Seconds a launch waits for a warm launcher still preparing its view (normally a few
#: milliseconds) before it kills it and is made cold (``_Warm._stuck``).
READY_PATIENCE = 5.0


def _child_of_ours(pid: int) -> bool:
    """Whether ``pid`` is still a child of this process (not reaped, its number not taken
    by another process since)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2:].split()
    return len(fields) > 1 and fields[1] == str(os.getpid()).encode()


def _readable_by(sock: socket.socket, deadline: float) -> bool:
    """Whether ``sock`` has something to read (or its end) before ``deadline``."""
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            return bool(poll.poll(math.ceil(left * 1000)))
        except InterruptedError:
            continue


def _cold(msg_plan: LaunchPlan, fds: list[int], sock: socket.socket, hub: GuardHub,
          reaper: int = -1, trees: tuple[int, ...] = (), maps: _Maps | None = None
          ) -> Cue | None:
    """Fork a launcher that does every step (and reports its init's pid itself); return
    the launch's ``Cue``, or None if the fork failed (reported)."""
    client = hub.new_client(msg_plan.uid)
    cue, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # A launcher that becomes another user stays not dumpable (``_launcher._switch_user``):
    # its id maps are written from here (``_Maps``).
    pair = (socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            if msg_plan.switch_user and msg_plan.ns_flags & _libc.CLONE_NEWUSER else None)
    try:
        pid = os.fork()
    except OSError as exc:
        for end in (client, cue, theirs, *(pair or ())):
            end.close()
        os.write(fds[3], record(REC_ERROR, STEPS.index("fork"), exc.errno or 0, b"fork"))
        return None
    if pid == 0:
        sock.close()
        cue.close()
        go = -1
        if pair is not None:
            pair[0].close()
            go = pair[1].detach()
        try:
            run_outer(msg_plan, (fds[0], fds[1], fds[2], fds[3], fds[4], fds[5]),
                      client.detach(), reaper, trees, theirs.detach(), go)
        finally:
            os._exit(126)
    client.close()
    theirs.close()
    if pair is not None:
        pair[1].close()
        if maps is None:
            pair[0].close()  # (no loop to answer it: the launch fails at step ``idmap``)
        else:
            maps.add(pair[0], pid, msg_plan.uid, msg_plan.gid)
    return Cue(cue)


class _Maps:
    """Cold launchers that switch user, waiting for their id maps: each says ``r`` on its
    socket once it has its user namespace (``_launcher._mapped_by_server``), and the loop
    writes them when it sees the word (``g`` after them; ``e`` and the errno if they cannot
    be written: the launch then fails at step ``idmap``). Never waited for in place: until
    it speaks the launcher runs in its session's groups (slowed by the user's own limits),
    and its user holds every capability of the user namespace it has just made, ``CAP_KILL``
    among them (it can stop it there); the server serves every user. A launcher that ends
    first has reported why on the launch's pipe; its entry goes when its socket ends or it
    is reaped, so that no write ever names a pid used again."""

    def __init__(self, poller: Poller) -> None:
        self._poller = poller
        self._waiting: dict[int, tuple[socket.socket, int, int, int]] = {}

    @property
    def holds_nothing(self) -> bool:
        return not self._waiting

    def add(self, go: socket.socket, pid: int, uid: int, gid: int) -> None:
        self._poller.register(go, select.POLLIN)
        self._waiting[go.fileno()] = (go, pid, uid, gid)

    def handle(self, fd: int) -> bool:
        """Take the event on ``fd``: write the maps it asks for; False if ``fd`` is not one
        of ours."""
        entry = self._waiting.pop(fd, None)
        if entry is None:
            return False
        self._poller.unregister(fd)
        go, pid, uid, gid = entry
        try:
            if go.recv(1) == b"r":
                try:
                    map_ids(pid, uid, gid)
                except OSError as exc:
                    go.send(b"e" + (exc.errno or errno.EPERM).to_bytes(4, "little"))
                else:
                    go.send(b"g")
        except OSError:
            pass  # it ended meanwhile: reported on its launch's pipe
        finally:
            go.close()
        return True

    def reaped(self, pid: int) -> None:
        """``pid`` was reaped: its entry (if it still has one) goes without a write."""
        for fd, entry in list(self._waiting.items()):
            if entry[1] == pid:
                self._poller.unregister(fd)
                entry[0].close()
                del self._waiting[fd]


def _launch_plain(plan: LaunchPlan, msg: bytes, fds: list[int], ready: _Warm | None,
                  sock: socket.socket, hub: GuardHub, reaper: int,
                  maps: _Maps | None = None) -> Cue | bool | None:
    """Launch on ``ready`` (namespaces and root, no view), or cold; the idmapped trees of
    the plan are made here, root in the host's namespaces (a launcher has its own
    already)."""
    try:
        trees = tuple(idmapped_trees(plan.mounts))
    except OSError as exc:
        os.write(fds[3], record(REC_ERROR, STEPS.index("mounts"), exc.errno or 0,
                                f"idmap: {exc.filename or ''}".encode()[:500]))
        if ready is not None:
            ready.discard()
        return None
    try:
        cue = ready.hand_over(msg, [*fds, *trees], plan) if ready is not None else False
        return _cold(plan, fds, sock, hub, reaper, trees, maps) if cue is False else cue
    finally:
        for fd in trees:
            os.close(fd)


class Cue(NamedTuple):
    """A launch in flight: ``sock``, the server's end of a socket the init closes once the
    program runs (or by dying)."""

    sock: socket.socket


class _InFlight:
    """Launches between their hand-over and their program's start, by their ``Cue``. Warm
    launchers are made again only when none is in flight (or the oldest has taken
    ``PATIENCE``), unless the next launch would find none (``_Pool.refill_in``): on a 2-CPU
    machine their ~5 ms of CPU, and the server's own forks, would otherwise compete with
    the launch that follows, the guard hub's answer to its view guard included."""

    PATIENCE = 0.1  # seconds: a launch taking longer no longer holds the refill back

    def __init__(self, poller: Poller) -> None:
        self._poller = poller
        self._cues: dict[int, tuple[Cue, float]] = {}

    def add(self, cue: Cue) -> None:
        self._poller.register(cue.sock, select.POLLIN)
        self._cues[cue.sock.fileno()] = (cue, time.monotonic())

    @property
    def holds_nothing(self) -> bool:
        return not self._cues

    @property
    def count(self) -> int:
        """How many launches are in flight."""
        return len(self._cues)

    def ended(self, fd: int) -> bool:
        """Take the event on ``fd``: let the launch go; False if ``fd`` is not a cue's."""
        entry = self._cues.pop(fd, None)
        if entry is None:
            return False
        self._poller.unregister(fd)
        entry[0].sock.close()
        return True

    def wait_ms(self) -> int:
        """How long a refill must still wait (0: now). A launch past ``PATIENCE`` is
        forgotten."""
        now = time.monotonic()
        for fd, (_, since) in list(self._cues.items()):
            if now - since >= self.PATIENCE:
                self.ended(fd)
        if not self._cues:
            return 0
        oldest = min(since for _, since in self._cues.values())
        return max(1, math.ceil((oldest + self.PATIENCE - now) * 1000))


class _Pool:
    """The warm launchers, by key: those with a view (``_launcher.View``: root, binds, masks
    and Landlock ruleset of one policy, built ahead) and, as the fallback for a view nobody
    prepared, those with namespaces and an empty root only. At most ``MAX_VIEWS`` and
    ``MAX_WARM_KEYS`` keys, the least recently launched dropped first; keys idle for
    ``idle`` seconds are dropped."""

    def __init__(self, hub: GuardHub, reaper: int, idle: float = WARM_IDLE,
                 poller: Poller | None = None, spawns: bool = False) -> None:
        self._hub = hub
        self._poller = poller  # C inits are made without waiting (``_Warm._c_direct``)
        #: Whether C inits are made by a spawner (``_cinit.Spawner``): started for the
        #: first, ended once no view is kept (``tidy``: dropped after ``idle``).
        self._spawns = spawns
        self._spawner: _cinit.Spawner | None = None
        self._idle = idle
        self._reaper = reaper
        self._ready: dict[PoolKey, list[_Warm]] = {}
        self._recent: dict[PoolKey, View | None] = {}  # oldest first
        self._last: dict[PoolKey, float] = {}  # when each key was last launched
        self._hot: set[PoolKey] = set()  # views launched back to back: WARM_DEPTH
        self._busy: dict[PoolKey, float] = {}  # a view's last launch beside another one
        self._refill: list[PoolKey] = []
        self._groups: list[str] = []  # of dropped launchers, removed once empty
        self._mounts = MountTable()
        self._lender = Lender()  # our loginuid, for direct launchers with an audit tag
        self._configs = _cinit.Configs()  # the flat forms of views with a C init
        #: ``_cinit.covers`` by key and what else it reads (0.13 ms per launcher for the
        #: daemon's profile; what it checks of the view is in the key, the flat form made
        #: from it is kept by ``_configs`` as long).
        self._covered: dict[tuple[PoolKey, bool, bool], bool] = {}
        self.subtrees: tuple[tuple[str, str], ...] = ()  # the daemon's v1 subtrees

    @staticmethod
    def keys(plan: LaunchPlan) -> tuple[PoolKey | None, PoolKey | None, View | None]:
        """The plan's key with its view, its key without, and its view (Nones: launched
        cold). A plan with groups but no limits for them (a tool session's, nested in its
        agent's groups) launches cold: a warm launcher waits in a group beside the
        agent's."""
        nested = bool(plan.cgroup_procs) and plan.cgroup_limits is None
        if plan.switch_user or nested:
            return None, None, None
        warm: WarmKey = (plan.uid, plan.gid, plan.ns_flags, plan.audit_tag, plan.oom_score_adj)
        view = view_of(plan)
        viewed = (warm, msgspec.msgpack.encode(view)) if view is not None else None
        return viewed, (warm, b""), view

    def take(self, key: PoolKey | None) -> _Warm | None:
        waiting = self._ready.get(key, []) if key is not None else []
        return waiting.pop(0) if waiting else None  # the oldest: the likeliest to be done

    def want(self, key: PoolKey | None, view: View | None, inflight: int = 1) -> None:
        """Keep launchers ready for ``key`` (just launched, with ``inflight`` launches in
        flight, itself included): refilled when nothing is in flight (``serve``), or at
        once for a key left without any, or busy (``refill_in``)."""
        if key is None:
            return
        now = time.monotonic()
        if key[1] and now - self._last.get(key, now - HOT) < HOT:
            self._hot.add(key)
        else:
            self._hot.discard(key)  # launched again after a while: one launcher will do
        if key[1] and inflight > 1:
            self._busy[key] = now
        self._last[key] = now
        self._recent.pop(key, None)
        self._recent[key] = view
        same_kind = [k for k in self._recent if bool(k[1]) == bool(key[1])]
        most = MAX_VIEWS if key[1] else MAX_WARM_KEYS
        for old in same_kind[:max(0, len(same_kind) - most)]:
            self._drop(old)
        if key not in self._refill:
            self._refill.append(key)

    def _drop(self, key: PoolKey) -> None:
        for asked in [a for a in self._covered if a[0] == key]:
            del self._covered[asked]
        del self._recent[key]
        del self._last[key]
        self._hot.discard(key)
        self._busy.pop(key, None)
        if key in self._refill:
            self._refill.remove(key)
        for launcher in self._ready.pop(key, []):
            self._groups.extend(launcher.discard())

    def refill_in(self, inflight: _InFlight) -> int | None:
        """Milliseconds until the next refill may go (0: now; None: nothing to refill).
        It waits for the launches in flight (``_InFlight``) while its key still has a
        launcher waiting; a key with none left is refilled at once: its next launch would
        be made cold, which costs that launch more (an outer process, every step on its
        path) than a launcher prepared at ``WARM_NICE`` beside the launches in flight.
        With launches back to back from several clients one is nearly always in flight,
        and a refill that waited for none left every other launch cold (a fleet of 300
        from 2 clients: 45% cold; docs/benchmarks.md, ``fleet2``); so does a busy key's
        (``_busy``: launched beside another launch lately; at 4 in flight their launches
        come in bursts, and a refill that waited left 44% cold; ``fleet5``). One client's
        launches back to back (one in flight) still wait for it. Any such key to refill
        counts, not only the first: behind a key that could wait, a busy one waited too
        (review21)."""
        if not self._refill:
            return None
        return 0 if self._urgent() is not None else inflight.wait_ms()

    def _urgent(self) -> PoolKey | None:
        """The first key to refill that cannot wait for the launches in flight: none of its
        launchers left, or busy (``refill_in``)."""
        return next((key for key in self._refill
                     if not self._ready.get(key) or self._busy_now(key)), None)

    def _busy_now(self, key: PoolKey) -> bool:
        """Whether ``key`` was launched beside another launch within ``HOT``."""
        return time.monotonic() - self._busy.get(key, -HOT) < HOT

    def _depth(self, key: PoolKey) -> int:
        """Launchers kept for ``key``: one; ``WARM_DEPTH`` for a view launched back to back
        (``HOT``); ``BUSY_DEPTH`` for a busy one (``_busy_now``)."""
        if key not in self._hot:
            return 1
        return BUSY_DEPTH if self._busy_now(key) else WARM_DEPTH

    def refill_one(self) -> None:
        """Make one launcher for the first key that cannot wait (``_urgent``), else the
        first key; one still short of its depth then goes behind the others, so keys take
        turns. (The first key kept its place until it had its depth: one whose launches
        took each launcher as it was made, a busy view's, had every refill, and another
        view's launches found none: review21.)"""
        key = self._urgent() or self._refill[0]
        self._refill.remove(key)
        ready = self._ready.setdefault(key, [])
        depth = self._depth(key)
        if len(ready) < depth:
            try:
                view = self._recent.get(key)
                ready.append(self._make(key, view, self._config(key, view)))
            except OSError:
                depth = 0  # its view's idmapped trees, or the fork: launches go cold
        if len(ready) < depth:
            self._refill.append(key)

    def make_now(self, key: PoolKey | None, view: View | None) -> _Warm | None:
        """A launcher made for the launch at hand, which found none ready for its view
        ``key`` launched before: only a C init's (its spawn, namespaces and view are a few
        ms of CPU; a cold launch forks an interpreter, an outer process and a Python init,
        about three times as much, and a fleet bound by the CPU waits for it all the same:
        docs/benchmarks.md, ``fleet5``). None: the launch goes cold, as before."""
        if key is None or view is None or key not in self._recent:
            return None
        try:
            config = self._config(key, view)
            return self._make(key, view, config) if config >= 0 else None
        except OSError:
            return None

    def _config(self, key: PoolKey, view: View | None) -> int:
        """The sealed flat form of ``view`` if a C init covers it (``_cinit.covers``),
        else -1."""
        tag = key[0][3]
        lends = bool(tag) and self._lender.usable(tag)
        if view is None:
            return -1
        asked = (key, lends, self._hub.adopts)
        covered = self._covered.get(asked)
        if covered is None:
            covered = _cinit.covers(key[0], view, self._reaper, lends, self._hub.adopts)
            self._covered[asked] = covered
        return self._configs.fd(key[1], view) if covered else -1

    def _make(self, key: PoolKey, view: View | None, config: int) -> _Warm:
        return _Warm(key[0], self._hub, self.subtrees, self._reaper, view, self._mounts,
                     self._lender, config, self._poller, self._spawner_for(config))

    def _spawner_for(self, config: int) -> _cinit.Spawner | None:
        """The spawner, started now if a C init is to be made and none runs."""
        if config >= 0 and self._spawns and self._spawner is None:
            try:
                self._spawner = _cinit.Spawner(self._reaper)
            except OSError:
                self._spawns = False  # each launcher spawns its own helper
        return self._spawner

    def made(self, fd: int) -> bool:
        """Take the event on ``fd`` if it is the ``go`` socket of a launcher being made
        (``_Warm.made``): one whose helper or init ended first is dropped. False if ``fd``
        is no such socket."""
        for ready in self._ready.values():
            for launcher in ready:
                if launcher.go_fd != fd:
                    continue
                if launcher.made() is False:
                    ready.remove(launcher)
                    self._groups.extend(launcher.discard())
                return True
        return False

    @property
    def holds_nothing(self) -> bool:
        """No launcher waits, and no group of a dropped one is left to remove."""
        return not any(self._ready.values()) and not self._groups

    def tidy(self) -> None:
        """Drop the launchers of every kind not launched for ``idle`` seconds (a view's, and
        the plain ones too: an idle daemon keeps none, and its next launch is made cold,
        then the pool again), and every launcher made before the host's mount table changed
        (its copy would keep a file system the host unmounted, a volume it locked, alive and
        visible; the next launch makes them again); remove the groups of dropped launchers
        that have ended."""
        now = time.monotonic()
        for key in [k for k, last in self._last.items() if now - last > self._idle]:
            self._drop(key)
        generation = self._mounts.generation()
        for ready in self._ready.values():
            for launcher in [w for w in ready if w.generation != generation]:
                ready.remove(launcher)
                self._groups.extend(launcher.discard())
        left: list[str] = []
        for directory in self._groups:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(directory)  # its launcher is still exiting
        self._groups = left
        if self._spawner is not None and not any(key[1] for key in self._recent):
            self._spawner.close()  # no view kept: it ends on its socket's end, reaped
            self._spawner = None


def _first_word(go: socket.socket, pid: int) -> bytes:
    """What the direct init ``pid`` says first on ``go``, or b"" if it ends without a word.
    Its end of ``go`` stays open in our low slot until then (``_lowfds``), so the init's
    death alone is no end of file here: its pidfd says it."""
    pidfd = os.pidfd_open(pid)
    try:
        poll = select.poll()
        poll.register(go, select.POLLIN)
        poll.register(pidfd, select.POLLIN)
        ready = {fd for fd, _ in poll.poll()}
        return go.recv(1) if go.fileno() in ready else b""
    finally:
        os.close(pidfd)


#: The low descriptor numbers direct inits take their descriptors in (``_lowfds``): made
#: when ``serve`` starts; None (the whole table copied) in a process that is no fork server.
_slots: LowSlots | None = None


@contextlib.contextmanager
def _lent(fds: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], int]]:
    """``LowSlots.lend`` of the server's slots; ``((), 0)`` without them."""
    if _slots is None:
        yield (), 0
        return
    with _slots.lend(fds) as lent:
        yield lent


def serve(sock: socket.socket, *, warm: bool = True, reaper: int | None = None,
          warm_idle: float = WARM_IDLE) -> None:
    """Serve launch requests on ``sock`` until the daemon closes it. ``reaper``: the memfd
    every session's init becomes once its program runs (``_reaper``); None loads it, -1
    keeps the Python init. ``warm_idle``: see ``_Pool``."""
    global _slots
    _slots = LowSlots()  # first: below every descriptor a session adds
    if reaper is None:
        reaper = _reaper.load()
    # A session's init outlives its outer launcher (``_launcher.hands_over``): it is reparented
    # here, not to the host's init, and reaped here.
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    _raise_nofile()
    _libc.cap_last()  # read here once, for every launcher (a constant of the kernel)
    decoder = _launcher.PLAN_DECODER
    poller = EPoller()  # not select.poll: its cost grew with the sessions' descriptors
    poller.register(sock, select.POLLIN)
    hub = GuardHub(poller, reaper)
    exited = _wake_on_exits(poller)
    pool = _Pool(hub, reaper, warm_idle, poller, reaper >= 0 and not _cinit.forced_python())
    inflight = _InFlight(poller)
    maps = _Maps(poller)
    trimmer = _malloc.TrimAfterBursts()  # its free heap back once a burst of work is over
    # a fresh start once it carries nothing (``_renewal``), which loads the reaper again
    renewal = _renewal.Renewal(files=(os.environ.get(_reaper.OVERRIDE) or str(_reaper.BINARY),))
    while True:
        refill = pool.refill_in(inflight)
        events = poller.poll(refill if refill is not None else SPARE_DELAY_MS
                             if hub.wants_spare() else REAP_INTERVAL_MS)
        if not events:
            hub.idle()
        launch_waiting = False
        # Reaped when a child has exited (SIGCHLD) and at every quiet spell: each
        # ``waitpid(-1)`` looks at every child, every live session's init among them.
        reap = not events
        for fd, _ in events:
            if fd == sock.fileno():
                launch_waiting = True
            elif fd == exited:
                _drain(exited)  # a child exited: reaped below
                reap = True
            elif not inflight.ended(fd) and not pool.made(fd) and not maps.handle(fd):
                hub.handle(fd)
        if reap:
            _reap(hub, maps)
        if not launch_waiting:
            # No launch waiting: reap ended launchers; once no launch is in flight (or the
            # next launch would find no launcher at all), prepare one warm launcher, then
            # look again for launches before the next.
            pool.tidy()
            trimmer.tick()
            if renewal.due(pool.holds_nothing and hub.holds_nothing and inflight.holds_nothing
                           and maps.holds_nothing):
                _renewal.renew(sock.fileno(), _launcher.INHERITED_NOFILE)
            if pool.refill_in(inflight) == 0:
                pool.refill_one()
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_PLAN, FDS_PER_PLAN)
        except InterruptedError:
            continue
        if not msg:
            return  # the daemon closed its end
        if len(fds) != FDS_PER_PLAN:
            for fd in fds:
                os.close(fd)
            continue
        try:
            plan = decoder.decode(msg)
        except msgspec.DecodeError as exc:
            os.write(fds[3], record(REC_ERROR, STEPS.index("fork"), errno.EINVAL,
                                    str(exc).encode()[:500]))
            for fd in fds:
                os.close(fd)
            continue
        pool.subtrees = plan.cgroup_pool
        viewed, plain, view = _Pool.keys(plan)
        # its view built: only the program's own steps remain (or built now, in C)
        ready = pool.take(viewed) or (pool.make_now(viewed, view) if warm else None)
        cue = ready.hand_over(msg, fds, plan) if ready is not None else False
        if cue is False:
            cue = _launch_plain(plan, msg, fds, pool.take(plain), sock, hub, reaper, maps)
        if isinstance(cue, Cue):
            inflight.add(cue)
        for fd in fds:
            os.close(fd)
        # Let go of the plan before the next launchers are forked: each would start with a
        # copy of the program's environment (its real secrets), not locked out of swap.
        del msg, plan
        if warm:  # the next launches like this one skip namespaces, root and view
            pool.want(viewed, view, inflight.count)
            pool.want(plain, None)


def _keep_heap_lean() -> None:
    """Idle memory: large buffers mapped on their own, always, never carved from the heap.

    With glibc's moving threshold (``nonod._malloc``), the heap of a fork server that served
    a few hundred launches grew by about 0.8 MiB per 250 of free but unreturned pages, and
    every warm launcher forked afterwards started with a copy of them (docs/benchmarks.md,
    ``idle3``). Pinned, it stays the size it has after the imports."""
    _malloc.fix_mmap_threshold()


def main(warm_idle: float = WARM_IDLE) -> None:
    fd, parent = int(sys.argv[-2]), int(sys.argv[-1])
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    _libc.forbid_core_dumps()
    _libc.keep_out_of_swap()  # launch plans hold the sessions' environments
    if os.getppid() != parent:
        sys.exit(1)  # the daemon died before we could tie our life to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the daemon's business
    sock = socket.socket(fileno=fd)
    _keep_heap_lean()
    # Every object made so far (the imports: most of this process) goes to the collector's
    # permanent generation, so that a collection in a forked launcher does not write to
    # their headers and copy the pages they share with us.
    gc.freeze()
    serve(sock, warm_idle=warm_idle)


if __name__ == "__main__":
    main()
