"""macOS: the resolved policy rendered as a Seatbelt (SBPL) profile, and applied.

Nothing in this module has run on a Mac. ``render_sbpl`` is a pure function of its arguments
(it never looks at the filesystem) and is tested against golden profiles on Linux;
``apply_seatbelt`` is a thin ctypes call that only works on Darwin. ``docs/macos.md`` says what
the profile does, how it maps from the Linux layers and what is not equivalent.

The profile, in order (Seatbelt uses the last rule that matches, so every deny comes after the
allows it narrows; the denials of the policy come last of all):

1. ``(version 1)`` and ``(deny default)``: anything not allowed below is refused;
2. processes: fork, exec only from readable paths, process information and signals within
   the session's own sandbox (``signal_mode``, ``process_info_mode``);
3. system services: ``sysctl-read``, a short list of Mach services a command-line program
   needs (no Keychain, pasteboard or launch services), POSIX shared memory and semaphores;
4. the base file set (the macOS counterpart of the Linux ``base_grants`` and system groups):
   the OS's own read-only trees, the dyld cache, a few ``/private/etc`` files and device nodes;
5. the policy's grants: reads (with exec and library mapping), then writes;
6. persistence files inside writable grants (git hooks, ``.git/config``, rc files...): writes
   refused again, whether or not the file exists yet;
7. network: nothing (blocked), TCP to the daemon's proxy on ``localhost:<port>`` only
   (restricted), or IP without limits (unrestricted); pathname Unix sockets only with
   ``allow_unix_sockets`` and only below grants;
8. the policy's denials: reads, writes and socket connects refused below each denied path.
"""

from __future__ import annotations

import ctypes
import os
import posixpath
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple, final

from ..errors import EnforcementUnavailable, LaunchError, PolicyError
from ..policy import Grant, ResolvedPolicy
from ._mounts import HOME_RC_FILES, PERSISTENCE_NAMES, TRUST_FILES

# On macOS these three top-level names are symlinks into /private. Seatbelt matches the path of
# the file actually reached, so a rule must name the /private form or it never matches (and a
# deny that never matches is a hole). A policy resolved on a Mac already has the /private form;
# one resolved elsewhere is moved here.
_PRIVATE_ALIASES: Final = ("/etc", "/tmp", "/var")

# What every program needs to start on macOS: the OS's own read-only trees, where programs
# and libraries are executed and mapped from (the dyld shared cache moved between releases,
# hence three places for it), then data-only trees and the files libc reads.
BASE_EXEC_DIRS: Final = (
    "/System/Library",
    "/System/Cryptexes/OS",
    "/System/Volumes/Preboot/Cryptexes/OS",
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/usr/libexec",
    "/private/var/db/dyld",
)
BASE_READ_DIRS: Final = (
    "/usr/share",
    "/private/var/db/timezone",
    "/private/etc/ssl",
)
BASE_READ_FILES: Final = (
    "/private/etc/localtime",
    "/private/etc/hosts",
    "/private/etc/services",
    "/private/etc/protocols",
    "/private/etc/passwd",
    "/private/etc/group",
    "/private/var/select/sh",  # /bin/sh reads which shell it is
    "/dev/random",
    "/dev/urandom",
)
# Device nodes a program may open for writing too (Linux: the sandbox's own minimal /dev).
BASE_DEVICES: Final = ("/dev/null", "/dev/zero", "/dev/tty", "/dev/dtracehelper")

