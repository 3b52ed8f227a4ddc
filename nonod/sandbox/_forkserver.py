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
import os
import resource
import select
import signal
import socket
import sys
import time

import msgspec

from ..cgroups._v1 import apply_limits
from . import _launcher, _libc, _reaper
from ._guardhub import GuardHub
from ._launcher import (
    FDS_PER_PLAN,
    REC_AUDIT,
    REC_CGROUP,
    REC_ERROR,
    REC_PID,
    STEPS,
    WARM_HELLO,
    LaunchPlan,
    join_cgroups,
    record,
    run_outer,
    run_warm,
)
from ._mounts import idmapped_trees

MAX_PLAN = 1 << 20


def _reap(hub: GuardHub) -> None:
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


def _wake_on_exits(poller: select.poll) -> int:
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


MAX_WARM_KEYS = 4
# Launchers kept ready per key. One is not enough for launches that come back to back: the
# next would find its launcher still building its namespaces and root (about 2 ms).
WARM_DEPTH = 2
# Once no launch of a key came for this long, one launcher is kept for it (``_IdleShrink``):
# the daemon's ``[sandbox] warm_idle``.
WARM_IDLE = 30.0
REFILL_DELAY_MS = 0  # refill as soon as no launch is waiting to be read
REAP_INTERVAL_MS = 1000  # ended launchers are reaped at least this often
SPARE_DELAY_MS = 5  # the hub's next spare repair, once nothing has happened for this long
WarmKey = tuple[int, int, int, int, int]  # uid, gid, namespaces, audit tag, oom_score_adj


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

    def __init__(self, key: WarmKey, hub: GuardHub, pool: tuple[tuple[str, str], ...] = (),
                 reaper: int = -1) -> None:
        self.group, self.group_dirs = _pool_group(pool)
        procs = tuple(sorted({os.path.join(d, "cgroup.procs") for d in self.group_dirs.values()}))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_PLAN)  # a plan is one datagram
        client = hub.new_client()
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                run_warm(key[0], key[1], key[2], theirs.detach(), key[3], client.detach(),
                         key[4], procs, reaper)
            finally:
                os._exit(126)
        theirs.close()
        client.close()
        self.sock = ours
        self.audit_tag = key[3]

    def end(self) -> None:
        """End this launcher unused: its init reads the end of the socket and exits, and so
        does the outer process then (the server reaps it). Its group is left to remove."""
        self.sock.close()

    def _into_session(self, plan: LaunchPlan, init_pid: int, launch_w: int) -> None:
        """Make the init's group the session's: the limits written into its own group (it
        was born there), or, without one, the init moved into the session's groups."""
        if self.group and plan.cgroup_procs and plan.cgroup_limits is not None:
            apply_limits(self.group_dirs, plan.cgroup_limits)
            os.write(launch_w, record(REC_CGROUP, 0, 0, self.group.encode()))
        else:
            join_cgroups(plan.cgroup_procs, init_pid)

    def hand_over(self, msg: bytes, fds: list[int], plan: LaunchPlan) -> bool:
        """Give the plan to the waiting init; False if it is not there any more. The init's
        group becomes the session's first (it forks the program afterwards, which is born
        there); if it cannot, the launch fails at step ``cgroup`` and this launcher ends."""
        try:
            data = self.sock.recv(WARM_HELLO.size)
            if len(data) != WARM_HELLO.size:
                return False
            init_pid, ses, ses_err = WARM_HELLO.unpack(data)
            try:
                self._into_session(plan, init_pid, fds[3])
            except OSError as exc:
                os.write(fds[3], record(REC_ERROR, STEPS.index("cgroup"), exc.errno or 0,
                                        str(exc.filename or "").encode()[:500]))
                return True
            if self.audit_tag:
                os.write(fds[3], record(REC_AUDIT, ses, ses_err))
            os.write(fds[3], record(REC_PID, init_pid, 0))
            socket.send_fds(self.sock, [msg], fds)
            return True
        except OSError:
            return False
        finally:
            self.sock.close()


def _cold(msg_plan: LaunchPlan, fds: list[int], sock: socket.socket, hub: GuardHub,
          reaper: int = -1, trees: tuple[int, ...] = ()) -> None:
    client = hub.new_client()
    try:
        pid = os.fork()
    except OSError as exc:
        client.close()
        os.write(fds[3], record(REC_ERROR, STEPS.index("fork"), exc.errno or 0, b"fork"))
        return
    if pid == 0:
        sock.close()
        try:
            run_outer(msg_plan, (fds[0], fds[1], fds[2], fds[3], fds[4], fds[5]),
                      client.detach(), reaper, trees)
        finally:
            os._exit(126)
    client.close()


