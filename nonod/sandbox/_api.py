"""Async face of the engine: a fork-server handle that launches confined processes."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, final

import msgspec
import trio

from .. import _callerfs, _descriptors
from ..errors import LaunchBusy, LaunchError
from ..policy import ResolvedPolicy
from . import _reaper
from ._cinit import FORCE_PYTHON
from ._forkserver import WARM_IDLE
from ._launcher import (
    GUARD_LOST,
    MAX_PLAN,
    REC_AUDIT,
    REC_CGROUP,
    REC_ERROR,
    REC_EXIT,
    REC_GUARD,
    REC_PID,
    RECORD,
    STEPS,
    LaunchPlan,
)
from ._mode import ModeSetting, resolve_mode
from ._mounts import ANCHOR, MASK_DIR, MASK_FILE, PIN, READONLY
from ._plan import NS_FLAGS, build_plan
from ._types import EnforcementReport, ExitStatus, LaunchRequest

LAUNCH_TIMEOUT = 30.0
#: How long a launch's plan may take to make (its walks of the grants included).
PLAN_TIMEOUT = 30.0
#: How long a launch given up on after ``LAUNCH_TIMEOUT`` is still waited for, to end what
#: its launcher started late (``_end_abandoned``).
ABANDONED_PATIENCE = 600.0
#: Launches given up on and still waited for (each holds its launch pipe, exit pipe and
#: control socket for up to ``ABANDONED_PATIENCE``) that one uid may have, and all uids
#: together: past either, that uid's launches (past the second, everyone's) are refused at
#: once (``daemon.busy``) until some end.
ABANDONED_PER_UID = 4
ABANDONED_IN_ALL = 64
#: How long the session's init is waited for to have exited once it reported the program's
#: exit (``Sandboxed.wait_exited``): it writes the record and then exits, and only its exit
#: ends the rest of its pid namespace.
EXIT_SETTLE = 5.0
_HINTS = {
    "unshare": "unprivileged user namespaces may be disabled (sysctl "
               "kernel.unprivileged_userns_clone, AppArmor's userns restriction, a container's "
               "seccomp profile); `nonoctl doctor` checks",
    "idmap": "the kernel refused the uid/gid map of the session's user namespace",
    "mounts": "a path in the policy could not be mounted in the session's view (a writable "
              "cache the kernel cannot overlay: \"nonod\": {\"shared_caches\": [...]} opts "
              "it out, docs/sandbox.md)",
    "exec": "the program could not be started inside the session",
    "createguard": "the guard that keeps absent persistence files from being created could "
                   "not be set up (docs/sandbox.md, \"The creation guard\"); a profile can "
                   "opt a path out with \"nonod\": {\"writable_persistence\": [...]}",
}


_GUARDED_KINDS = {PIN: "pin", MASK_DIR: "mask", MASK_FILE: "mask", READONLY: "read_only",
                  ANCHOR: "anchor"}


@dataclass(frozen=True)
class GuardReport:
    """The view guard (``_viewguard``) acted while the session ran: ``restored`` a pin, mask
    or read-only bind over ``path`` after the host replaced what was there, or ``lost`` it
    (the session is being ended; ``detail`` says why)."""

    action: Literal["restored", "lost"]
    path: str
    what: str = ""
    detail: str = ""


def _guard_report(a: int, b: int, detail: bytes) -> GuardReport:
    path, _, why = detail.decode("utf-8", "replace").partition("\0")
    if b == GUARD_LOST:
        return GuardReport("lost", path, detail=why)
    return GuardReport("restored", path, what=_GUARDED_KINDS.get(a, "mount"))


async def _read_records(stream: trio.lowlevel.FdStream, *, until: int = 0,
                        each: Callable[[int, int, int, bytes], None] | None = None,
                        ) -> list[tuple[int, int, int, bytes]]:
    """Read records until EOF, or until a record of kind ``until`` has arrived; ``each``
    sees every record as it arrives."""
    buf = b""
    out: list[tuple[int, int, int, bytes]] = []
    while True:
        while len(buf) >= RECORD.size:
            kind, a, b, n = RECORD.unpack_from(buf)
            if len(buf) < RECORD.size + n:
                break
            out.append((kind, a, b, buf[RECORD.size:RECORD.size + n]))
            if each is not None:
                each(*out[-1])
            buf = buf[RECORD.size + n:]
            if kind == until:
                return out
        chunk = await stream.receive_some(65536)
        if not chunk:
            return out
        buf += chunk


@final
class Sandboxed:
    """A running confined program. ``pid`` is its pid in the daemon's pid namespace."""

    def __init__(self, pid: int, pidfd: int, enforcement: EnforcementReport,
                 exit_stream: trio.lowlevel.FdStream, control: trio.socket.SocketType,
                 proxy_listener: socket.socket | None, *, audit_session: int = 0,
                 audit_session_error: int = 0) -> None:
        self.pid = pid
        self.enforcement = enforcement
        #: The kernel audit session id of the session's processes (``ses=`` in audit records)
        #: when the request had an ``audit_tag`` and the kernel took it; else 0, and
        #: ``audit_session_error`` holds the errno if it was refused.
        self.audit_session = audit_session
        self.audit_session_error = audit_session_error
        #: The listening socket inside the session's network namespace (127.0.0.1), for the
        #: daemon's proxy to serve; None when the network is unrestricted or blocked.
        self.proxy_listener = proxy_listener
        self.proxy_port = proxy_listener.getsockname()[1] if proxy_listener else 0
        self._pidfd = pidfd
        self._exit_stream = exit_stream
        self._control = control
        self._control_lock = trio.Lock()
        self._status: ExitStatus | None = None
        self._done = trio.Event()
        self._waiting = False
        #: The group (name) a warm launcher's init waited in and the session now runs in
        #: (the fork server wrote its limits there); "": the one the plan named.
        self.cgroup = ""
        #: Called with each :class:`GuardReport` while :meth:`wait_exited` runs.
        self.on_guard: Callable[[GuardReport], None] | None = None

    def _record(self, kind: int, a: int, b: int, detail: bytes) -> None:
        if kind == REC_GUARD and self.on_guard is not None:
            self.on_guard(_guard_report(a, b, detail))

    async def wait_exited(self) -> ExitStatus:
        if self._waiting:
            await self._done.wait()
            if self._status is None:
                raise RuntimeError("exit status missing after the exit event")
            return self._status
        self._waiting = True
        try:
            records = await _read_records(self._exit_stream, until=REC_EXIT, each=self._record)
        except BaseException:
            self._waiting = False  # cancelled: a later call reads on (records are tiny)
            raise
        await self._exit_stream.aclose()
        status = ExitStatus(signal=signal.SIGKILL)  # the launcher was killed: so was the program
        for kind, a, b, _ in records:
            if kind == REC_EXIT:
                status = ExitStatus(signal=b) if a < 0 else ExitStatus(code=a)
        if self._pidfd >= 0:
            # The init writes the record, then exits; in a pid namespace the kernel ends every
            # other process of it (a daemonized grandchild) before the init's exit completes,
            # which is when its pidfd turns readable. Without the wait, what the program left
            # could still run when the exit was reported (and the session's end followed).
            # Bounded (a process stuck in an uninterruptible wait holds the namespace's end);
            # shielded, as the record is already consumed.
            with trio.CancelScope(shield=True), trio.move_on_after(EXIT_SETTLE):
                await trio.lowlevel.wait_readable(self._pidfd)
        self._status = status
        self._control.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        self._done.set()
        return status

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._status

    def send_signal(self, sig: int) -> bool:
        """Signal the program (through its init); False once it has exited: nothing sent."""
        if self._pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def connect_inside(self, port: int) -> trio.SocketStream:
        """A TCP connection to 127.0.0.1:``port`` inside the session's network namespace,
        opened by the session's init (the daemon cannot enter the namespace itself)."""
        async with self._control_lock:
            await self._control.send(b"C" + struct.pack("<H", port))
            msg, ancdata, _, _ = await self._control.recvmsg(16, socket.CMSG_SPACE(4))
        fds = _fds_from(ancdata)
        if msg[:1] == b"K" and len(fds) == 1:
            return trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=fds[0])))
        for fd in fds:
            os.close(fd)
        err = struct.unpack("<i", msg[1:5])[0] if msg[:1] == b"E" and len(msg) >= 5 else 0
        if not msg:
            raise ConnectionError("the session has ended")
        raise OSError(err, os.strerror(err) if err else "connection inside the session failed")


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    import array

    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - (len(data) % arr.itemsize)])
            fds.extend(arr)
    return fds


