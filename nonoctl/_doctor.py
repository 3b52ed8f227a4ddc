"""``nonoctl doctor``: probe this machine as the daemon would, and say what each gap weakens.

Every probe asks the kernel directly (a syscall, a forked child, a ``/proc`` or ``/sys``
file); nothing is inferred from the distribution's name. Each finding says which protection it
affects and what to do about it.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

from nonod import protocol as p

from ._output import Output

Status = Literal["ok", "warn", "fail", "info"]

_SYS_LANDLOCK_CREATE_RULESET: Final = 444  # same number on x86_64 and aarch64
_LANDLOCK_CREATE_RULESET_VERSION: Final = 1
_CLONE_NEWUSER: Final = 0x10000000
_CLONE_NEWNS: Final = 0x00020000
_MS_REC: Final = 0x4000
_MS_PRIVATE: Final = 1 << 18
_NOBODY: Final = 65534


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    weakens: str = ""
    fix: str = ""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def probe_landlock() -> Finding:
    libc = _libc()
    abi = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    if abi > 0:
        notes = []
        if abi < 4:
            notes.append("no TCP connect/bind rules (ABI 4)")
        if abi < 6:
            notes.append("no signal/abstract-socket scopes (ABI 6)")
        if notes:
            return Finding("landlock", "warn", f"ABI {abi}: " + "; ".join(notes),
                           "the fallback network rules and IPC scoping",
                           "a newer kernel (6.7+ for ABI 4, 6.12+ for ABI 6)")
        return Finding("landlock", "ok", f"ABI {abi}")
    err = ctypes.get_errno()
    reason = {38: "not built into this kernel (ENOSYS)",
              95: "built in but disabled at boot (EOPNOTSUPP)"}.get(err, os.strerror(err))
    return Finding("landlock", "fail", reason,
                   "all filesystem confinement: launches are refused",
                   "boot with lsm=landlock,... (CONFIG_SECURITY_LANDLOCK=y)")


def _userns_child(drop_to_nobody: bool) -> int:
    """In a forked child: 0 if a user+mount namespace works and mounts in it are allowed."""
    libc = _libc()
    if drop_to_nobody:
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
        return 10 + min(ctypes.get_errno(), 100)
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return 120
    return 0


def probe_userns() -> list[Finding]:
    findings: list[Finding] = []
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    maximum = _read("/proc/sys/user/max_user_namespaces")
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    pid = os.fork()
    if pid == 0:  # nonoctl is single-threaded: forking is safe
        code = 1
        try:
            code = _userns_child(drop_to_nobody=os.geteuid() == 0)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    weakens = ("sessions run in the landlock-only mode ([sandbox] mode = \"auto\"), reported "
               "partial: no mount, pid, ipc or network namespace; Landlock on the host's tree, "
               "TCP only to the proxy, seccomp; profiles that need a mount namespace "
               "(persistence files, trust pins, the creation guard, a private /tmp) are refused "
               "unless they accept it (\"nonod\": {\"allow_degraded\": [...]}); see "
               "docs/sandbox.md, \"Without user namespaces\"")
    if code == 0:
        findings.append(Finding("user namespaces", "ok",
                                "an unprivileged process can create user+mount namespaces"))
    else:
        causes = []
        if clone == "0":
            causes.append("kernel.unprivileged_userns_clone = 0")
        if maximum == "0":
            causes.append("user.max_user_namespaces = 0")
        if apparmor == "1":
            causes.append("AppArmor restricts unprivileged user namespaces "
                          "(kernel.apparmor_restrict_unprivileged_userns = 1)")
        if code == 120:
            causes.append("mounting inside the new namespace was denied")
        elif code > 10:
            causes.append(f"unshare failed: {os.strerror(code - 10)}")
        if not causes:
            causes.append("a seccomp profile (container runtime?) may block unshare")
        fix = ("sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 add an AppArmor "
               "profile allowing userns for the daemon's interpreter; in a container, allow "
               "unshare/mount in its seccomp profile; or run the system daemon (root) "
               "outside a container; or accept the landlock-only mode")
        findings.append(Finding("user namespaces", "warn", "; ".join(causes), weakens, fix))
    return findings


def probe_seccomp() -> Finding:
    status = _read("/proc/self/status") or ""
    mode = next((line.split()[1] for line in status.splitlines()
                 if line.startswith("Seccomp:")), "?")
    actions = _read("/proc/sys/kernel/seccomp/actions_avail")
    if actions is None:
        return Finding("seccomp", "fail", "seccomp filters are not available",
                       "the system-call filter (ptrace, keyctl, io_uring, TIOCSTI...)",
                       "a kernel with CONFIG_SECCOMP_FILTER=y")
    if mode == "2":
        return Finding("seccomp", "info",
                       "nonoctl already runs under a seccomp filter (a container?); "
                       "it may block what the launcher needs",
                       fix="if launches fail at 'unshare' or 'mounts', relax that profile")
    return Finding("seccomp", "ok", f"filters available ({actions})")


def probe_cgroup() -> Finding:
    controllers = _read("/sys/fs/cgroup/cgroup.controllers")
    if controllers is None:
        return Finding("cgroup v2", "warn", "no unified cgroup hierarchy at /sys/fs/cgroup",
                       "sessions use cgroup v1 where it is mounted (see `cgroups`): each start "
                       "pays for moving its init, and an OOM kill takes one process (the "
                       "daemon then ends the rest)",
                       "boot with systemd.unified_cgroup_hierarchy=1")
    return Finding("cgroup v2", "ok", f"controllers: {controllers or '(none delegated)'}")


def probe_cgroups() -> Finding:
    """Where a daemon running as this user, from this cgroup, would put its sessions' groups
    (the daemon logs its own choice at start: ``session cgroups``)."""
    from nonod.cgroups import choose, current_hierarchies

    backend, why = choose(current_hierarchies(), "doctor")
    if backend is None:
        return Finding("cgroups", "warn", why,
                       "per-session limits (memory, pids, CPU, I/O) and accounting: a launch "
                       "that asks for a limit is refused unless its profile accepts degraded "
                       "limits",
                       "run the daemon with a cgroup subtree of its own (Delegate=yes in its "
                       "unit, or systemd-run --user --scope -p Delegate=yes)")
    return Finding("cgroups", "ok", f"sessions get their own groups: {backend.describe()}")


def probe_inotify() -> Finding:
    """The daemon's fork server holds one inotify instance for every session's view guard
    (a few watches per session), counted against the daemon user's limits."""
    instances = _int(_read("/proc/sys/fs/inotify/max_user_instances"))
    watches = _int(_read("/proc/sys/fs/inotify/max_user_watches"))
    used = _inotify_instances_of(os.getuid())
    detail = (f"max_user_instances = {instances} (this user holds {used}; the daemon needs "
              f"one), max_user_watches = {watches} (a few per session)")
    if instances - used < 1 or watches < 1024:
        return Finding("inotify", "warn", detail,
                       "a daemon started now could not guard sessions: launches would be "
                       "refused at step `guard`",
                       "sysctl fs.inotify.max_user_instances=1024 (and in /etc/sysctl.d/)")
    return Finding("inotify", "ok", detail)


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _inotify_instances_of(uid: int) -> int:
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != uid:
                continue
            for fd in (proc / "fd").iterdir():
                try:
                    if os.readlink(fd) == "anon_inode:inotify":
                        count += 1
                except OSError:
                    continue
        except OSError:
            continue
    return count


