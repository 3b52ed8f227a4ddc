"""The launcher: the only code that runs between fork and execve.

It runs in a child of the fork server, single-threaded, on a ``LaunchPlan`` computed before
the fork, and imports only the standard modules the design allows plus our ctypes wrappers.
The steps, in order (``STEPS`` names them in error records):

  outer process (forked from the fork server, stays outside the session's pid namespace)
    1. pdeathsig    die with the fork server
    2. user         as root for another user: drop groups, gid and uid
    3. unshare      new user, mount, pid, ipc, uts, cgroup and (if restricted) net namespaces
    4. idmap        map the uid and gid to themselves, setgroups deny
    5. fork_init    fork the program's process: pid 1 of the new pid namespace
  program process
    6. setsid       new session; the terminal becomes controlling only if asked
    7. mounts       the new root (see ``_mounts``)
    8. loopback     ``lo`` up in the private network namespace
    9. keyring      a fresh session keyring (the inherited one stays out of reach)
   10. chdir        the working directory, as seen inside
   11. rlimits      no core dumps
   12. stdio        the caller's stdin/stdout/stderr on 0, 1, 2
   13. close_fds    every other descriptor closed (close_range)
   14. no_new_privs PR_SET_NO_NEW_PRIVS
   15. landlock     filesystem (and fallback network) rules, scopes
   16. caps         every capability dropped, securebits locked
   17. seccomp      the syscall filter, last so nothing above needs to pass it
   18. exec         execve

Any failure writes a record ``(step, errno, detail)`` to the CLOEXEC launch pipe and exits
with status 126: the program never runs unconfined. The outer process reports the program's
pid first, and its exit status on a second pipe when it ends.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import struct

import msgspec

from . import _libc
from ._landlock import LandlockPlan, apply_plan
from ._mounts import MountOp, apply_mounts
from ._seccomp import install_filter

STEPS = (
    "fork", "pdeathsig", "user", "unshare", "idmap", "fork_init", "setsid", "mounts",
    "loopback", "keyring", "chdir", "rlimits", "stdio", "close_fds", "no_new_privs",
    "landlock", "caps", "seccomp", "exec",
)
RECORD = struct.Struct("<BiiI")
REC_PID = 1
REC_ERROR = 2
REC_EXIT = 3
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


def _step(name: str, fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        detail = exc.filename if isinstance(exc.filename, str) else (exc.strerror or "")
        raise StepFailed(name, exc.errno or 0, str(detail)) from None
    except StepFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - any surprise is a failed step, never a launch
        raise StepFailed(name, 0, f"{type(exc).__name__}: {exc}") from None


def _fail(launch_w: int, exc: StepFailed) -> None:
    _write_all(launch_w, record(REC_ERROR, STEPS.index(exc.step), exc.err,
                                exc.detail.encode("utf-8", "replace")[:4000]))
    os._exit(EXIT_LAUNCH_FAILED)


def _reset_signals() -> None:
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _pdeathsig() -> None:
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


def _switch_user(plan: LaunchPlan) -> None:
    os.setgroups([])
    os.setresgid(plan.gid, plan.gid, plan.gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)


def _idmap(plan: LaunchPlan) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{plan.uid} {plan.uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{plan.gid} {plan.gid} 1")


def run_outer(plan: LaunchPlan, fds: tuple[int, int, int, int, int]) -> None:
    """Body of the fork server's child. Never returns."""
    stdin, stdout, stderr, launch_w, exit_w = fds
    try:
        _step("fork", _close_except, fds)
        _step("pdeathsig", _pdeathsig)
        _reset_signals()
        if plan.switch_user:
            _step("user", _switch_user, plan)
        _step("unshare", _libc.unshare, plan.ns_flags)
        _step("idmap", _idmap, plan)
        alive_r, alive_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            raise StepFailed("fork_init", exc.errno or 0, "fork") from None
    except StepFailed as exc:
        _fail(launch_w, exc)
        raise  # unreachable: _fail exits
    if pid == 0:
        os.close(alive_w)
        os.close(exit_w)
        try:
            run_program(plan, (stdin, stdout, stderr, launch_w), alive_r)
        except StepFailed as exc:
            _fail(launch_w, exc)
        os._exit(EXIT_LAUNCH_FAILED)
    os.close(alive_r)
    _write_all(launch_w, record(REC_PID, pid, 0))
    for fd in (stdin, stdout, stderr, launch_w):
        if fd > 2:
            os.close(fd)
    for fd in (0, 1, 2):
        os.close(fd)
    _libc.prctl(_libc.PR_SET_DUMPABLE, 0)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0xFF00
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        _write_all(exit_w, record(REC_EXIT, -1, os.WTERMSIG(status)))
    else:
        _write_all(exit_w, record(REC_EXIT, os.WEXITSTATUS(status), 0))
    os._exit(0)


