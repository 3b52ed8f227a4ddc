"""The launcher: the only code that runs between fork and execve.

(Over 600 lines on purpose: one straight-line program, read step by step below; moving some
steps to other modules would hide which code runs before the program is confined.)

It runs in a child of the fork server, single-threaded, on a ``LaunchPlan`` computed before
the fork, and imports only the standard modules the design allows plus our ctypes wrappers.
The steps, in order (``STEPS`` names them in error records):

  outer process (forked from the fork server, stays outside the session's pid namespace)
       (cgroup        join the session's cgroups, if the plan has them; a warm launcher
                      joins a group of its own when it is made, which the fork server
                      turns into the session's, its limits written, before the plan)
    1. pdeathsig    die with the fork server
       (audit tag     if the plan has one: write it to /proc/self/loginuid, report the audit
                      session id the kernel assigns; a failure is reported, not fatal: the
                      tag only lets the daemon observe filesystem denials)
    2. user         as root for another user: drop groups, gid and uid
    3. unshare      new user, mount, pid, ipc, uts, cgroup and (if restricted) net namespaces
    4. idmap        map the uid and gid to themselves, setgroups deny
    5. fork_init    fork the session's init: pid 1 of the new pid namespace
  init (pid 1), which confines itself and then forks the program
    6. setsid       leave the caller's session
    7. mounts       the new root (see ``_mounts``); then non-dumpable
    8. loopback     ``lo`` up in the private network namespace
    9. keyring      a fresh session keyring (the inherited one stays out of reach)
   10. chdir        the working directory, as seen inside
   11. rlimits      no core dumps; the session's process cap (RLIMIT_NPROC); an eighth
                    of the owner's queued signals (RLIMIT_SIGPENDING)
   12. stdio        the caller's stdin/stdout/stderr on 0, 1, 2
   13. close_fds    every other descriptor closed (close_range)
   14. no_new_privs PR_SET_NO_NEW_PRIVS
   15. landlock     filesystem (and fallback network) rules, scopes
   16. caps         every capability dropped, securebits locked (the bounding set was
                    emptied with the init's preparation: a warm one's, ahead of time)
   17. seccomp      the syscall filter, last so nothing above needs to pass it
       createguard  when names must not be created (``_createguard``): their directories
                    were bound onto themselves after the mounts; now layer 2 is built
  program (inherits every restriction above)
   18. setsid, then the controlling terminal if asked
       createguard  layer 2 enforced, the notifying filter installed, its listener handed
                    to the init, which serves it from then on
   19. exec
  init, once the program has run ``REAPER_AFTER`` (50 ms)
       reaper       the init execs ``nono-reaper`` (``_reaper``: C, from a sealed memfd the
                    fork server loaded), which keeps every restriction above and does what
                    the init does from then on, the creation guard's notifications included
                    (``reaper_guard.c``, the decisions of ``_createserve``); without the
                    binary, or for a guard it cannot serve, the init stays this interpreter
                    (``_serve_as_init``)
       leave        in a pid namespace, the outer process then leaves the session to the
                    fork server (``hands_over``)

A warm launcher prepared for a view that leaves the view guard nothing to keep has no outer
process (``direct``, ``run_direct``): the fork server makes the init in the namespaces
itself (``_libc.fork_into``) and does steps 2 (none: warm launchers keep the daemon's user),
4 and the ``oom``/``cgroup`` writes for it from outside; an audit tag, by lending the init
its own loginuid for the ``clone`` (``_loginuid``), or, where the kernel would not let it
take it back, with an outer process as before. A view with something to guard: the init
sets the guard up itself and hands it to the fork server's hub before ``READY``
(``_adopt_ahead``), which guards the session from then on, as after an outer's hand-over.
Where the fork server's flat form covers the view and the plan (``_cinit.covers``), such a
direct init is not this code at all but ``nono-reaper --init`` (``reaper_init.c``), which
does the same steps in C from its first instruction; this module stays the reference for
what it does, and the path for everything else.

Without namespaces (``ns_flags`` 0, landlock-only mode: see ``_mode``), steps 3, 4, 7 (the
new root) and 8 are skipped, and the init is not pid 1 of anything: the outer process and the
init are child subreapers instead, so that whatever the program leaves behind is reparented to
them, and each kills what is left of its descendants before it exits (``_end_descendants``).
The kernel's guarantee that nothing outlives the pid namespace then becomes theirs: the outer
process's parent-death signal is SIGHUP, on which it kills the init and ends the rest, and a
descendant outlives the session only if the outer process itself is killed with SIGKILL.

The init stays: a program that is itself pid 1 would ignore default-action signals and leave
zombies. Init forwards SIGTERM, SIGINT, SIGHUP... to the program, reaps orphans, and reports
the program's exit status on the exit pipe; when it exits, the kernel kills whatever is left
in the namespace, so nothing outlives the session. Per session, while the program runs: the
init alone, ``nono-reaper`` (a static C program of about 700 KB whose text all sessions
share). The outer process sets the view guard up and guards the view until then; in a pid
namespace it then hands the guard to the fork server and exits (``hands_over``), and the fork
server adopts the init. Without a pid namespace (or without the binary) it stays, as
``nono-reaper --outer`` (``_outer_life``).

Any failure writes a record ``(step, errno, detail)`` to the CLOEXEC launch pipe and exits
with status 126: the program never runs unconfined. The outer process reports the init's
pid first; the init reports the program's exit status on a second pipe.
"""

from __future__ import annotations

import errno
import importlib
import math
import os
import resource
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Final, NamedTuple, NoReturn, TypeVar

import msgspec

from ..cgroups._types import CgroupLimits
from . import _libc, _reaper
from ._createguard import MAKE_RIGHTS, Guard, confine_program, pin_dirs, prepare
from ._createserve import Domains, Supervisor
from ._guardhub import MAX_FDS
from ._landlock import (
    LandlockPlan,
    RuleIds,
    apply_plan,
    build_ruleset,
    restrict_self,
    rules_current,
)
from ._loginuid import session_of
from ._mounts import MountOp, apply_mounts, prepare_root
from ._seccomp import install_filter
from ._syscalls import native_arch
from ._viewguard import GuardLost, ViewGuard, guarded

STEPS = (
    "fork", "pdeathsig", "user", "unshare", "idmap", "fork_init", "setsid", "mounts",
    "loopback", "keyring", "chdir", "rlimits", "stdio", "close_fds", "no_new_privs",
    "landlock", "caps", "seccomp", "exec", "guard", "oom", "createguard", "cgroup",
)
RECORD = struct.Struct("<BiiI")
REC_PID = 1
REC_ERROR = 2
REC_EXIT = 3
REC_AUDIT = 4  # (audit session id or 0, errno)
REC_GUARD = 5  # (mount operation kind, GUARD_*), detail: the path [NUL why]
REC_CGROUP = 6  # detail: the name of the (warm launcher's) group the session runs in
GUARD_RESTORED = 0  # the view guard mounted over a path the host had replaced
GUARD_LOST = 1  # it could not: the session is being ended
EXIT_LAUNCH_FAILED = 126


class LaunchPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the launcher child does, decided in the parent. Plain values only."""

    executable: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    switch_user: bool
    ns_flags: int
    mounts: tuple[MountOp, ...]
    landlock: LandlockPlan | None
    seccomp: bytes
    controlling_tty: bool = False
    loopback: bool = False
    proxy_port: int = 0  # non-zero: create the session's proxy socket there, hand it back
    pinned: tuple[bytes, ...] = ()  # verified file contents for the PIN mount operations
    max_processes: int = 0  # RLIMIT_NPROC for the session's user namespace (0: none)
    audit_tag: int = 0  # non-zero: the loginuid to set before leaving the initial namespace
    oom_score_adj: int = -1  # 0..1000: written before leaving the daemon's user namespace
    cgroup_procs: tuple[str, ...] = ()  # the session's cgroup.procs files, joined first
    cgroup_pool: tuple[tuple[str, str], ...] = ()  # v1: (controller, subtree) for warm ones
    cgroup_limits: CgroupLimits | None = None  # what the fork server writes for a warm one
    # Absolute paths that must not be created (their parents exist and are writable), and
    # the program's notifying filter for them (``_createguard``); empty: no creation guard.
    creation_refused: tuple[str, ...] = ()
    creation_filter: bytes = b""
    # The working directory's ``(st_dev, st_ino)`` in the session, checked right after the
    # chdir (``LaunchRequest.cwd_identity``; None: not checked): a directory renamed into its
    # place after the daemon verified it refuses the launch (``ESTALE``).
    cwd_identity: tuple[int, int] | None = None


class View(msgspec.Struct, frozen=True, kw_only=True):
    """What a warm launcher can do for a policy before a plan exists: the session's root
    (``_mounts``), its creation guard's pinned directories, and its Landlock ruleset (built,
    not enforced). Launches whose plans have equal views (``view_of``) may share one."""

    mounts: tuple[MountOp, ...]
    pinned: tuple[bytes, ...]
    landlock: LandlockPlan | None
    creation_refused: tuple[str, ...]


#: Decoders made once, in the fork server, for what launchers decode: msgspec reads a type's
#: annotations on its first use, which each forked launcher would otherwise do again on pages
#: it then copies (a ``tuple[MountOp, ...]`` alias is not cached on any class).
PLAN_DECODER = msgspec.msgpack.Decoder(LaunchPlan)


def view_of(plan: LaunchPlan) -> View | None:
    """The part of ``plan`` a warm launcher can prepare ahead (None: without a mount
    namespace there is no root to prepare)."""
    if not plan.ns_flags & _libc.CLONE_NEWNS:
        return None
    return View(mounts=plan.mounts, pinned=plan.pinned, landlock=plan.landlock,
                creation_refused=plan.creation_refused)


class Ready(NamedTuple):
    """A prepared warm launcher's work (``_prepare_view``): its view, and the ruleset
    descriptor (-1: none) with the identities of its rules (``_landlock.build_ruleset``);
    ``armed``: the outer process guards the view already (``_arm_guard``), and waits only
    for the report pipe."""

    view: View
    ruleset: int
    rule_ids: RuleIds
    armed: bool = False


Fds = tuple[int, int, int, int, int, int]  # stdin, stdout, stderr, launch_w, exit_w, control
FDS_PER_PLAN = 6
#: At most this many idmapped trees follow a plan's descriptors (``_mounts.MAX_IDMAPPED``).
MAX_TREES = 64
WARM_HELLO = struct.Struct("<iIi")  # a warm launcher's init pid, audit session id, errno
#: A plan is one datagram of at most this many bytes (the daemon's socket buffer is sized
#: for it).
MAX_PLAN = 1 << 20
#: A warm launcher's plan comes after the records the fork server has for its launch pipe
#: (the init's pid...: ``_forkserver._Warm.hand_over``), prefixed with their length; the
#: init writes them there itself once the program runs.
PENDING = struct.Struct("<I")
MAX_PENDING = 4096
READY = b"R"  # a warm launcher's init, prepared, waits for its plan
CONTROL_FD = 5


class StepFailed(Exception):
    def __init__(self, step: str, err: int, detail: str) -> None:
        super().__init__(step, err, detail)
        self.step, self.err, self.detail = step, err, detail


def record(kind: int, a: int, b: int, detail: bytes = b"") -> bytes:
    return RECORD.pack(kind, a, b, len(detail)) + detail


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BrokenPipeError:
            return  # the daemon has gone: nobody is left to tell
        data = data[n:]


T = TypeVar("T")

# ``signal``'s functions are wrappers that turn every number they take or return into an
# enum member (``getsignal``: a lookup per call; ``pthread_sigmask``: a set of members built
# from the old mask), which a launcher would run on pages it then copies; the C functions
# under them take and return plain numbers.
_csignal = importlib.import_module("_signal")
_getsignal: Callable[[int], object] = _csignal.getsignal
_setsignal: Callable[[int, object], object] = _csignal.signal
_sigmask: Callable[[int, tuple[int, ...]], object] = _csignal.pthread_sigmask
_SIG_DFL = int(signal.SIG_DFL)
_UNCATCHABLE = (int(signal.SIGKILL), int(signal.SIGSTOP))


def _step(name: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        detail = exc.filename if isinstance(exc.filename, str) else (exc.strerror or "")
        raise StepFailed(name, exc.errno or 0, str(detail)) from None
    except StepFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - any surprise is a failed step, never a launch
        raise StepFailed(name, 0, f"{type(exc).__name__}: {exc}") from None


#: The detail of a working directory that is not the one the daemon verified (``ESTALE``).
CWD_REPLACED = "is not the directory verified at launch: renamed or replaced since"


def enter_cwd(cwd: str, identity: tuple[int, int] | None) -> None:
    """``chdir`` to ``cwd``; then, if ``identity`` is given, the directory entered must be
    that ``(st_dev, st_ino)``, else ``ESTALE`` (``LaunchPlan.cwd_identity``)."""
    os.chdir(cwd)
    if identity is None:
        return
    info = os.stat(".")
    if (info.st_dev, info.st_ino) != identity:
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), f"{cwd} {CWD_REPLACED}")


def _fail(launch_w: int, exc: StepFailed, pending: bytes = b"") -> NoReturn:
    """Report ``exc`` on the launch pipe (after a warm launch's ``pending`` records) and
    exit."""
    _write_all(launch_w, pending + record(REC_ERROR, STEPS.index(exc.step), exc.err,
                                          exc.detail.encode("utf-8", "replace")[:4000]))
    os._exit(EXIT_LAUNCH_FAILED)


#: The descriptor limit the fork server was started with (``_forkserver.serve`` raises its own
#: soft limit: its hub holds a few descriptors per session); programs get it back, less
#: ``NOFILE_RESERVE`` (``program_nofile``).
INHERITED_NOFILE: tuple[int, int] | None = None

#: Descriptors kept out of a program's hard limit for the launchers of its user. The kernel
#: refuses to pass descriptors (SCM_RIGHTS: ETOOMANYREFS) from a process without
#: CAP_SYS_RESOURCE in the host's user namespace -- every launcher in a session's namespace --
#: once the user's descriptors in flight, all processes together, exceed the sender's
#: soft RLIMIT_NOFILE. A program can hold that many in flight (sent, never received) up to its
#: own limit plus one message (SCM_MAX_FD, 253); with the launchers' limit above that, it
#: cannot stop its user's next launches.
NOFILE_RESERVE = 4096


def program_nofile(inherited: tuple[int, int]) -> tuple[int, int]:
    """A program's RLIMIT_NOFILE: the inherited one with its hard limit lowered by
    ``NOFILE_RESERVE`` (a quarter of it at most), the soft limit no higher than that."""
    soft, hard = inherited
    if hard == resource.RLIM_INFINITY:
        return inherited
    hard -= min(NOFILE_RESERVE, hard // 4)
    return (hard if soft == resource.RLIM_INFINITY else min(soft, hard)), hard


def _program_limits() -> None:
    """The program's descriptor limit, taken by a forked program itself just before its
    exec (once it has passed the init its creation guard's listener); a spawned one takes
    it in ``nono-reaper --exec`` (``_spawn_program``). The launchers and the init pass
    descriptors under the fork server's limit, for good."""
    resource.setrlimit(resource.RLIMIT_NOFILE, program_nofile(
        INHERITED_NOFILE or resource.getrlimit(resource.RLIMIT_NOFILE)))


def _reset_signals() -> None:
    """Every disposition back to the default (one ignored would stay ignored across exec),
    and nothing blocked. Python knows each signal's disposition (it read them all at start
    and set the others itself): only those not at the default are reset, a few calls instead
    of one per signal."""
    signal.set_wakeup_fd(-1)  # the fork server's (``_forkserver._wake_on_exits``)
    for sig in range(1, signal.NSIG):
        if sig in _UNCATCHABLE:
            continue
        handler = _getsignal(sig)
        if isinstance(handler, int) and handler == _SIG_DFL:
            continue
        try:
            _setsignal(sig, _SIG_DFL)
        except (OSError, ValueError):
            pass
    _sigmask(signal.SIG_SETMASK, ())


def _write_proc(path: str, text: str) -> None:
    """Write ``text`` to the kernel file ``path`` in one ``write`` (what the id maps need).
    Not through ``open()``: its file, buffer and text layers (codec lookups included) would
    be built on pages a forked launcher then copies, for a few bytes."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.EIO, "short write", path)
    finally:
        os.close(fd)


def _pdeathsig() -> None:
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


def _dumpable_until_mapped() -> None:
    """The fork server is not dumpable, and we inherit that; but until the id maps (and
    ``oom_score_adj``) are written /proc/self/* must be our own, not root's. Dumpable again
    (no core dump: the fork server's RLIMIT_CORE of 1 byte is inherited) until we drop it before
    waiting."""
    _libc.prctl(_libc.PR_SET_DUMPABLE, 1)


def set_oom_score_adj(value: int, pid: int = 0) -> None:
    """The session's ``oom_score_adj``, written from the daemon's user namespace (by the
    launcher before it leaves it, or for ``pid`` by the fork server): a root daemon holds
    CAP_SYS_RESOURCE there, which also makes it the floor the program cannot lower it below
    (and Landlock keeps ``/proc`` read-only for the program in any case)."""
    if value < 0:
        return
    _write_proc(f"/proc/{pid or 'self'}/oom_score_adj", str(value))


def audit_session(tag: int) -> tuple[int, int]:
    """Set our loginuid to ``tag`` (root in the initial user namespace only: the kernel wants
    CAP_AUDIT_CONTROL there) and return ``(audit session id, 0)``, or ``(0, errno)``."""
    try:
        _write_proc("/proc/self/loginuid", str(tag))
    except OSError as exc:
        return 0, exc.errno or 0
    return session_of()


def _maps_from_server(plan: LaunchPlan) -> bool:
    """Whether the fork server writes our id maps (:func:`_mapped_by_server`): we switch to
    the session's user and make a user namespace."""
    return plan.switch_user and bool(plan.ns_flags & _libc.CLONE_NEWUSER)


def _switch_user(plan: LaunchPlan) -> None:
    """Become the session's user, and stay not dumpable: this process is a copy of the root
    fork server (its memory, its pipes, the guard hub's socket, the plan's idmapped trees),
    which the user must not ``ptrace``, read (``/proc/<pid>/mem``) or take descriptors of.
    The change of uid cleared "dumpable" unless ``fs.suid_dumpable`` is 1: cleared again
    whatever it is. Our id maps are written by the fork server (:func:`_mapped_by_server`):
    a process that is not dumpable cannot open its own ``/proc`` files once it is not root."""
    os.setgroups([])
    os.setresgid(plan.gid, plan.gid, plan.gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    _libc.prctl(_libc.PR_SET_DUMPABLE, 0)


#: Each session's share of its owner's inotify allowance (``limit_inotify``): a quarter of
#: Debian's 128 instances, and watches enough for a large tree.
SESSION_INOTIFY_LIMITS: Final = (("max_inotify_instances", 32), ("max_inotify_watches", 16384))


def _idmap(plan: LaunchPlan) -> None:
    _idmap_ids(plan.uid, plan.gid, plan.ns_flags)


def _mapped_by_server(go: int, plan: LaunchPlan) -> None:
    """Have the fork server write our id maps (``map_ids``: it is root in the daemon's user
    namespace, ``_forkserver._Maps``): ``r`` on ``go``, then its ``g``, or ``e`` and the
    errno it met. The rest of what ``_idmap_ids`` does follows here."""
    os.write(go, b"r")
    answer = os.read(go, 8)
    if answer[:1] != b"g":
        code = int.from_bytes(answer[1:5], "little") if len(answer) >= 5 else errno.EPIPE
        raise OSError(code, "the fork server could not write the id maps")
    os.close(go)
    if not plan.ns_flags & _libc.CLONE_NEWNS:
        limit_inotify()


def _idmap_ids(uid: int, gid: int, ns_flags: int) -> None:
    _write_proc("/proc/self/setgroups", "deny")
    _write_proc("/proc/self/uid_map", f"{uid} {uid} 1")
    _write_proc("/proc/self/gid_map", f"{gid} {gid} 1")
    if not ns_flags & _libc.CLONE_NEWNS:  # else the init does it in its fresh /proc
        limit_inotify()


def limit_inotify() -> None:
    """Lower the inotify limits of the user namespace this process made (and holds
    ``CAP_SYS_RESOURCE`` in).

    The kernel counts inotify instances and watches per uid in every user namespace up the
    chain, and a new namespace starts without a limit of its own: without these, a session
    could take all of its owner's (128 instances on Debian), leaving the owner's host
    programs and the view guard of the next session none.

    Written through the init's own procfs (``prepare_init``, right after the fresh ``/proc``
    is mounted) rather than the host's: in the host's ``/proc/sys/user`` the kernel keeps one
    dentry per live user namespace under each of these names and compares them one by one at
    every lookup (``proc_sys_compare``), so the writes cost more the more sessions the host
    runs (0.3-0.5 ms each with ~1500, several ms under load); a fresh procfs has only this
    namespace's. Which namespace a write applies to is the writer's, whatever the mount."""
    for name, limit in SESSION_INOTIFY_LIMITS:
        _write_proc(f"/proc/sys/user/{name}", str(limit))


def join_cgroups(procs: tuple[str, ...], pid: int = 0) -> None:
    """Move ``pid`` (0: this process) into the session's cgroups: everything it forks later
    is born there, so no process of the session ever runs outside its limits."""
    for path in procs:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)


def run_outer(plan: LaunchPlan, fds: Fds, hub: int, reaper: int = -1,
              trees: tuple[int, ...] = (), done: int = -1, go: int = -1) -> None:
    """Body of the fork server's child (``reaper``: the memfd of ``_reaper``, or -1;
    ``trees``: the plan's idmapped trees, ``_mounts.idmapped_trees``; ``done``: a socket
    the init closes once the program runs, see ``confine_and_run``; ``go``: for a plan that
    switches user into a user namespace, the socket on which the fork server writes our id
    maps, :func:`_mapped_by_server`). Never returns."""
    launch_w = fds[3]
    server = os.getppid()
    try:
        _step("fork", _close_except, (*fds, hub, reaper, done, go, *trees))
        _step("cgroup", join_cgroups, plan.cgroup_procs)
        _step("pdeathsig", _pdeathsig)
        _step("pdeathsig", _dumpable_until_mapped)
        _step("oom", set_oom_score_adj, plan.oom_score_adj)
        _reset_signals()
        if plan.audit_tag:
            _write_all(launch_w, record(REC_AUDIT, *audit_session(plan.audit_tag)))
        if plan.switch_user:
            _step("user", _switch_user, plan)
        if plan.ns_flags:
            _step("unshare", _libc.unshare, plan.ns_flags)
            if _maps_from_server(plan):
                _step("idmap", _mapped_by_server, go, plan)
            else:
                _step("idmap", _idmap, plan)
        else:
            _step("fork_init", _libc.prctl, _libc.PR_SET_CHILD_SUBREAPER, 1)
        alive_r, alive_w = os.pipe()
        guard_outer, guard_init = socket.socketpair()
        try:
            pid = os.fork()
        except OSError as exc:
            raise StepFailed("fork_init", exc.errno or 0, "fork") from None
    except StepFailed as exc:
        _fail(launch_w, exc)
        raise  # unreachable: _fail exits
    if pid == 0:
        os.close(alive_w)
        guard_outer.close()
        try:
            run_init(plan, fds, alive_r, guard_init, reaper, trees, done, hub)
        except StepFailed as exc:
            _fail(launch_w, exc)
        except BaseException as exc:  # noqa: BLE001 - reported, and this process ends here
            _fail(launch_w, StepFailed("fork_init", 0, f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_LAUNCH_FAILED)
    os.close(alive_r)
    guard_init.close()
    for fd in (*trees, done):
        if fd >= 0:
            os.close(fd)
    _write_all(launch_w, record(REC_PID, pid, 0))
    for fd in {*fds, 0, 1, 2}:
        os.close(fd)
    _libc.prctl(_libc.PR_SET_DUMPABLE, 0)
    _outer_life(pid, guard_outer, hub, plan.ns_flags, server, reaper)


def run_warm(uid: int, gid: int, ns_flags: int, sock_fd: int, audit_tag: int = 0,
             hub: int = -1, oom_score_adj: int = -1, pool: tuple[str, ...] = (),
             reaper: int = -1, view: View | None = None, trees: tuple[int, ...] = ()) -> None:
    """A launcher made ahead of time (fork server child): namespaces, init and the empty root
    are ready before any plan exists, so only plan-specific steps remain at launch.

    The outer process sends the init's host pid (and its audit session, when ``audit_tag``
    is set: see ``audit_session``) on ``sock_fd``; the init then waits on the same
    socket for (plan, five descriptors). A failure before that makes the init exit, and the
    fork server falls back to a cold launch. With ``pool`` (cgroup.procs files of a group
    made for it), the outer process joins that group before anything else, as a cold one
    joins the session's, so the init is born there: at launch the fork server writes the
    session's limits into the group instead of moving the init (which would wait for an RCU
    grace period per hierarchy on the launch path).

    With a ``view`` (and its idmapped ``trees``), the init also builds that view and its
    Landlock ruleset ahead (``_prepare_view``), and takes only plans whose ``view_of`` is
    equal. The init sends ``READY`` once prepared, before it waits for a plan; a launcher
    that fails to prepare exits instead, and the fork server launches on a plain one or
    cold. Never returns."""
    server = os.getppid()
    try:
        _close_except((sock_fd, hub, reaper, *trees))
        join_cgroups(pool)
        _pdeathsig()
        _dumpable_until_mapped()
        set_oom_score_adj(oom_score_adj)
        _reset_signals()
        ses, ses_err = audit_session(audit_tag) if audit_tag else (0, 0)
        if ns_flags:
            _libc.unshare(ns_flags)
            _idmap_ids(uid, gid, ns_flags)
        else:
            _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)
        alive_r, alive_w = os.pipe()
        guard_outer, guard_init = socket.socketpair()
        pid = os.fork()
    except OSError:
        os._exit(EXIT_LAUNCH_FAILED)
    if pid == 0:
        os.close(alive_w)
        guard_outer.close()
        _warm_init((uid, gid, ns_flags, audit_tag, oom_score_adj), sock_fd, alive_r,
                   guard_init, reaper, view, trees, hub)
    os.close(alive_r)
    guard_init.close()
    for fd in trees:
        os.close(fd)
    try:
        os.write(sock_fd, WARM_HELLO.pack(pid, ses, ses_err))
    finally:
        os.close(sock_fd)
    for fd in (0, 1, 2):
        os.close(fd)
    _libc.prctl(_libc.PR_SET_DUMPABLE, 0)
    _outer_life(pid, guard_outer, hub, ns_flags, server, reaper)


def _warm_init(key: tuple[int, int, int, int, int], sock_fd: int, alive_r: int,
               guard: socket.socket | None, reaper: int, view: View | None,
               trees: tuple[int, ...], hub: int = -1, adopt: int = -1) -> NoReturn:
    """A warm launcher's init: prepare (and its view, if any), say ``READY``, wait for a
    plan on ``sock_fd`` that matches ``key`` (uid, gid, namespaces, audit tag,
    ``oom_score_adj``) and the view, and run it. ``guard``: the socket to the outer process
    (None: there is none, ``run_direct``; then ``adopt``, if any, the hub's socket the view
    guard is handed over on, ``_adopt_ahead``)."""
    try:
        prepare_init(alive_r, key[2])
        ready = _prepare_view(view, trees) if view is not None else None
        if ready is not None and adopt >= 0:
            _adopt_ahead(adopt, ready.view)
        plan_sock = socket.socket(fileno=sock_fd)
        plan_sock.send(READY)
        if ready is not None and guard is not None:  # after READY: not to delay it
            ready = _arm_guard(guard, ready)
        msg, fds, _, _ = socket.recv_fds(plan_sock, MAX_PLAN + MAX_PENDING,
                                         FDS_PER_PLAN + MAX_TREES)
        plan_sock.detach()  # kept open until the program runs: the fork server's cue
    except (StepFailed, OSError, GuardLost):
        os._exit(EXIT_LAUNCH_FAILED)
    if len(msg) < PENDING.size or len(fds) < FDS_PER_PLAN:
        os._exit(EXIT_LAUNCH_FAILED)  # (the fork server's end closed: it has gone)
    launch_w = fds[3]
    end = PENDING.size + PENDING.unpack_from(msg)[0]
    pending, msg = msg[PENDING.size:end], msg[end:]
    try:
        plan = PLAN_DECODER.decode(msg)
        if (plan.uid, plan.gid, plan.ns_flags, plan.audit_tag, plan.oom_score_adj) != key:
            raise StepFailed("fork", 22, "plan does not match the warm launcher")
        if view is not None and view_of(plan) != view:
            raise StepFailed("fork", 22, "plan does not match the warm launcher's view")
        confine_and_run(plan, (fds[0], fds[1], fds[2], fds[3], fds[4], fds[5]),
                        guard, reaper, tuple(fds[FDS_PER_PLAN:]), sock_fd, ready,
                        hub, pending)
    except StepFailed as exc:
        _fail(launch_w, exc, pending)
    except BaseException as exc:  # noqa: BLE001 - reported, and this process ends here
        _fail(launch_w, StepFailed("fork_init", 0, f"{type(exc).__name__}: {exc}"), pending)
    os._exit(EXIT_LAUNCH_FAILED)


def direct(key: tuple[int, int, int, int, int], view: View | None,
           lends: bool = False, adopts: bool = False) -> bool:
    """Whether a warm launcher for ``key`` (uid, gid, namespaces, audit tag,
    ``oom_score_adj``) and ``view`` needs no outer process (``run_direct``): a view in a
    user, mount and pid namespace of its own, without an audit tag unless the fork server
    ``lends`` its loginuid for it (``_loginuid``: a process sets its own loginuid only, from
    the daemon's user namespace, which the init is born out of), whose operations leave the
    view guard nothing to do unless the fork server's hub ``adopts`` the guard from the init
    itself (``_adopt_ahead``)."""
    needed = _libc.CLONE_NEWUSER | _libc.CLONE_NEWNS | _libc.CLONE_NEWPID
    return (view is not None and key[2] & needed == needed and (not key[3] or lends)
            and (adopts or not guarded(view.mounts)))


def map_ids(pid: int, uid: int, gid: int) -> None:
    """The fork server's part of ``run_direct``: map ``uid`` and ``gid`` to themselves in
    ``pid``'s new user namespace, setgroups denied (what ``_idmap_ids`` does for itself)."""
    _write_proc(f"/proc/{pid}/setgroups", "deny")
    _write_proc(f"/proc/{pid}/uid_map", f"{uid} {uid} 1")
    _write_proc(f"/proc/{pid}/gid_map", f"{gid} {gid} 1")


def run_direct(key: tuple[int, int, int, int, int], sock_fd: int, go: int, reaper: int,
               view: View, trees: tuple[int, ...], hub: int = -1) -> NoReturn:
    """A warm launcher without an outer process (``direct``): the fork server made this
    process in the session's namespaces (``_libc.fork_into``; all but the cgroup one), pid
    1 of its pid namespace. Once we say ``r`` on the socket ``go`` (dumpable, as
    ``_dumpable_until_mapped``), it writes our id maps and ``oom_score_adj``, puts us in our
    group, and says ``g``. Then what ``run_warm``'s init does; our parent is the fork
    server, whose death is ours (``PR_SET_PDEATHSIG``; one that dies before that closes the
    plan socket, on which the init waits). With ``hub`` (the view has something to guard),
    the init sets the view guard up and hands it to the hub itself once the view is built
    (``_adopt_ahead``). Never returns."""
    try:
        _close_except((sock_fd, go, reaper, hub, *trees))
        _pdeathsig()
        _dumpable_until_mapped()  # until ``prepare_init``
        _reset_signals()
        os.write(go, b"r")
        if os.read(go, 1) != b"g":
            os._exit(EXIT_LAUNCH_FAILED)  # the fork server could not make us a session's
        os.close(go)
        if key[2] & _libc.CLONE_NEWCGROUP:  # rooted at the group the server put us in
            _libc.unshare(_libc.CLONE_NEWCGROUP)
    except OSError:
        os._exit(EXIT_LAUNCH_FAILED)
    _warm_init(key, sock_fd, -1, None, reaper, view, trees, adopt=hub)


def _adopt_ahead(hub_fd: int, view: View) -> None:
    """A direct init's view guard (``run_direct``), built view and all, before any plan:
    watched through the fork server's hub as the outer's ``_receive_guard`` has it watched,
    started, then handed to the hub as the outer's ``_hand_over`` does once the init runs
    ``nono-reaper`` (``A``: its pidfd, the guard's state, its end of the hub socket and its
    mount namespace); the hub guards the session from then on (its repairs enter through
    that namespace: this process's image was exec'd outside the session's user namespace,
    and the kernel refuses a fork server without CAP_SYS_PTRACE ``setns`` on its pidfd) and
    gets the exit pipe at launch (``GuardHub.launched``). Raises OSError or GuardLost if the
    guard cannot start or the hub does not take it: the init then ends before ``READY``, and
    the launch goes to another launcher (fail closed)."""
    hub = socket.socket(fileno=hub_fd)
    try:
        guard = ViewGuard(guarded(view.mounts))
        hub.sendall(b"O" + msgspec.msgpack.encode(sorted(guard.on_the_way)))
        _hub_watch(hub, guard)
        _hub_answer(hub, b"k")
        guard.start()
        state = os.memfd_create("nono-view", os.MFD_CLOEXEC)
        _write_state(state, guard)
        mntns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        pidfd = os.pidfd_open(os.getpid())
        try:
            socket.send_fds(hub, [b"A"], [pidfd, state, hub.fileno(), mntns])
        finally:
            for fd in (pidfd, state, mntns):
                os.close(fd)
        _hub_answer(hub, b"h")
    finally:
        hub.close()


def _hub_answer(hub: socket.socket, expected: bytes) -> None:
    """Wait for the hub's ``expected`` answer (``c``, a change it woke us for, passing by:
    it repairs those itself once it has the session); OSError on ``E`` or its end."""
    while True:
        reply = hub.recv(64)
        if reply[:1] == b"E" and len(reply) >= 5:
            raise OSError(struct.unpack("<i", reply[1:5])[0], "the guard hub cannot watch")
        if reply[:1] == expected:
            return
        if reply[:1] != b"c":
            raise OSError(errno.EPIPE, "the guard hub did not answer")


def _prepare_view(view: View, trees: tuple[int, ...]) -> Ready:
    """A warm init's view, built before any plan: what ``confine_and_run`` does first
    (mounts, the old root detached, the creation guard's pins), and the Landlock ruleset."""
    apply_mounts(view.mounts, prepared=True, pinned=view.pinned, trees=trees)
    for fd in trees:
        os.close(fd)
    if view.creation_refused:
        pin_dirs(view.creation_refused)
    if view.landlock is None or not view.landlock.abi:
        return Ready(view, -1, ())
    ruleset, ids = build_ruleset(view.landlock)
    return Ready(view, ruleset, ids)


def _outer_life(init: int, guard: socket.socket, hub: int, ns_flags: int, server: int,
                reaper: int = -1) -> None:
    """The outer process after the launch: guard the view and wait for the init; without
    namespaces, also end the session when the fork server dies, and end what is left of it
    when the init is gone (a pid namespace's end would). Once the guard is set up, this
    process becomes ``nono-reaper --outer`` (``_reaper.become_outer``), which does the same
    from then on, when it can. Never returns."""
    if not ns_flags:
        _end_with_parent(init, server)
    _guard_and_wait(init, guard, hub, reaper, ns_flags, server)
    if not ns_flags:
        _end_descendants()
    os._exit(0)


def _end_with_parent(init: int, server: int) -> None:
    """Hear of the fork server's death (SIGHUP instead of SIGKILL as the parent-death
    signal) and kill the init then: the waits return, and ``_end_descendants`` kills what the
    program left, which the kernel would not do without a pid namespace."""
    def kill_init(_sig: int, _frame: object) -> None:
        try:
            os.kill(init, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGHUP, kill_init)
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != server:  # it died before the prctl took effect
        kill_init(signal.SIGHUP, None)


_GUARD_LEN = struct.Struct("<I")
_OPS_DECODER = msgspec.msgpack.Decoder(tuple[MountOp, ...])  # see ``PLAN_DECODER``
_NOTHING = _GUARD_LEN.pack(0)  # a guard list is never empty: this header says there is none
_REPORT = b"R"  # an armed guard's report pipe comes with this (``_send_report``)


def hands_over(ns_flags: int, reaper: int, hub: int) -> bool:
    """Whether the outer launcher leaves once the init runs ``nono-reaper``: in a pid
    namespace, whose end takes the whole session with the init (without one, the outer stays
    to end what the program leaves when the init is gone).

    Then the init keeps its copy of the hub socket (its lifeline: only the fork server holds
    the other end) and the guard socket. ``nono-reaper`` drops the parent-death signal that
    tied it to the outer and says ``h`` on the guard socket; the outer hands the view guard
    to the fork server's hub (``_hand_over``; nothing to hand over when nothing is guarded)
    and exits. The init is reparented to the fork server, a child subreaper. An init that
    stays Python says ``p``, and the outer stays too (``nono-reaper --outer``)."""
    return reaper >= 0 and hub >= 0 and bool(ns_flags & _libc.CLONE_NEWPID)


def _start_guard(guard: socket.socket, ops: tuple[MountOp, ...], report: int,
                 keep: bool = False) -> None:
    """Init side: hand the guarded operations to the outer process, which watches them for
    the whole session (``_viewguard``) and reports what it does on ``report`` (the exit
    pipe), and wait until it watches. Nothing to guard: just close (or, to ``keep`` the
    socket for ``hands_over``, send an empty header)."""
    try:
        todo = guarded(ops)
        if not todo:
            if keep:
                guard.sendall(_NOTHING)
            return
        _send_guarded(guard, todo, report)
    finally:
        if not keep:
            guard.close()


def _arm_guard(guard: socket.socket, ready: Ready) -> Ready:
    """A prepared warm init, before any plan: have the outer process start guarding the view
    it has just built, as ``_start_guard`` does at launch, without waiting for it (the
    guard needs the fork server's hub, which may be waiting for this launcher's ``READY``).
    The launch then only checks that the guard started and passes the report pipe
    (``_send_report``): no round trip through the outer and the hub on its way, unless the
    guard is still starting."""
    todo = guarded(ready.view.mounts)
    if not todo:
        return ready
    _send_ops(guard, todo, -1)
    return ready._replace(armed=True)


def _send_report(guard: socket.socket, ops: tuple[MountOp, ...], report: int,
                 keep: bool = False) -> None:
    """Init side of an armed guard (``_arm_guard``), at launch: wait until the outer watches
    (at once if it has said so: the usual case), then pass the report pipe, after which the
    outer reports what the guard did (and does) there (it kills this init if it loses it).
    If it could not start ahead (the user out of inotify instances then, say), it is set up
    once more now, as at a cold launch; a second failure fails the launch at step
    ``guard``."""
    try:
        try:
            _guard_started(guard)
        except OSError:
            _send_guarded(guard, guarded(ops), report)
            return
        socket.send_fds(guard, [_REPORT], [report])
    finally:
        if not keep:
            guard.close()


def _send_guarded(guard: socket.socket, todo: tuple[MountOp, ...], report: int) -> None:
    """The guarded operations to the outer process with the report pipe, and wait until it
    watches them."""
    _send_ops(guard, todo, report)
    _guard_started(guard)


def _send_ops(guard: socket.socket, todo: tuple[MountOp, ...], report: int) -> None:
    """The guarded operations to the outer process, with the report pipe (-1: it follows
    at launch, ``_send_report``)."""
    payload = msgspec.msgpack.encode(todo)
    data = _GUARD_LEN.pack(len(payload)) + payload
    if report >= 0:
        socket.send_fds(guard, [data[:1 << 16]], [report])
    else:
        guard.sendall(data[:1 << 16])
    if len(data) > 1 << 16:
        guard.sendall(data[1 << 16:])


def _guard_started(guard: socket.socket) -> None:
    """The outer's answer to the operations: it watches them, or OSError."""
    reply = guard.recv(4096)
    if reply[:1] == b"k":
        return
    if reply[:1] == b"E" and len(reply) >= 5:
        raise OSError(struct.unpack("<i", reply[1:5])[0], reply[5:].decode("utf-8", "replace"))
    raise OSError(32, "the view guard did not start")  # EPIPE


def _receive_guard(guard: socket.socket, hub: socket.socket | None
                   ) -> tuple[ViewGuard, int] | None:
    """Outer side: the operations from the init and where to report (None: nothing to guard,
    or the launch failed first; -1: the report pipe follows at launch, ``_arm_guard``),
    watched (by the fork server's hub) before the init goes on. A guard armed ahead that
    could not start is asked for again at launch (``_send_report``)."""
    # Nothing to guard: read only that (the init's "h" may follow on this stream). The header
    # arrives whole: it is sent alone, or at the start of the first message.
    if guard.recv(_GUARD_LEN.size, socket.MSG_PEEK) == _NOTHING:
        guard.recv(_GUARD_LEN.size)
        return None
    data, fds, _, _ = socket.recv_fds(guard, 1 << 16, 1)
    if not data or len(fds) > 1:
        for fd in fds:
            os.close(fd)
        return None
    report = fds[0] if fds else -1
    while len(data) < _GUARD_LEN.size or len(data) < _GUARD_LEN.size + _GUARD_LEN.unpack_from(
            data)[0]:
        chunk = guard.recv(1 << 20)  # the rest of a long list
        if not chunk:
            if report >= 0:
                os.close(report)
            return None
        data += chunk
    ops = _OPS_DECODER.decode(data[_GUARD_LEN.size:])
    try:
        view = ViewGuard(ops)
        if hub is None:
            raise OSError(errno.EBADF, "no guard hub in this launcher")
        hub.sendall(b"O" + msgspec.msgpack.encode(sorted(view.on_the_way)))
        _hub_watch(hub, view)
        _hub_answer(hub, b"k")
        view.start()
    except (OSError, GuardLost) as exc:
        err = exc.errno or 0 if isinstance(exc, OSError) else 40  # GuardLost: ELOOP
        detail = f"{exc.filename or ''}" if isinstance(exc, OSError) else f"{exc.target} {exc.why}"
        guard.sendall(b"E" + struct.pack("<i", err) + detail.encode()[:4000])
        if report < 0:  # armed ahead: the init asks again at launch, with the report pipe
            return _receive_guard(guard, hub)
        os.close(report)
        return None
    guard.sendall(b"k")
    return view, report


def _hub_watch(hub: socket.socket, view: ViewGuard) -> None:
    """Have the hub watch ``view``'s directories as this process sees them now."""
    names, fds = view.open_dirs()
    try:
        if len(fds) > MAX_FDS:
            raise OSError(errno.E2BIG, f"{len(fds)} directories to watch (at most {MAX_FDS})")
        socket.send_fds(hub, [b"W" + msgspec.msgpack.encode(names)], fds)
    finally:
        for fd in fds:
            os.close(fd)


def _guard_and_wait(init: int, guard: socket.socket, hub_fd: int = -1, reaper: int = -1,
                    ns_flags: int = 0, server: int = 0) -> None:
    """The outer process's life after the launch: keep the session's view as built (see
    ``_viewguard``) until the init exits; a guarded path that cannot be covered again ends
    the session."""
    hub = socket.socket(fileno=hub_fd) if hub_fd >= 0 else None
    leaving = hands_over(ns_flags, reaper, hub_fd)
    try:
        got = _receive_guard(guard, hub)
    except OSError:
        got = None
    armed = got is not None and got[1] < 0  # ahead of the launch: the report pipe follows
    if not leaving and not armed:
        guard.close()
    if got is None or hub is None:
        if leaving:
            _leave_when_told(init, guard, reaper, ns_flags, server)
        elif reaper >= 0 and not _exits_within(init, REAPER_AFTER):
            _reaper.become_outer(reaper, init, None, ns_flags, server)
        _wait_for(init)
        return
    view, report = got[0], _Report(got[1])
    parent = os.getppid()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a gone daemon: _write_all copes
    pidfd = os.pidfd_open(init)
    # The session's 50 ms start at its launch: for an armed guard, when the report comes.
    later = time.monotonic() + REAPER_AFTER if reaper >= 0 and not armed else None
    watch = [hub.fileno(), pidfd, *((guard.fileno(),) if leaving or armed else ())]
    state = -1  # with ``leaving``: the memfd handed to the hub, until it says it took it
    while True:
        try:
            ready = _readable(watch, _left(later))
        except InterruptedError:
            continue
        if not ready and later is not None:  # the session goes on: the rest is the reaper's
            later = None
            if not leaving:  # else the init says when (it becomes the reaper about now)
                _reaper.become_outer(reaper, init, (hub.fileno(), view, report.fd), ns_flags,
                                     server)
            continue
        if pidfd in ready:
            break
        try:
            if report.fd < 0 and guard.fileno() in ready:  # armed: the launch has come
                if not report.take(guard, wait=True):
                    raise OSError(errno.EPIPE, "the init did not pass the report pipe")
                later = time.monotonic() + REAPER_AFTER if reaper >= 0 else None
                if not leaving:
                    watch.remove(guard.fileno())
                    guard.close()
                continue
            if leaving and guard.fileno() in ready:
                watch.remove(guard.fileno())
                if _word(guard) == b"h":  # the init no longer dies with us: over to the hub
                    state = _hand_over(hub, view, report.fd, pidfd)
                else:  # it stays Python, or is ending: so do we, as before
                    _reaper.become_outer(reaper, init, (hub.fileno(), view, report.fd),
                                         ns_flags, server)
                continue
            message = hub.recv(64)
            if not message:
                if _parent_gone(parent):
                    break  # the fork server is exiting: PDEATHSIG ends us and the session
                # Unwatched from now on: the session must not go on.
                raise OSError(errno.EPIPE, "the guard hub dropped this session")
            if message[:1] == b"E":
                raise OSError(struct.unpack("<i", message[1:5])[0] if len(message) >= 5
                              else errno.EIO, "the guard hub can no longer watch")
            if message[:1] == b"h" and state >= 0:
                os._exit(0)  # the hub guards the session from now on, with the state we left
            if message[:1] not in (b"c", b"k"):
                continue
            # "c": something changed; "k": a rewatch was taken, and what appeared between the
            # last check and the new watches (a file in a directory just made) shows no event.
            for op in view.check():
                report.write(record(REC_GUARD, op.kind, GUARD_RESTORED,
                                    op.target.encode()[:4000]))
            if message[:1] == b"c" or view.identities() != view.watched:
                _hub_watch(hub, view)  # a replaced or new directory on the way: a new inode
            if state >= 0:  # a change before the hub took the session: what it takes, now
                _write_state(state, view)
        except (OSError, GuardLost) as exc:
            why = (f"{exc.target}\0{exc.why}" if isinstance(exc, GuardLost)
                   else f"{exc.filename or ''}\0{exc.strerror or exc}")
            report.write(record(REC_GUARD, 0, GUARD_LOST, why.encode()[:4000]))
            os.kill(init, signal.SIGKILL)
            if report.fd < 0:  # armed: the report pipe, if the init passed it before it died
                _wait_for(init)
                report.take(guard, wait=False)
            break
    report.close()
    _wait_for(init)


class _Report:
    """Where the outer process writes what the view guard does: the exit pipe, or, for a
    guard armed ahead of its launch (``_arm_guard``), held until the launch passes that
    (``_send_report``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.fd >= 0:
            _write_all(self.fd, data)
        else:
            self._held.append(data)

    def take(self, guard: socket.socket, *, wait: bool) -> bool:
        """Read the report pipe from the init on ``guard`` and write there what was held;
        False if it is not there (the init has gone, or sent something else)."""
        try:
            data, fds, _, _ = socket.recv_fds(guard, 1, 1, 0 if wait else socket.MSG_DONTWAIT)
        except OSError:
            return False
        if data != _REPORT or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return False
        self.fd = fds[0]
        for data in self._held:
            _write_all(self.fd, data)
        self._held.clear()
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def _word(sock: socket.socket) -> bytes:
    """One byte from the init on the hand-over socket; b"" if it is gone."""
    try:
        return sock.recv(1)
    except OSError:
        return b""


def _leave_when_told(init: int, guard: socket.socket, reaper: int, ns_flags: int,
                     server: int) -> None:
    """Nothing to guard: exit once the init says it runs ``nono-reaper`` (``hands_over``); become
    ``nono-reaper --outer`` if it says it stays Python; return if it exits first."""
    pidfd = os.pidfd_open(init)
    while True:
        try:
            ready = _readable([pidfd, guard.fileno()], None)
        except InterruptedError:
            continue
        break
    word = b"" if pidfd in ready else _word(guard)
    os.close(pidfd)
    if word == b"h":
        os._exit(0)
    if word:
        _reaper.become_outer(reaper, init, None, ns_flags, server)


def _hand_over(hub: socket.socket, view: ViewGuard, report: int, pidfd: int) -> int:
    """``hands_over``: give the hub the session's guard (the init's pidfd, the report pipe, the
    guard's state in a memfd, our end of the hub socket); it answers ``h`` once it has
    taken them. Returns the memfd, which stays ours to update until then."""
    state = os.memfd_create("nono-view", os.MFD_CLOEXEC)
    _write_state(state, view)
    peer = os.dup(hub.fileno())
    try:
        socket.send_fds(hub, [b"H"], [pidfd, report, state, peer])
    finally:
        os.close(peer)
    return state


def _write_state(state: int, view: ViewGuard) -> None:
    data = _reaper.outer_config(view)
    os.ftruncate(state, 0)
    os.pwrite(state, data, 0)


def _parent_gone(parent: int, patience: float = 0.5) -> bool:
    """Whether our parent (the fork server) is exiting: its sockets close before the kernel
    reparents us, so give it ``patience`` seconds to show."""
    for _ in range(int(patience / 0.01)):
        if os.getppid() != parent:
            return True
        time.sleep(0.01)
    return False


def _exits_within(pid: int, seconds: float) -> bool:
    """Whether our child ``pid`` has exited, or does within ``seconds`` (not reaped)."""
    pidfd = os.pidfd_open(pid)
    try:
        ready = _readable([pidfd], seconds)
    finally:
        os.close(pidfd)
    return bool(ready)


def _wait_for(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0xFF00
        except InterruptedError:
            continue


def _close_except(keep: tuple[int, ...]) -> None:
    """Close every descriptor above 2 but ``keep`` (the fork server's socket must not leak)."""
    start = 3
    for fd in sorted(k for k in set(keep) if k >= 3):
        if fd > start:
            _libc.close_range(start, fd - 1)
        start = fd + 1
    _libc.close_range(start, 0xFFFFFFFF)


def _check_parent_alive(alive_r: int) -> None:
    if _readable([alive_r], 0):
        raise OSError(3, "launcher parent died before the program started")  # ESRCH
    os.close(alive_r)


def _setsid(plan: LaunchPlan, stdin: int) -> None:
    os.setsid()
    if plan.controlling_tty:
        _libc.set_controlling_tty(stdin)


#: Queued signals are counted per uid across every user namespace (a session's are charged to
#: its owner's count on the host as well): at the limit the owner's host processes get EAGAIN
#: from ``sigqueue`` and ``timer_create`` (each POSIX timer holds one). A session gets this
#: fraction of what it inherits, hard limit included.
SIGPENDING_FRACTION: Final = 8


def _rlimits(max_processes: int) -> None:
    _libc.set_no_core_dump()  # 1 byte: no dump, not even to a pipe core_pattern's helper
    finite = [v for v in resource.getrlimit(resource.RLIMIT_SIGPENDING)
              if v != resource.RLIM_INFINITY]
    if finite:  # an unlimited owner has no count to run out of
        share = min(min(finite), max(1, min(finite) // SIGPENDING_FRACTION))
        resource.setrlimit(resource.RLIMIT_SIGPENDING, (share, share))
    if max_processes:
        # Counted per user namespace (ucounts): this session's processes, not the user's.
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))


def _stdio(fds: Fds, reaper: int = -1, extra: tuple[int, ...] = ()
           ) -> tuple[int, int, int, tuple[int, ...]]:
    """Put the caller's descriptors on 0, 1, 2, then the launch pipe, the exit pipe and the
    control socket on 3, 4, 5, the reaper's memfd (if any) on ``_reaper.FD`` (6), and each
    of ``extra`` (those >= 0) next; return the new numbers of the launch pipe, the exit pipe,
    the control socket and of each of ``extra`` (-1 stays -1). All but 0, 1, 2 are
    close-on-exec: the program never gets them."""
    # dup everything first so that a target on 0..8 is never overwritten early
    src = [os.dup(fd) for fd in (*fds, reaper, *extra) if fd >= 0]
    for target, fd in enumerate(src):
        os.dup2(fd, target, inheritable=target < 3)
    placed: list[int] = []
    first = len(src) - sum(1 for fd in extra if fd >= 0)
    for fd in extra:
        placed.append(first if fd >= 0 else -1)
        first += fd >= 0
    return 3, 4, CONTROL_FD, tuple(placed)


def _hand_over_listener(control: int, port: int) -> None:
    """Create the proxy's listening socket inside the session's network namespace and give it
    to the daemon, which serves it: the only way out of the namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(512)
        socket.send_fds(socket.socket(fileno=os.dup(control)), [b"L" + struct.pack("<H", port)],
                        [listener.fileno()])


def _no_new_privs() -> None:
    _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)


FORWARDED = tuple(int(sig) for sig in (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGWINCH, signal.SIGCONT))


def run_init(plan: LaunchPlan, fds: Fds, alive_r: int, guard: socket.socket,
             reaper: int = -1, trees: tuple[int, ...] = (), done: int = -1,
             hub: int = -1) -> None:
    """Pid 1 of the session: confine itself step by step, fork the program, then stay as the
    namespace's init (``nono-reaper`` from ``reaper``, else this interpreter): forward
    signals to the program, reap orphans, report the program's exit status on the exit pipe
    and exit (which ends every process left in the namespace)."""
    prepare_init(alive_r, plan.ns_flags)
    confine_and_run(plan, fds, guard, reaper, trees, done, hub=hub)


def prepare_init(alive_r: int, ns_flags: int) -> None:
    """The plan-independent steps of the init (a warm launcher runs them ahead of time)."""
    _step("pdeathsig", _pdeathsig)
    if alive_r >= 0:  # (-1: our parent is the fork server, ``run_direct``)
        _step("pdeathsig", _check_parent_alive, alive_r)
    _step("setsid", os.setsid)
    if ns_flags & _libc.CLONE_NEWNS:
        _step("mounts", prepare_root)
        if ns_flags & _libc.CLONE_NEWUSER:
            _step("idmap", limit_inotify)
    else:
        _step("fork_init", _libc.prctl, _libc.PR_SET_CHILD_SUBREAPER, 1)
    _libc.prctl(_libc.PR_SET_DUMPABLE, 0)  # the program (same uid) must not read our memory
    if ns_flags & _libc.CLONE_NEWNET:
        _step("loopback", _libc.set_loopback_up)
    _step("keyring", _new_keyring, ns_flags)
    if ns_flags & _libc.CLONE_NEWUSER:
        # Only what execve could give back: the init keeps the capabilities it holds (the
        # view still to be built needs them) until step ``caps``.
        _step("caps", _libc.drop_bounding_set)


def _new_keyring(ns_flags: int) -> None:
    try:
        _libc.join_new_session_keyring()
    except OSError as exc:
        # Without namespaces we may be under a container's seccomp profile that refuses the
        # keyring calls (Docker's does): the program is then refused them too.
        if ns_flags or exc.errno not in (errno.EPERM, errno.ENOSYS):
            raise


def _end_descendants() -> None:
    """Kill and reap every process reparented to us (a child subreaper), until none is left:
    what a pid namespace's end does when there is no pid namespace."""
    while True:
        children: set[int] = set()
        try:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as f:
                    children.update(int(pid) for pid in f.read().split())
        except OSError:
            pass
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def confine_and_run(plan: LaunchPlan, fds: Fds, guard: socket.socket | None, reaper: int = -1,
                    trees: tuple[int, ...] = (), done: int = -1,
                    ready: Ready | None = None, hub: int = -1, pending: bytes = b"") -> None:
    """The init's launch-specific steps, then the program, then the init's life. ``done``
    (if any): the init's end of a socket whose other end the fork server polls; closed once
    the program runs (or by the init's exit), which tells the server that the launch no
    longer needs the CPUs and the warm launchers can be made again. ``ready``: the view
    (equal to the plan's) and ruleset a warm launcher prepared; the ruleset is rebuilt if a
    rule's path names another file now. ``hub``: our copy of the outer launcher's socket to
    the fork server's guard hub: kept (with ``guard``) when the outer is to leave once we
    run ``nono-reaper`` (``hands_over``). ``pending``: a warm launch's records from the fork
    server (the init's pid...), written on the launch pipe just before the program starts,
    or before the error if a step fails: the pipe's end, once the program runs, is the
    daemon's wake-up for the launch, straight from here."""
    handover = hands_over(plan.ns_flags, reaper, hub)
    if not handover and hub >= 0:
        os.close(hub)
    if ready is None:
        if plan.ns_flags & _libc.CLONE_NEWNS:
            _step("mounts", apply_mounts, plan.mounts, prepared=True, pinned=plan.pinned,
                  trees=trees)
        if plan.creation_refused:
            _step("createguard", pin_dirs, plan.creation_refused)
    for fd in trees:
        os.close(fd)
    ruleset = -1
    if ready is not None and ready.ruleset >= 0:
        if plan.landlock is not None and rules_current(plan.landlock, ready.rule_ids):
            ruleset = ready.ruleset
        else:
            os.close(ready.ruleset)
    if guard is None:  # no outer process: a view with nothing to guard (``direct``)
        pass
    elif ready is not None and ready.armed:
        _step("guard", _send_report, guard, plan.mounts, fds[4], handover)
    else:
        _step("guard", _start_guard, guard, plan.mounts, fds[4], handover)
    _step("chdir", enter_cwd, plan.cwd, plan.cwd_identity)
    _step("rlimits", _rlimits, plan.max_processes)
    pair = (hub, guard.fileno()) if handover and guard is not None else (-1, -1)
    try:
        launch_w, exit_w, control, (done, ruleset, *kept) = _stdio(fds, reaper,
                                                                   (done, ruleset, *pair))
    except OSError as exc:
        raise StepFailed("stdio", exc.errno or 0, "dup2") from None
    try:
        _confined_tail(plan, launch_w, exit_w, control, reaper >= 0, done, ruleset,
                       (kept[0], kept[1]) if handover else None, pending)
    except StepFailed as exc:
        # The caller's descriptor numbers are gone (close_fds): report on ours.
        _fail(launch_w, exc, pending)


def _confined_tail(plan: LaunchPlan, launch_w: int, exit_w: int, control: int,
                   reaper: bool = False, done: int = -1, ruleset: int = -1,
                   handover: tuple[int, int] | None = None, pending: bytes = b"") -> None:
    """``handover``: the init's lifeline and hand-over socket (``hands_over``), kept for
    ``nono-reaper``."""
    last = max(_reaper.FD if reaper else CONTROL_FD, done, ruleset, *(handover or ()))
    _step("close_fds", _libc.close_range, last + 1, 0xFFFFFFFF)
    if plan.proxy_port:
        _step("loopback", _hand_over_listener, control, plan.proxy_port)
    _step("no_new_privs", _no_new_privs)
    if plan.landlock is not None and plan.landlock.abi:
        if ruleset >= 0:  # built ahead by a warm launcher for this very view
            _step("landlock", restrict_self, ruleset)
            os.close(ruleset)
        else:
            _step("landlock", apply_plan, plan.landlock)
    _step("caps", _libc.drop_all_capabilities, bool(plan.ns_flags & _libc.CLONE_NEWUSER))
    if plan.seccomp:
        _step("seccomp", install_filter, plan.seccomp)
    supervisor: Supervisor | None = None
    # Until the init forwards them (``_serve_as_init``), the signals it forwards wait here:
    # pid 1 of a namespace drops a signal it has no handler for, so a stop that came between
    # the program's start and the handlers would be lost. The program starts unblocked.
    _sigmask(signal.SIG_BLOCK, FORWARDED)
    # A warm launch's records before the program exists: once it runs it may kill us before
    # we could write them (it can where it shares no pid namespace with us), and the daemon
    # would take the launch for failed (no pid) while its program ran. The daemon reads the
    # pipe to its end, which comes once the program runs, as before.
    _write_all(launch_w, pending)
    try:
        if plan.creation_refused:
            pid, supervisor = _fork_guarded(plan, launch_w, exit_w)
        elif plan.controlling_tty or not reaper:  # (no reaper to spawn through: forked)
            pid = _fork_program(plan, launch_w, exit_w)
        else:
            pid = _spawn_program(plan, launch_w)
    except StepFailed as exc:
        _fail(launch_w, exc)  # the records are on the pipe already
    os.close(launch_w)
    if done >= 0:
        os.close(done)
    for fd in (0, 1, 2):
        os.close(fd)  # the terminal belongs to the program now
    _serve_as_init(pid, exit_w, control, supervisor, plan.ns_flags, reaper, handover)


def _writable_roots(plan: LaunchPlan) -> list[str]:
    """The directories where the first Landlock layer lets the session create entries."""
    rules = plan.landlock.rules if plan.landlock is not None else ()
    return [os.fsdecode(path) for path, allowed, is_file in rules
            if not is_file and allowed & MAKE_RIGHTS]


def _fork_guarded(plan: LaunchPlan, launch_w: int, exit_w: int) -> tuple[int, Supervisor | None]:
    """Fork the program under the creation guard: it confines itself further and hands the
    listener over; the init (not under that filter) serves it."""
    abi = plan.landlock.abi if plan.landlock is not None else 0
    guard = _step("createguard", prepare, plan.creation_refused, _writable_roots(plan), abi)
    ours, theirs = socket.socketpair()
    try:
        pid = _fork_program(plan, launch_w, exit_w, (guard, theirs))
    finally:
        theirs.close()
        os.close(guard.ruleset)
    with ours:
        _, fds, _, _ = socket.recv_fds(ours, 16, 1)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return pid, None  # the program failed before exec and reported why
    os.umask(0)  # emulated creations apply the program's umask themselves
    return pid, Supervisor(fds[0], guard, native_arch(), Domains(pid))


def _fork_program(plan: LaunchPlan, launch_w: int, exit_w: int,
                  guarded: tuple[Guard, socket.socket] | None = None) -> int:
    """Fork the program: it makes the terminal its controlling one, confines itself under
    the creation guard, and takes its descriptor limit, none of which the init may do for
    it (a spawned program would inherit the init's limit, and the init keep the
    program's)."""
    try:
        pid = os.fork()
    except OSError as exc:
        raise StepFailed("exec", exc.errno or 0, "fork") from None
    if pid == 0:
        try:
            os.close(exit_w)
            _step("setsid", _program_session, plan)
            if guarded is not None:
                _step("createguard", confine_program, guarded[0], plan.creation_filter,
                      guarded[1])
            _step("rlimits", _program_limits)  # after the listener's pass, as the init's
            _sigmask(signal.SIG_SETMASK, ())
            os.execve(plan.executable, list(plan.argv), _env_dict(plan.env))
        except OSError as exc:
            _fail(launch_w, StepFailed("exec", exc.errno or 0, plan.executable))
        except StepFailed as exc:
            _fail(launch_w, exc)
        os._exit(EXIT_LAUNCH_FAILED)
    return pid


def _spawn_program(plan: LaunchPlan, launch_w: int) -> int:
    """Spawn the program through ``nono-reaper --exec`` (its memfd on ``_reaper.FD``): it
    takes the program's descriptor limit in the child alone and execs the program, so this
    init (and the nono-reaper it becomes) keeps the fork server's for its passes of the
    forwards' sockets (known2; ``os.posix_spawn`` cannot set a limit in the child, and a
    fork copies our page tables). vfork-style: a failure of the spawn itself is an OSError;
    one of the limit or the program's exec comes as a record on ``launch_w``, as a forked
    program's."""
    soft, hard = program_nofile(INHERITED_NOFILE or resource.getrlimit(resource.RLIMIT_NOFILE))
    argv = ["nono-reaper", "--exec", str(launch_w), str(soft), str(hard), plan.executable,
            *plan.argv]
    try:
        return os.posix_spawn(f"/proc/self/fd/{_reaper.FD}", argv, _env_dict(plan.env),
                              file_actions=[(os.POSIX_SPAWN_DUP2, launch_w, launch_w)],
                              setsid=True, setsigmask=())
    except OSError as exc:
        raise StepFailed("exec", exc.errno or 0, plan.executable) from None


def _program_session(plan: LaunchPlan) -> None:
    os.setsid()
    if plan.controlling_tty:
        _libc.set_controlling_tty(0)


def _serve_as_init(program: int, exit_w: int, control: int,
                   supervisor: Supervisor | None = None, ns_flags: int = -1,
                   reaper: bool = False, handover: tuple[int, int] | None = None) -> None:
    """Forward signals, reap, and answer the daemon's requests on ``control``: ``C<port>``
    opens a TCP connection to 127.0.0.1:<port> inside the session's network namespace (the
    daemon cannot enter it) and returns the socket, for ``--listen-port`` forwarding. With
    the creation guard, answer the program's creation syscalls too (``_createserve``).
    With ``reaper`` (its memfd on ``_reaper.FD``), become ``nono-reaper`` if the program
    still runs after ``REAPER_AFTER`` seconds."""

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(program, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        _setsignal(sig, forward)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _setsignal(signal.SIGCHLD, lambda _s, _f: None)  # so that SIGCHLD wakes select
    signal.set_wakeup_fd(wake_w)
    _sigmask(signal.SIG_UNBLOCK, FORWARDED)  # a stop that came early: now
    chan = socket.socket(fileno=control)
    watch: list[int] = [wake_r, control]
    if supervisor is not None:
        watch.append(supervisor.fileno())
    status = 0xFF00
    later = time.monotonic() + REAPER_AFTER if reaper else None
    while True:
        done, status = _reap_until(program, status)
        if done:
            break
        try:
            ready = _readable(watch, _left(later))
        except InterruptedError:
            continue
        if not ready and later is not None:
            later = None
            _become_reaper(program, exit_w, control, ns_flags, supervisor, handover)
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        if control in ready and not _answer(chan):
            watch.remove(control)  # the daemon went away; PDEATHSIG will follow
        if supervisor is not None and supervisor.fileno() in ready:
            try:
                supervisor.serve_one()
            except OSError:
                # The listener broke: closing it makes every creation syscall still to come
                # fail (ENOSYS) rather than wait forever.
                watch.remove(supervisor.fileno())
                os.close(supervisor.fileno())
                supervisor = None
    if not ns_flags:
        _end_descendants()  # what the pid namespace's end would do
    if os.WIFSIGNALED(status):
        _write_all(exit_w, record(REC_EXIT, -1, os.WTERMSIG(status)))
    else:
        _write_all(exit_w, record(REC_EXIT, os.WEXITSTATUS(status), 0))
    os._exit(0)


#: How long the outer process and the init stay Python before they become ``nono-reaper``:
#: a session that ends sooner (a quick command) never pays for the two ``execve``.
REAPER_AFTER = 0.05


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _readable(fds: list[int], timeout: float | None) -> list[int]:
    """Those of ``fds`` readable, at their end or in error, within ``timeout`` seconds (None:
    no limit). ``poll``, never ``select``: a launcher forked from a fork server that holds
    many sessions' descriptors has descriptors numbered past ``select``'s 1024."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else math.ceil(timeout * 1000)
    return [fd for fd, _ in poller.poll(ms)]


def _become_reaper(program: int, exit_w: int, control: int, ns_flags: int,
                   supervisor: Supervisor | None,
                   handover: tuple[int, int] | None = None) -> None:
    """The init becomes ``nono-reaper``; the signals it forwards (and SIGCHLD) wait, blocked,
    for the reaper's signalfd (blocking runs the handlers of those already caught). Returns
    only if it cannot: the Python loop goes on, and the outer launcher, told so, stays."""
    held = (*FORWARDED, int(signal.SIGCHLD))
    _sigmask(signal.SIG_BLOCK, held)
    _reaper.become(program, exit_w, control, ns_flags, supervisor, handover)
    _sigmask(signal.SIG_UNBLOCK, held)
    if handover is not None:
        with socket.socket(fileno=handover[1]) as outer:
            try:
                outer.send(b"p")
            except OSError:
                pass  # the outer is gone: so are we, by its parent-death signal


def _reap_until(program: int, status: int) -> tuple[bool, int]:
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True, status
        if pid == 0:
            return False, status
        if pid == program:
            return True, st


def _answer(chan: socket.socket) -> bool:
    try:
        msg = chan.recv(64)
    except OSError:
        return False
    if not msg:
        return False
    if len(msg) == 3 and msg[:1] == b"C":
        (port,) = struct.unpack("<H", msg[1:])
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            conn.settimeout(5)
            conn.connect(("127.0.0.1", port))
            socket.send_fds(chan, [b"K"], [conn.fileno()])
        except OSError as exc:
            try:
                chan.send(b"E" + struct.pack("<i", exc.errno or 0))
            except OSError:
                return False
        finally:
            conn.close()
    return True


def _env_dict(env: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out