def probe_tiocsti() -> Finding:
    value = _read("/proc/sys/dev/tty/legacy_tiocsti")
    if value == "0":
        return Finding("TIOCSTI", "ok", "legacy_tiocsti = 0: the kernel refuses TIOCSTI")
    return Finding("TIOCSTI", "info",
                   "TIOCSTI is allowed by the kernel; nonod's seccomp filter refuses it "
                   "inside sessions" + ("" if value else " (no legacy_tiocsti sysctl)"),
                   fix="sysctl dev.tty.legacy_tiocsti=0 closes it for everything else too")


def probe_keychain() -> Finding:
    bus = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    has_bus = bool(bus) or bool(runtime and Path(runtime, "bus").exists())
    try:
        import importlib.util

        has_keyring = importlib.util.find_spec("keyring") is not None
    except (ImportError, ValueError):
        has_keyring = False
    if has_keyring and has_bus:
        return Finding("keychain", "ok", "keyring installed; a session bus is reachable "
                       "(Secret Service)")
    missing = []
    if not has_keyring:
        missing.append("the keyring package is not installed")
    if not has_bus:
        missing.append("no D-Bus session bus (Secret Service unreachable)")
    return Finding("keychain", "warn", "; ".join(missing),
                   "credentials from the keychain (env://, file:// and systemd credentials "
                   "still work)",
                   "install gnome-keyring or KeePassXC's Secret Service, and run nonod in "
                   "your login session")


def probe_daemon(socket: str | None, system: bool) -> Finding:
    from nonod.control._socket import client_socket_path

    from .client import ClientError, Connection, RemoteError

    path = socket or client_socket_path(system=system)
    try:
        with Connection.open(path, timeout=3.0) as conn:
            reply = conn.request(p.Status())
    except (ClientError, RemoteError) as exc:
        return Finding("daemon", "info", f"{path}: {exc.message}",
                       fix="`nonoctl daemon start` (or any command) starts a user daemon")
    if isinstance(reply, p.DaemonStatus):
        detail = f"nonod {reply.version} (pid {reply.pid}) on {path}; launcher {reply.launcher}"
        if "landlock-only" in reply.launcher:
            return Finding("daemon", "warn", detail,
                           "every session is partially enforced (landlock-only mode: no "
                           "namespaces)", "see the user namespaces finding")
        return Finding("daemon", "ok", detail)
    return Finding("daemon", "warn", f"unexpected reply from {path}")


def run_doctor(out: Output, *, socket: str | None, system: bool) -> int:
    findings = [probe_landlock(), *probe_userns(), probe_seccomp(), probe_cgroup(),
                probe_cgroups(),
                probe_inotify(), probe_tiocsti(), probe_keychain(),
                probe_daemon(socket, system)]
    if out.json_mode:
        out.json([asdict(f) for f in findings])
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "info"}
        for f in findings:
            out.line(f"[{marks[f.status]}] {f.check}: {f.detail}")
            if f.weakens:
                out.line(f"       weakens: {f.weakens}")
            if f.fix:
                out.line(f"       fix: {f.fix}")
    return 1 if any(f.status == "fail" for f in findings) else 0