@final
class Launcher:
    """Handle on the fork server: a single-threaded helper that forks launchers."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: trio.socket.SocketType,
                 mode: str = "namespaces") -> None:
        self._mode = mode
        self._proc = proc
        self._sock = sock
        self._send_lock = trio.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        #: Launches given up on whose launchers are still waited for, per uid.
        self._abandoned: Counter[int] = Counter()
        #: Each uid's places (``_take_place``), while one is taken or waited for.
        self._places: dict[int, trio.CapacityLimiter] = {}

    async def launch(
        self,
        policy: ResolvedPolicy,
        request: LaunchRequest,
        *,
        stdio: tuple[int, int, int] = (0, 1, 2),
        controlling_tty: bool = False,
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> Sandboxed:
        """Start ``request.argv`` confined by ``policy``; raise LaunchError if it cannot be.

        ``gate``, if given, is awaited once the plan is built and before anything of the
        launch starts (the fork server has not heard of it yet): what it raises refuses the
        launch. The daemon's gate is its audit record's fsync, which runs meanwhile."""
        # In a worker thread: the plan walks the writable grants for hard-linked files
        # (``_linkscan``, up to about a second on a node_modules-sized tree), which must not
        # hold up every other session's tasks. One of the session's user's own threads
        # (``_callerfs``), within a bound: a walk stuck in that user's file system (a FUSE
        # server that never answers) held one of the daemon's shared threads for good, and
        # a few such launches held them all, and every user's work done in threads.
        uid = os.geteuid() if request.uid is None else request.uid
        self._refuse_past_abandoned(uid)
        with trio.move_on_after(PLAN_TIMEOUT) as waited:
            plan, report = await trio.to_thread.run_sync(
                functools.partial(build_plan, policy, request, controlling_tty=controlling_tty,
                                  mode=self.mode),
                limiter=_callerfs.threads_of(uid), abandon_on_cancel=True)
        if waited.cancelled_caught:
            raise LaunchError(f"the launch's plan was not made within {PLAN_TIMEOUT:g} s (a "
                              "file system in its grants that does not answer, or too many "
                              "of this user's launches at once)", step="mounts")
        if gate is not None:
            await gate()
        # One of the uid's places from here until its launcher reports; a launch given up
        # on keeps it until its launcher is no longer waited for (``_take_place``).
        place = await self._take_place(uid)
        held = True
        try:
            launch_r, launch_w = os.pipe2(os.O_CLOEXEC)
            exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            control = trio.socket.from_stdlib_socket(ours)
            launch_stream = trio.lowlevel.FdStream(launch_r)
            exit_stream = trio.lowlevel.FdStream(exit_r)
            try:
                try:
                    async with self._send_lock:
                        await self._sock.sendmsg(
                            [self._encoder.encode(plan)],
                            [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                              _fd_array(*stdio, launch_w, exit_w, theirs.fileno()))],
                        )
                finally:
                    os.close(launch_w)
                    os.close(exit_w)
                    theirs.close()
                with trio.fail_after(LAUNCH_TIMEOUT):
                    records = await _read_records(launch_stream)
            except trio.TooSlowError:
                # A launch error like any other, not an exception that ends the client's
                # connection: on a host busy enough, the launcher's records may not come in
                # time. The launcher goes on meanwhile and would run the program, unknown to
                # the daemon: whatever it reports later is ended (``_end_abandoned``).
                trio.lowlevel.spawn_system_task(
                    self._end_abandoned_of, uid, place, plan, launch_stream, exit_stream,
                    control, name="nonod.sandbox.abandoned_launch")
                # (Counted after the spawn, which may raise: the task runs only later.)
                self._abandoned[uid] += 1
                held = False
                raise LaunchError(f"the launcher did not report within {LAUNCH_TIMEOUT:g} s "
                                  "(the host may be overloaded); the launch was abandoned",
                                  step="fork") from None
            except BaseException:
                await exit_stream.aclose()
                control.close()
                await launch_stream.aclose()
                raise
        finally:
            if held:
                self._give_back(uid, place)
        await launch_stream.aclose()
        pid = 0
        ses = ses_err = 0
        group = ""
        error: LaunchError | None = None
        # In any order: a warm launch's pid, audit session and group come from the fork
        # server once the init has run the program, or failed (``_forkserver._InFlight``).
        for kind, a, b, detail in records:
            if kind == REC_PID:
                pid = a
            elif kind == REC_AUDIT:
                ses, ses_err = a, b
            elif kind == REC_CGROUP:
                group = detail.decode("ascii", "replace")
            elif kind == REC_ERROR and error is None:
                error = _launch_error(a, b, detail.decode("utf-8", "replace"))
        if error is not None:
            await exit_stream.aclose()
            control.close()
            _drop_group(plan, group)
            raise error
        if not pid:
            await exit_stream.aclose()
            control.close()
            raise LaunchError("the launcher died before reporting", step="fork")
        listener = None
        if plan.proxy_port:
            # Sent before exec, so it is already queued.
            msg, ancdata, _, _ = await control.recvmsg(16, socket.CMSG_SPACE(4))
            fds = _fds_from(ancdata)
            if msg[:1] != b"L" or len(fds) != 1:
                await exit_stream.aclose()
                control.close()
                raise LaunchError("the session's proxy socket did not arrive", step="loopback")
            listener = socket.socket(fileno=fds[0])
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = -1  # already over: its status is waiting on the exit pipe
        proc = Sandboxed(pid, pidfd, report, exit_stream, control, listener,
                         audit_session=ses, audit_session_error=ses_err)
        proc.cgroup = group
        return proc

    def _refuse_past_abandoned(self, uid: int) -> None:
        """Refuse ``uid``'s launch at once while it has ``ABANDONED_PER_UID`` launches given
        up on and still waited for, or all uids ``ABANDONED_IN_ALL``: each holds three
        descriptors for up to ``ABANDONED_PATIENCE``, and a user whose launches stall past
        ``LAUNCH_TIMEOUT`` (a file system in its grants that answers the daemon and not the
        launcher) could have made them every 30 s on each of its connections."""
        mine, every = self._abandoned[uid], sum(self._abandoned.values())
        if mine < ABANDONED_PER_UID and every < ABANDONED_IN_ALL:
            return
        whose, bound = (("this user's", ABANDONED_PER_UID) if mine >= ABANDONED_PER_UID
                        else ("all users'", ABANDONED_IN_ALL))
        raise LaunchBusy(
            f"{whose} launches given up on are at their bound ({bound}): their launchers did "
            f"not report within {LAUNCH_TIMEOUT:g} s and are still waited for (up to "
            f"{ABANDONED_PATIENCE:g} s each); refused at once", step="fork",
            hint="a file system in the grants that stalls the launcher (a FUSE mount) keeps "
                 "them; retry once it answers or is gone")

    async def _take_place(self, uid: int) -> object:
        """One of ``uid``'s ``ABANDONED_PER_UID`` places, waited for within
        ``LAUNCH_TIMEOUT`` (``LaunchBusy`` past it): a launch holds one from its plan's send
        until its launcher reports, and one given up on until its launcher is no longer
        waited for. The bound was looked at when a launch began and counted when it was
        given up on: a user's launches sent at once all passed the look, and all were given
        up on together, past its bound and the bound of all users."""
        places = self._places.get(uid)
        if places is None:
            places = self._places[uid] = trio.CapacityLimiter(ABANDONED_PER_UID)
        place = object()
        try:
            with trio.move_on_after(LAUNCH_TIMEOUT):
                await places.acquire_on_behalf_of(place)
                return place
        finally:
            self._forget_idle(uid)
        raise LaunchBusy(
            f"this user's launches waiting for their launchers or given up on are at their "
            f"bound ({ABANDONED_PER_UID}) and none ended within {LAUNCH_TIMEOUT:g} s; refused",
            step="fork", hint="a file system in the grants that stalls the launcher (a FUSE "
                              "mount) keeps them; retry once it answers or is gone")

    def _give_back(self, uid: int, place: object) -> None:
        self._places[uid].release_on_behalf_of(place)
        self._forget_idle(uid)

    def _forget_idle(self, uid: int) -> None:
        places = self._places.get(uid)
        if places is not None and not places.borrowed_tokens and \
                not places.statistics().tasks_waiting:
            del self._places[uid]

    async def _end_abandoned_of(self, uid: int, place: object, plan: LaunchPlan,
                                launch_stream: trio.lowlevel.FdStream,
                                exit_stream: trio.lowlevel.FdStream,
                                control: trio.socket.SocketType) -> None:
        """``_end_abandoned``, counted as ``uid``'s, and holding its ``place``, until it is
        over."""
        try:
            await _end_abandoned(plan, launch_stream, exit_stream, control, self._proc.pid)
        finally:
            self._give_back(uid, place)
            self._abandoned[uid] -= 1
            if not self._abandoned[uid]:
                del self._abandoned[uid]

    @property
    def pid(self) -> int:
        """The fork server's pid: every session's processes descend from it (it is a child
        subreaper, so nothing a session leaves behind is reparented above it)."""
        return self._proc.pid

    @property
    def mode(self) -> Literal["namespaces", "landlock-only"]:
        """How sessions are isolated: ``namespaces``, or ``landlock-only`` where the host
        refuses them (``_mode``); decided when the launcher opened."""
        return "landlock-only" if self._mode == "landlock-only" else "namespaces"

    async def aclose(self) -> None:
        self._sock.close()
        with trio.move_on_after(5):
            while self._proc.poll() is None:
                await trio.sleep(0.01)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


async def _end_abandoned(plan: LaunchPlan, launch_stream: trio.lowlevel.FdStream,
                         exit_stream: trio.lowlevel.FdStream,
                         control: trio.socket.SocketType, server: int) -> None:
    """A launch the daemon gave up on (``LAUNCH_TIMEOUT``): read what its launcher reports
    late, kill the init of a program it ran (its whole pid namespace goes with it), wait
    for the init's end and remove the warm group it ran in, within ``ABANDONED_PATIENCE``.
    (The launcher wrote on into a closed pipe before, and the program ran on, in a group
    the daemon never heard of, listed nowhere and ended by nothing but its own exit.)"""
    try:
        with trio.move_on_after(ABANDONED_PATIENCE):
            records = await _read_records(launch_stream)
            pid = next((a for kind, a, _, _ in records if kind == REC_PID), 0)
            group = next((d.decode("ascii", "replace") for kind, _, _, d in records
                          if kind == REC_CGROUP), "")
            pidfd = _pidfd_of_init(pid, group, server) if pid else -1
            if pidfd >= 0:
                try:
                    with contextlib.suppress(ProcessLookupError):  # (reaped since)
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    # Readable once the init has exited, which waits for every other
                    # process of its namespace to be gone: the group is empty then.
                    await trio.lowlevel.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
            _drop_group(plan, group)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # (nothing left to end)
    finally:
        launch_stream.close()
        exit_stream.close()
        control.close()


def _pidfd_of_init(pid: int, group: str, server: int) -> int:
    """A pidfd of an abandoned launch's init, -1 unless ``pid`` still names it: its program
    may have ended by the time the late report is read, the init with it, and the pid (one
    of ``kernel.pid_max``, 32768 by default) named another process since. The init is in
    the launch's own warm ``group`` (named at random); without one, it is a pid namespace's
    init whose parent is the fork server ``server`` or one of its launchers. Read through
    /proc after the pidfd is open: while the pidfd's process is not reaped (the kill that
    follows fails with ESRCH otherwise), the pid is still its own."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # (gone, or no pid at all)
        return -1
    try:
        if group:
            lines = _proc_lines(pid, "cgroup")
            ours = any(group in line.split(":", 2)[-1].split("/") for line in lines)
        else:
            status = dict(line.split(":", 1) for line in _proc_lines(pid, "status")
                          if ":" in line)
            nspids, parent = status.get("NSpid", "").split(), int(status.get("PPid", "0"))
            ours = (len(nspids) > 1 and nspids[-1] == "1"
                    and (parent == server or _parent_of(parent) == server))
    except (OSError, ValueError):
        ours = False
    if not ours:
        os.close(pidfd)
        return -1
    return pidfd