class _IdleShrink:
    """Fewer warm launchers at idle: once no launch of a key came for ``after`` seconds, its
    launchers but the oldest are ended (two Python processes each, about 1 MiB of their own
    apiece). A launch of the key refills its pool to ``WARM_DEPTH`` as before."""

    def __init__(self, after: float) -> None:
        self._after = after
        self._last: dict[WarmKey, float] = {}
        self._groups: list[str] = []  # the groups of ended launchers, removed once empty

    def launched(self, key: WarmKey) -> None:
        self._last[key] = time.monotonic()

    def shrink(self, pool: dict[WarmKey, list[_Warm]]) -> None:
        now = time.monotonic()
        # Only pooled keys are remembered: a key that launches cold (beyond MAX_WARM_KEYS) is
        # forgotten here, and a key about to be pooled starts its wait when it is.
        self._last = {key: last for key, last in self._last.items() if key in pool}
        for key, ready in pool.items():
            if len(ready) > 1 and now - self._last.setdefault(key, now) >= self._after:
                for extra in ready[1:]:
                    extra.end()
                    self._groups.extend(sorted(set(extra.group_dirs.values())))
                del ready[1:]
        self._groups = [d for d in self._groups if not _removed(d)]


def _removed(directory: str) -> bool:
    """rmdir ``directory``; False while its processes have not all exited."""
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError as exc:
        return exc.errno != errno.EBUSY
    return True


def serve(sock: socket.socket, *, warm: bool = True, reaper: int | None = None,
          warm_idle: float = WARM_IDLE) -> None:
    """Serve launch requests on ``sock`` until the daemon closes it. ``reaper``: the memfd
    every session's init becomes once its program runs (``_reaper``); None loads it, -1
    keeps the Python init. ``warm_idle``: see ``_IdleShrink``."""
    if reaper is None:
        reaper = _reaper.load()
    # A session's init outlives its outer launcher (``_launcher.hands_over``): it is reparented
    # here, not to the host's init, and reaped here.
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
    _raise_nofile()
    decoder = msgspec.msgpack.Decoder(LaunchPlan)
    pool: dict[WarmKey, list[_Warm]] = {}
    refill: list[WarmKey] = []
    subtrees: tuple[tuple[str, str], ...] = ()  # the daemon's v1 subtrees (its last plan)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    hub = GuardHub(poller, reaper)
    exited = _wake_on_exits(poller)
    idle = _IdleShrink(warm_idle)
    while True:
        events = poller.poll(REFILL_DELAY_MS if refill else SPARE_DELAY_MS if hub.wants_spare()
                             else REAP_INTERVAL_MS)
        if not events:
            hub.idle()
        launch_waiting = False
        for fd, _ in events:
            if fd == sock.fileno():
                launch_waiting = True
            elif fd == exited:
                _drain(exited)  # a child exited: reaped below
            else:
                hub.handle(fd)
        if not launch_waiting:
            # No launch waiting: reap ended launchers, prepare the next warm ones.
            _reap(hub)
            idle.shrink(pool)
            for wanted in refill:
                ready_ones = pool.setdefault(wanted, [])
                while len(ready_ones) < WARM_DEPTH:
                    ready_ones.append(_Warm(wanted, hub, subtrees, reaper))
            refill.clear()
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_PLAN, FDS_PER_PLAN)
        except InterruptedError:
            continue
        _reap(hub)
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
        try:  # made here, root in the host's namespaces: a launcher has its own already
            trees = tuple(idmapped_trees(plan.mounts))
        except OSError as exc:
            os.write(fds[3], record(REC_ERROR, STEPS.index("mounts"), exc.errno or 0,
                                    f"idmap: {exc.filename or ''}".encode()[:500]))
            for fd in fds:
                os.close(fd)
            continue
        subtrees = plan.cgroup_pool
        # A plan with groups but no limits for them (a tool session's, nested in its agent's
        # groups) launches cold: a warm launcher waits in a group beside the agent's.
        nested = bool(plan.cgroup_procs) and plan.cgroup_limits is None
        key: WarmKey | None = (None if plan.switch_user or nested
                               else (plan.uid, plan.gid, plan.ns_flags, plan.audit_tag,
                                     plan.oom_score_adj))
        if key is not None:
            idle.launched(key)
        waiting = pool.get(key, []) if key is not None else []
        ready = waiting.pop(0) if waiting else None  # the oldest: the likeliest to be done
        if ready is None or not ready.hand_over(msg, [*fds, *trees], plan):
            _cold(plan, fds, sock, hub, reaper, trees)
        for fd in (*fds, *trees):
            os.close(fd)
        if (warm and key is not None and key not in refill
                and (key in pool or len(pool) < MAX_WARM_KEYS)):
            refill.append(key)  # the next launches like this one skip namespace set-up


def main(warm_idle: float = WARM_IDLE) -> None:
    fd, parent = int(sys.argv[-2]), int(sys.argv[-1])
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    _libc.forbid_core_dumps()
    if os.getppid() != parent:
        sys.exit(1)  # the daemon died before we could tie our life to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the daemon's business
    sock = socket.socket(fileno=fd)
    # Every object made so far (the imports: most of this process) goes to the collector's
    # permanent generation, so that a collection in a forked launcher does not write to
    # their headers and copy the pages they share with us.
    gc.freeze()
    serve(sock, warm_idle=warm_idle)


if __name__ == "__main__":
    main()