# Mach services (``mach-lookup``) allowed in every session: logging, notifications, user and
# group look-ups, preferences, system configuration. Left out on purpose: the Keychain
# (com.apple.SecurityServer, securityd), the pasteboard, launch services, FSEvents, tccd.
MACH_SERVICES: Final = (
    "com.apple.cfprefsd.agent",
    "com.apple.cfprefsd.daemon",
    "com.apple.logd",
    "com.apple.system.logger",
    "com.apple.system.notification_center",
    "com.apple.system.opendirectoryd.libinfo",
    "com.apple.system.opendirectoryd.membership",
    "com.apple.SystemConfiguration.configd",
)
# Only with unrestricted network: name resolution and certificate evaluation. Both services
# make network requests on the program's behalf (trustd fetches OCSP and CRL URLs named in a
# certificate the program hands it), so with a restricted network they would be a way out
# that the proxy never sees.
MACH_SERVICES_NETWORK: Final = (
    "com.apple.dnssd.service",
    "com.apple.trustd",
    "com.apple.trustd.agent",
)
MDNS_SOCKET: Final = "/private/var/run/mDNSResponder"

_SIGNAL_TARGET: Final = {
    "isolated": "(allow signal (target same-sandbox))",
    "allow_same_sandbox": "(allow signal (target same-sandbox))",
    "allow_all": "(allow signal)",
}
_PROCESS_INFO: Final = {
    "isolated": "(allow process-info* (target same-sandbox))",
    "allow_same_sandbox": "(allow process-info* (target same-sandbox))",
    "allow_all": "(allow process-info*)",
}


def sbpl_string(text: str) -> str:
    """``text`` as an SBPL string literal: double quotes around it, ``\\`` and ``"`` escaped.

    Control characters (NUL, newline, tab..., DEL and the C1 range) are refused rather than
    stripped or escaped: a rule for a different path than the one the policy names is worse
    than no profile. So are lone surrogates (bytes that were not UTF-8), for the same reason.
    """
    for ch in text:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            raise PolicyError(
                f"path {text!r} contains the control character 0x{ord(ch):02x}, which a "
                "Seatbelt profile cannot name",
                hint="rename the file or directory, or leave it out of the profile",
            )
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise PolicyError(
                f"path {text!r} is not valid UTF-8, which a Seatbelt profile cannot name",
                hint="rename the file or directory, or leave it out of the profile",
            )
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def macos_path(path: str) -> str:
    """The path Seatbelt sees for ``path``: absolute, normalised, ``/etc``, ``/tmp`` and
    ``/var`` moved to ``/private``. Raises PolicyError for a relative or unnormalised path
    (the resolver makes every path canonical; anything else is a bug upstream)."""
    if not path.startswith("/") or path.startswith("//"):
        raise PolicyError(f"Seatbelt rules need absolute paths, got {path!r}")
    if posixpath.normpath(path) != path:
        raise PolicyError(f"Seatbelt rules need canonical paths, got {path!r}")
    for alias in _PRIVATE_ALIASES:
        if path == alias or path.startswith(alias + "/"):
            return "/private" + path
    return path