def _proc_lines(pid: int, name: str) -> list[str]:
    with open(f"/proc/{pid}/{name}", encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def _parent_of(pid: int) -> int:
    for line in _proc_lines(pid, "status"):
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 0


def _drop_group(plan: LaunchPlan, group: str) -> None:
    """A failed launch's warm group, which the daemon never heard of (best effort: the next
    daemon start removes whatever is left)."""
    if not group or "/" in group:
        return
    for directory in {os.path.join(subtree, group) for _, subtree in plan.cgroup_pool}:
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def _fd_array(*fds: int) -> bytes:
    import array

    return array.array("i", fds).tobytes()


def _launch_error(step_index: int, err: int, detail: str) -> LaunchError:
    step = STEPS[step_index] if 0 <= step_index < len(STEPS) else f"step {step_index}"
    reason = os.strerror(err) if err else "failed"
    where = f" ({detail})" if detail else ""
    return LaunchError(f"launch refused at step '{step}': {reason}{where}; the program did not run",
                       step=step, errno=err, detail=detail, hint=_HINTS.get(step))


def _reaper_override() -> dict[str, str]:
    """What the fork server takes from our environment: another reaper build, and whether
    every init stays Python (``_cinit.FORCE_PYTHON``: the tests run both paths)."""
    out = {name: os.environ.get(name, "") for name in (_reaper.OVERRIDE, FORCE_PYTHON)}
    return {name: value for name, value in out.items() if value}


def server_command(*, warm_idle: float = WARM_IDLE, prelude: str = "") -> list[str]:
    """The fork server's interpreter and code (``prelude`` runs first, for tests). ``-s -P``
    and :func:`server_environment` (the whole of its environment): no variable of the
    daemon's or user site steers the server, as with ``-I``, which would also ignore the
    allocator it names; our own ``sys.path`` does. msgspec is imported without
    typing_extensions and dataclasses without inspect (``nonod._lean``): less for every warm
    launcher to share with the server."""
    entry = ("from nonod import _lean; _lean.import_msgspec(); _lean.import_dataclasses(); "
             f"from nonod.sandbox._forkserver import main; main({float(warm_idle)!r})")
    return [sys.executable, "-s", "-P", "-c",
            f"import sys; sys.path[:0] = {[p for p in sys.path if p]!r}; {prelude}{entry}"]


def server_environment() -> dict[str, str]:
    """The fork server's environment, all of it: nothing of ours for sessions to find in
    /proc, but a debug build of the reaper that whoever started the daemon named
    (``_reaper.OVERRIDE``), and glibc's ``malloc`` as its allocator: the server's loop
    returns its free pages once a burst of work is over (``_malloc.TrimAfterBursts``), where
    CPython's own allocator keeps each 1 MiB arena mapped while a block in it lives (a
    burst of 300 live sessions left the server 7 MiB of them)."""
    return {"PATH": os.defpath, "PYTHONMALLOC": "malloc", **_reaper_override()}


def _started_with_nofile() -> str:
    """Code that gives the fork server back the descriptor limit the daemon was started with
    (``nonod._descriptors.raise_limit``): sessions keep it."""
    limit = _descriptors.inherited()
    if limit is None:
        return ""
    return f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, {limit!r}); "


