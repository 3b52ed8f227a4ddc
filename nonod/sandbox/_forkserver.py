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
import secrets
import select
import signal
import socket
import sys
import time

import msgspec

from ..cgroups._v1 import apply_limits
from . import _libc, _reaper
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


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


MAX_WARM_KEYS = 4
# Launchers kept ready per key. One is not enough for launches that come back to back: the
# next would find its launcher still building its namespaces and root (about 2 ms).
WARM_DEPTH = 2
REAP_INTERVAL_MS = 1000  # ended launchers are reaped at least this often
WarmKey = tuple[int, int, int, int, int]  # uid, gid, namespaces, audit tag, oom_score_adj


def _pool_group(pool: tuple[tuple[str, str], ...]) -> tuple[str, dict[str, str]]:
    """A group for one warm launcher in every v1 hierarchy of ``pool``: its name and its
    directories by controller (none if it cannot be made: the launcher is then moved into
    the session's groups at launch, as a cold one joins them)."""
    if not pool:
        return "", {}
    name = f"warm-{secrets.token_hex(6)}"
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

    def _into_session(self, plan: LaunchPlan, init_pid: int, launch_w: int) -> None:
        """Make the init's group the session's: the limits written into its own group (it
        was born there), or, without one, the init moved into the session's groups."""
        if self.group and plan.cgroup_procs and plan.cgroup_limits is not None:
            apply_limits(self.group_dirs, plan.cgroup_limits)
            os.write(launch_w, record(REC_CGROUP, 0, 0, self.group.encode()))
        else:
            join_cgroups(plan.cgroup_procs, init_pid)

    def hand_over(self, msg: bytes, fds: list[int], plan: LaunchPlan
                  ) -> socket.socket | bool | None:
        """Give the plan to the waiting init: its socket (which the init closes once the
        program runs, the server's cue), or False if it is not there any more. The init's
        group becomes the session's first (it forks the program afterwards, which is born
        there); if it cannot, the launch fails at step ``cgroup`` (None) and this launcher
        ends."""
        handed = False
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
                return None
            if self.audit_tag:
                os.write(fds[3], record(REC_AUDIT, ses, ses_err))
            os.write(fds[3], record(REC_PID, init_pid, 0))
            socket.send_fds(self.sock, [msg], fds)
            handed = True
            return self.sock
        except OSError:
            return False
        finally:
            if not handed:
                self.sock.close()


def _cold(msg_plan: LaunchPlan, fds: list[int], sock: socket.socket, hub: GuardHub,
          reaper: int = -1, trees: tuple[int, ...] = ()) -> socket.socket | None:
    """Fork a launcher that does every step; return the server's cue (see
    ``hand_over``), or None if the fork failed (reported)."""
    client = hub.new_client()
    cue, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError as exc:
        for end in (client, cue, theirs):
            end.close()
        os.write(fds[3], record(REC_ERROR, STEPS.index("fork"), exc.errno or 0, b"fork"))
        return None
    if pid == 0:
        sock.close()
        cue.close()
        try:
            run_outer(msg_plan, (fds[0], fds[1], fds[2], fds[3], fds[4], fds[5]),
                      client.detach(), reaper, trees, theirs.detach())
        finally:
            os._exit(126)
    client.close()
    theirs.close()
    return cue


class _InFlight:
    """Launches between their hand-over and their program's start, by their cue (the
    server's end of a socket the init closes once the program runs). Warm launchers are
    made again only when none is in flight (or the oldest has taken ``PATIENCE``): on a
    2-CPU machine their ~5 ms of CPU, and the server's own forks, would otherwise compete
    with the launch that follows, the guard hub's answer to its view guard included."""

    PATIENCE = 0.1  # seconds: a launch taking longer no longer holds the refill back

    def __init__(self, poller: select.poll) -> None:
        self._poller = poller
        self._cues: dict[int, tuple[socket.socket, float]] = {}

    def add(self, cue: socket.socket) -> None:
        self._poller.register(cue, select.POLLIN)
        self._cues[cue.fileno()] = (cue, time.monotonic())

    def ended(self, fd: int) -> bool:
        """Take the event on ``fd``; False if it is not a cue."""
        entry = self._cues.pop(fd, None)
        if entry is None:
            return False
        self._poller.unregister(fd)
        entry[0].close()
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


def serve(sock: socket.socket, *, warm: bool = True, reaper: int | None = None) -> None:
    """Serve launch requests on ``sock`` until the daemon closes it. ``reaper``: the memfd
    every session's init becomes once its program runs (``_reaper``); None loads it, -1
    keeps the Python init."""
    if reaper is None:
        reaper = _reaper.load()
    decoder = msgspec.msgpack.Decoder(LaunchPlan)
    pool: dict[WarmKey, list[_Warm]] = {}
    refill: list[WarmKey] = []
    subtrees: tuple[tuple[str, str], ...] = ()  # the daemon's v1 subtrees (its last plan)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    hub = GuardHub(poller)
    inflight = _InFlight(poller)
    while True:
        events = poller.poll(inflight.wait_ms() if refill else REAP_INTERVAL_MS)
        launch_waiting = False
        for fd, _ in events:
            if fd == sock.fileno():
                launch_waiting = True
            elif not inflight.ended(fd):
                hub.handle(fd)
        if not launch_waiting:
            # No launch waiting: reap ended launchers; once no launch is in flight, prepare
            # one warm launcher, then look again for launches before the next.
            _reap()
            if refill and not inflight.wait_ms():
                ready_ones = pool.setdefault(refill[0], [])
                if len(ready_ones) < WARM_DEPTH:
                    ready_ones.append(_Warm(refill[0], hub, subtrees, reaper))
                if len(ready_ones) >= WARM_DEPTH:
                    refill.pop(0)
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_PLAN, FDS_PER_PLAN)
        except InterruptedError:
            continue
        _reap()
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
        waiting = pool.get(key, []) if key is not None else []
        ready = waiting.pop(0) if waiting else None  # the oldest: the likeliest to be done
        cue = ready.hand_over(msg, [*fds, *trees], plan) if ready is not None else False
        if cue is False:
            cue = _cold(plan, fds, sock, hub, reaper, trees)
        if isinstance(cue, socket.socket):
            inflight.add(cue)
        for fd in (*fds, *trees):
            os.close(fd)
        if (warm and key is not None and key not in refill
                and (key in pool or len(pool) < MAX_WARM_KEYS)):
            refill.append(key)  # the next launches like this one skip namespace set-up


def main() -> None:
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
    serve(sock)


if __name__ == "__main__":
    main()