def _under(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _subpath(path: str) -> str:
    return f"(subpath {sbpl_string(path)})"


def _literal(path: str) -> str:
    return f"(literal {sbpl_string(path)})"


def _filter(path: str, is_file: bool) -> str:
    return _literal(path) if is_file else _subpath(path)


def _comment(text: str) -> str:
    """A comment line; anything unprintable in ``text`` (a profile's name) becomes ``?``."""
    return "; " + "".join(ch if ch.isprintable() else "?" for ch in text)


def _ancestors(paths: Iterable[str]) -> list[str]:
    """Every proper ancestor of ``paths`` except ``/``, sorted: programs ``lstat`` each
    component on the way to a granted path (``realpath``, ``getcwd``, Python's imports)."""
    out: set[str] = set()
    for path in paths:
        parent = posixpath.dirname(path)
        while parent not in ("/", "") and parent not in out:
            out.add(parent)
            parent = posixpath.dirname(parent)
    return sorted(out)


def _persistence(writable_dirs: Sequence[str], home: str, exempt: frozenset[str],
                 workdir: str | None = None, extra: tuple[str, ...] = ()
                 ) -> tuple[list[str], list[str]]:
    """(protected paths, their intermediate directories) inside writable directory grants.

    The same names as the Linux read-only binds (``_mounts.PERSISTENCE_NAMES``, the home rc
    files that lie inside the grant, the project trust policy when ``workdir`` does).
    Intermediate directories (``.git``, ``.config``) get their own literal write denial, so
    that the directory cannot be renamed away and replaced by one with planted contents.
    """
    protected: list[str] = []
    between: list[str] = []
    for wdir in writable_dirs:
        names = list(PERSISTENCE_NAMES)
        names += [posixpath.relpath(rc, wdir)
                  for rc in (posixpath.join(home, name) for name in HOME_RC_FILES)
                  if _under(rc, wdir)]
        if workdir is not None and _under(workdir, wdir):
            names += [posixpath.relpath(posixpath.join(workdir, f), wdir) for f in TRUST_FILES]
        names += [posixpath.relpath(f, wdir) for f in extra if _under(f, wdir)]
        for name in names:
            path = posixpath.normpath(posixpath.join(wdir, name))
            if path in exempt or path in protected:
                continue
            protected.append(path)
            parent = posixpath.dirname(path)
            while parent != wdir and _under(parent, wdir) and parent != "/":
                if parent not in between:
                    between.append(parent)
                parent = posixpath.dirname(parent)
    return protected, between


def render_sbpl(policy: ResolvedPolicy, *, proxy_port: int | None, home: str) -> str:
    """The Seatbelt profile that enforces ``policy`` on macOS.

    ``proxy_port`` is the daemon's proxy on the host's loopback; a restricted (not blocked)
    network needs one, and it is the only place TCP may go. ``home`` is the session user's
    home directory, for the rc files that are protected when it lies inside a writable grant.
    Pure: the same arguments give the same text, and nothing on disk is consulted. Raises
    PolicyError for a path that cannot be named in SBPL or a network mode that cannot be
    rendered.
    """
    net = policy.network
    restricted = net.restricted and not net.block
    if restricted and proxy_port is None:
        raise PolicyError("the policy sends network traffic through the proxy, but no proxy "
                          "port was given to the Seatbelt renderer")
    if proxy_port is not None and not 1 <= proxy_port <= 65535:
        raise PolicyError(f"proxy port {proxy_port} is out of range (1-65535)")
    if policy.signal_mode not in _SIGNAL_TARGET:
        raise PolicyError(f"unknown signal_mode {policy.signal_mode!r}")
    if policy.process_info_mode not in _PROCESS_INFO:
        raise PolicyError(f"unknown process_info_mode {policy.process_info_mode!r}")
    home = macos_path(home)

    denials = sorted({macos_path(d.path) for d in policy.denials})
    # A grant inside a denied path is dropped, as on Linux (deny wins over a grant inside it).
    grants: list[Grant] = []
    for grant in policy.grants:
        path = macos_path(grant.path)
        if any(_under(path, d) for d in denials):
            continue
        grants.append(Grant(path=path, access=grant.access, is_file=grant.is_file,
                            source=grant.source))
    readable = [g for g in grants if g.access.reads]
    writable = [g for g in grants if g.access.writes]
    writable_dirs = sorted({g.path for g in writable if not g.is_file})
    exempt = frozenset(macos_path(p) for p in policy.writable_persistence)
    protected, between = _persistence(writable_dirs, home, exempt, policy.workdir,
                                      tuple(macos_path(f) for f in policy.protected_files))

    out: list[str] = [
        "(version 1)",
        _comment(f"nono session profile for policy {policy.name!r}"),
        "; Rendered from the resolved policy by nonod.sandbox._seatbelt. When several rules",
        "; match, the last one wins: allows first, then the denials that narrow them.",
        "(deny default)",
        "",
        "; processes",
        "(allow process-fork)",
        "(allow process-info* (target self))",
        _PROCESS_INFO[policy.process_info_mode],
        _SIGNAL_TARGET[policy.signal_mode],
        "",
        "; system services",
        "(allow sysctl-read)",
    ]
    out += [f"(allow mach-lookup (global-name {sbpl_string(n)}))" for n in MACH_SERVICES]
    if not net.restricted:
        out += [f"(allow mach-lookup (global-name {sbpl_string(n)}))"
                for n in MACH_SERVICES_NETWORK]
    out += [
        "(allow ipc-posix-shm-read-data ipc-posix-shm-read-metadata ipc-posix-shm-write-create"
        " ipc-posix-shm-write-data ipc-posix-shm-write-unlink)",
        "(allow ipc-posix-sem)",
    ]
    if policy.ipc_mode == "full":
        out.append("(allow ipc-sysv*)")

    # Base paths inside a denial are left out like grants, so that no allow is ever more
    # specific than a deny that covers it (see docs/macos.md, "Rule order").
    def kept(paths: Sequence[str]) -> list[str]:
        return [p for p in paths if not any(_under(p, d) for d in denials)]

    exec_dirs, read_dirs = kept(BASE_EXEC_DIRS), kept(BASE_READ_DIRS)
    read_files, devices = kept(BASE_READ_FILES), kept(BASE_DEVICES)
    out += ["", "; base: what every program needs to start",
            '(allow file-read* (literal "/"))']
    out += [f"(allow file-read-metadata {_literal(p)})"
            for p in _ancestors([*exec_dirs, *read_dirs, *read_files, *devices,
                                 *(g.path for g in grants)])]
    for path in exec_dirs:
        out.append(f"(allow file-read* process-exec* file-map-executable {_subpath(path)})")
    for path in read_dirs:
        out.append(f"(allow file-read* {_subpath(path)})")
    for path in read_files:
        out.append(f"(allow file-read* {_literal(path)})")
    for path in devices:
        out.append(f"(allow file-read* file-write* file-ioctl {_literal(path)})")
    out += [
        '(allow file-read* file-write* (subpath "/dev/fd"))',
        # The terminal the program inherited (isatty, window size); it cannot open others.
        '(allow file-ioctl (regex #"^/dev/ttys[0-9]+$"))',
        "(allow pseudo-tty)",
    ]

    out += ["", "; grants: read (also exec and library mapping)"]
    for g in readable:
        out.append(f"(allow file-read* process-exec* file-map-executable "
                   f"{_filter(g.path, g.is_file)})")
    out += ["", "; grants: write"]
    for g in writable:
        out.append(f"(allow file-write* {_filter(g.path, g.is_file)})")

    if protected:
        out += ["", "; persistence: files that run code outside the sandbox later stay "
                    "read-only inside writable grants"]
        out += [f"(deny file-write* {_literal(p)})" for p in between]
        out += [f"(deny file-write* {_subpath(p)})" for p in protected]

    out += ["", "; network"]
    out.append("(allow system-socket (socket-domain AF_UNIX))")
    if net.block:
        out.append("; blocked: no network rule at all, (deny default) refuses every one")
    elif restricted:
        out += [
            f"; restricted: TCP to the daemon's proxy on localhost:{proxy_port}, nothing else",
            "(allow system-socket (require-all (socket-domain AF_INET) "
            "(socket-type SOCK_STREAM)))",
            "(allow system-socket (require-all (socket-domain AF_INET6) "
            "(socket-type SOCK_STREAM)))",
            f'(allow network-outbound (remote tcp "localhost:{proxy_port}"))',
        ]
    else:
        out += [
            "; unrestricted: the profile has no network section (nono's default)",
            "(allow system-socket (socket-domain AF_INET))",
            "(allow system-socket (socket-domain AF_INET6))",
            '(allow network-outbound (remote ip "*:*"))',
            '(allow network-bind network-inbound (local ip "*:*"))',
            f"(allow network-outbound {_literal(MDNS_SOCKET)})",
        ]
    if not net.block:
        for port in net.listen_ports:
            out.append(f'(allow network-bind network-inbound (local tcp "localhost:{port}"))')
    if policy.allow_unix_sockets:
        out.append("; unix sockets (opted in): connect below grants, bind below writable ones")
        for g in grants:
            out.append(f"(allow network-outbound {_filter(g.path, g.is_file)})")
        for g in writable:
            out.append(f"(allow network-bind {_filter(g.path, g.is_file)})")
    else:
        out.append("; unix sockets: socketpair only; connect and bind to paths are refused")

    if denials:
        out += ["", "; denials: refused even inside grants (last, so nothing above reopens them)"]
        for path in denials:
            out.append(f"(deny file-read* file-write* process-exec* file-map-executable "
                       f"network-outbound network-bind {_subpath(path)})")
    return "\n".join(out) + "\n"


@final
class SandboxInit(NamedTuple):
    """The two libSystem functions ``apply_seatbelt`` calls, loaded before fork."""

    init: Callable[..., int]  # int sandbox_init(const char *, uint64_t, char **)
    free_error: Callable[..., None]  # void sandbox_free_error(char *)


def load_sandbox_init() -> SandboxInit:
    """``sandbox_init`` and ``sandbox_free_error`` from libSystem (libsystem_sandbox).

    Call it in the parent, before fork: ``dlopen`` is no work for a forked child. Raises
    EnforcementUnavailable on anything but macOS.
    """
    system = os.uname().sysname
    if system != "Darwin":
        raise EnforcementUnavailable(
            f"Seatbelt (sandbox_init) exists only on macOS; this machine runs {system}",
            step="seatbelt",
            hint="on Linux the launcher enforces the policy with namespaces, Landlock and "
                 "seccomp instead")
    try:
        lib = ctypes.CDLL("/usr/lib/libSystem.B.dylib", use_errno=True)
        init = lib.sandbox_init
        free_error = lib.sandbox_free_error
    except (OSError, AttributeError) as exc:
        raise EnforcementUnavailable(f"cannot load sandbox_init from libSystem: {exc}",
                                     step="seatbelt") from exc
    init.argtypes = (ctypes.c_char_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p))
    init.restype = ctypes.c_int
    free_error.argtypes = (ctypes.c_void_p,)
    free_error.restype = None
    return SandboxInit(init=init, free_error=free_error)