@asynccontextmanager
async def open_launcher(mode: ModeSetting = "auto", *, warm_idle: float = WARM_IDLE,
                        prelude: str = "") -> AsyncIterator[Launcher]:
    """Start the fork server; stop it (and every session it started) on exit.

    ``mode`` (the daemon's ``[sandbox] mode``): ``auto`` probes once whether the kernel lets a
    child create the session namespaces and runs ``landlock-only`` when it does not.
    ``warm_idle`` (``[sandbox] warm_idle``): seconds without a launch of a kind after which
    one warm launcher is kept for it instead of two. ``prelude``: code the server runs first
    (``server_command``; for tests).

    Started from this (the main) thread on purpose: PR_SET_PDEATHSIG ties the server's life to
    the thread that forked it, and trio's own ``open_process`` forks from a worker thread.
    """
    resolved = await trio.to_thread.run_sync(resolve_mode, mode, NS_FLAGS)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # A plan is one datagram, which the default send buffer (about 208 KiB) caps: a plan with
    # a pinned trust bundle (TLS interception) is larger. The receivers read up to MAX_PLAN.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_PLAN)
    try:
        proc = subprocess.Popen(
            [*server_command(warm_idle=warm_idle, prelude=_started_with_nofile() + prelude),
             str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),),
            env=server_environment(),
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
    finally:
        theirs.close()
    launcher = Launcher(proc, trio.socket.from_stdlib_socket(ours), resolved)
    try:
        yield launcher
    finally:
        with trio.CancelScope(shield=True):
            await launcher.aclose()


async def launch_and_wait(
    policy: ResolvedPolicy,
    request: LaunchRequest,
    *,
    stdio: tuple[int, int, int] = (0, 1, 2),
    mode: ModeSetting = "auto",
) -> tuple[ExitStatus, EnforcementReport]:
    """Launch one program and wait for it: for tests, scripts and ``learn``."""
    async with open_launcher(mode) as launcher:
        proc = await launcher.launch(policy, request, stdio=stdio)
        return await proc.wait_exited(), proc.enforcement


__all__ = ["GuardReport", "Launcher", "Sandboxed", "launch_and_wait", "open_launcher"]