def _close_except(keep: tuple[int, ...]) -> None:
    """Close every descriptor above 2 but ``keep`` (the fork server's socket must not leak)."""
    start = 3
    for fd in sorted(k for k in set(keep) if k >= 3):
        if fd > start:
            _libc.close_range(start, fd - 1)
        start = fd + 1
    _libc.close_range(start, 0xFFFFFFFF)


def _check_parent_alive(alive_r: int) -> None:
    poller = select.poll()
    poller.register(alive_r, select.POLLIN | select.POLLHUP)
    if poller.poll(0):
        raise OSError(3, "launcher parent died before the program started")  # ESRCH
    os.close(alive_r)


def _setsid(plan: LaunchPlan, stdin: int) -> None:
    os.setsid()
    if plan.controlling_tty:
        _libc.set_controlling_tty(stdin)


def _rlimits() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _stdio(stdin: int, stdout: int, stderr: int, launch_w: int) -> int:
    """Put the caller's descriptors on 0, 1, 2 and the launch pipe on 3 (close-on-exec)."""
    moved = os.dup(launch_w) if launch_w < 3 else launch_w
    # dup everything above 2 first so that a target on 0..2 is never overwritten early
    src = [os.dup(fd) for fd in (stdin, stdout, stderr)]
    for target, fd in enumerate(src):
        os.dup2(fd, target, inheritable=True)
    os.dup2(moved, 3, inheritable=False)
    return 3


def _no_new_privs() -> None:
    _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)


def run_program(plan: LaunchPlan, fds: tuple[int, int, int, int], alive_r: int) -> None:
    """Pid 1 of the session: confine itself step by step, then exec. Never returns."""
    stdin, stdout, stderr, launch_w = fds
    _step("pdeathsig", _pdeathsig)
    _step("pdeathsig", _check_parent_alive, alive_r)
    _step("setsid", _setsid, plan, stdin)
    _step("mounts", apply_mounts, plan.mounts)
    if plan.loopback:
        _step("loopback", _libc.set_loopback_up)
    _step("keyring", _libc.join_new_session_keyring)
    _step("chdir", os.chdir, plan.cwd)
    _step("rlimits", _rlimits)
    try:
        launch_w = _stdio(stdin, stdout, stderr, launch_w)
    except OSError as exc:
        raise StepFailed("stdio", exc.errno or 0, "dup2") from None
    _step("close_fds", _libc.close_range, 4, 0xFFFFFFFF)
    _step("no_new_privs", _no_new_privs)
    if plan.landlock is not None and plan.landlock.abi:
        _step("landlock", apply_plan, plan.landlock)
    _step("caps", _libc.drop_all_capabilities)
    if plan.seccomp:
        _step("seccomp", install_filter, plan.seccomp)
    try:
        os.execve(plan.executable, list(plan.argv), _env_dict(plan.env))
    except OSError as exc:
        raise StepFailed("exec", exc.errno or 0, plan.executable) from None


def _env_dict(env: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out