def apply_seatbelt(profile: str) -> None:
    """Confine the calling process (and everything it execs) with the SBPL ``profile``.

    Irreversible, and inherited across fork and exec. Raises LaunchError (step ``seatbelt``)
    with Seatbelt's own message if the profile is refused, and EnforcementUnavailable on
    anything but macOS.

    Where it goes on macOS (not wired in; the Linux launcher is unchanged): the daemon
    renders the profile with ``render_sbpl`` and the fork server calls ``load_sandbox_init``
    and encodes the profile before it forks. In the child, after ``setsid``, ``chdir``,
    stdio and the closing of every other descriptor, and before ``execve``, it calls
    ``sandbox_init(profile, 0, &error)`` exactly as this function does; a failure writes
    ``(seatbelt, errno)`` to the status pipe and ends with ``_exit(126)``, so the program
    never runs unconfined. Flags 0 means ``profile`` is SBPL text, not a named profile. The
    other way in is ``/usr/bin/sandbox-exec -p <profile> <program> ...`` as the program to
    exec, which applies the same text in a process of its own before its own ``execve``.
    """
    calls = load_sandbox_init()
    try:
        data = profile.encode()
    except UnicodeEncodeError as exc:
        raise LaunchError("the Seatbelt profile is not valid UTF-8", step="seatbelt") from exc
    if b"\x00" in data:
        raise LaunchError("the Seatbelt profile contains a NUL byte", step="seatbelt")
    error = ctypes.c_void_p()
    if calls.init(data, 0, ctypes.byref(error)) == 0:
        return
    message = "sandbox_init refused the profile"
    if error.value:
        message += ": " + ctypes.string_at(error.value).decode(errors="replace")
        calls.free_error(error)
    raise LaunchError(message, step="seatbelt", errno=ctypes.get_errno())
