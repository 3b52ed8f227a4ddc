"""Where the control socket lives, and taking it over safely.

Standard library only, str paths (``_socketdir``: no pathlib): ``nonoctl`` uses
:func:`client_socket_path` on its hot path, and the daemon prepares its socket with plain
blocking calls before it serves anything.

Rules:

- A user daemon listens on ``$XDG_RUNTIME_DIR/nono/nonod.sock`` (``/tmp/nono-<uid>/`` when
  ``XDG_RUNTIME_DIR`` is unset, or ``~/.cache/nono/run/`` when another user holds that
  name), a system daemon on ``/run/nono/nonod.sock``.
- The socket's directory is ``0700`` (``0750`` with a ``socket_group`` for the system daemon),
  owned by the daemon's user, and never a symlink; a directory that fails this is refused, not
  repaired, unless it is the default location (then its mode is corrected).
- The socket is ``0600`` (``0660`` with a group). Its mode is set on the socket before
  ``bind`` (Linux makes the file with that mode less the umask), so there is no moment where it
  is more open than that. The process umask is never changed: it is shared by every thread,
  and a child forked meanwhile (the fork server, whose sessions inherit it) would keep it.
- ``<socket>.lock`` is held (``flock``) for the daemon's lifetime: a second daemon fails on it
  with a clear message and never touches the live socket. A socket file left by a dead daemon
  (nothing accepts on it) is replaced; one that still accepts connections is never stolen.
- With systemd socket activation (``LISTEN_FDS``), the inherited socket is used as is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import Final

from ..errors import NonoError
from ._socketdir import SOCKET_NAME as SOCKET_NAME
from ._socketdir import SYSTEM_SOCKET as SYSTEM_SOCKET
from ._socketdir import (
    StrPath,
    UnsafeSocketPath,
    parent_and_name,
    plain_path,
    trusted_socket_dir,
)
from ._socketdir import client_socket_path as client_socket_path
from ._socketdir import default_socket_path as default_socket_path

_SD_LISTEN_FDS_START: Final = 3


class SocketError(NonoError):
    """The control socket or its directory cannot be used safely."""

    code = "daemon.socket"


class DaemonRunning(SocketError):
    """Another daemon owns the socket."""

    code = "daemon.running"


class BoundSocket:
    """A listening control socket and what is needed to give it back cleanly. (A plain
    class: ``dataclasses`` would cost the CLI, which imports this module, ~5 ms.)"""

    def __init__(self, sock: socket.socket, path: str | None, activated: bool = False,
                 _identity: tuple[int, int] | None = None,
                 _lock_fd: int | None = None) -> None:
        self.sock = sock
        self.path = path
        self.activated = activated
        self._identity = _identity
        self._lock_fd = _lock_fd

    def __repr__(self) -> str:
        return f"BoundSocket(path={self.path!r}, activated={self.activated})"

    def release(self) -> None:
        """Close the socket; remove its file if it is still ours; drop the lock."""
        self.sock.close()
        if self.path is not None and not self.activated and self._identity is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(self.path)
                # Someone may have replaced it (an admin, a newer daemon): leave theirs alone.
                if (st.st_dev, st.st_ino) == self._identity:
                    os.unlink(self.path)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def prepare_socket_dir(
    directory: StrPath, *, mode: int, gid: int | None = None, fix_mode: bool
) -> None:
    """Create ``directory`` with ``mode`` or check that an existing one is safe to use.

    Safe: a real directory (not a symlink), owned by us, open to nobody beyond ``mode``
    (``0700``, or ``0750`` with a group), under directories that only we or root can change
    (``_socketdir``). With ``fix_mode`` (the default location, which is ours by convention) a
    readable one is narrowed to ``mode``; one that others could write to is refused in every
    case, as they may already have planted something in it.
    """
    directory = plain_path(directory)
    os.makedirs(parent_and_name(directory)[0], mode=0o755, exist_ok=True)
    created = False
    try:
        os.mkdir(directory, 0o700)
        created = True
    except FileExistsError:
        pass
    except OSError as exc:
        raise SocketError(f"cannot create {directory}: {exc.strerror}") from exc
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise SocketError(
            f"{directory} is not a directory (a symlink?); refusing to put the control socket there"
        )
    if st.st_uid != os.geteuid():
        raise SocketError(
            f"{directory} belongs to uid {st.st_uid}, not to uid {os.geteuid()}; refusing to "
            "put the control socket there",
            hint="remove it or choose another path with --socket",
        )
    extra = stat.S_IMODE(st.st_mode) & ~mode
    if not created and extra & 0o022:
        raise SocketError(
            f"{directory} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            "someone could replace the control socket",
            hint=f"remove it, or chmod {mode:o} {directory} if nothing in it is foreign",
        )
    if created or fix_mode:
        os.chmod(directory, mode)
        if gid is not None:
            os.chown(directory, -1, gid)
    elif extra & 0o077:
        raise SocketError(
            f"{directory} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); the "
            f"control socket's directory must be mode {mode:o} or stricter",
            hint=f"chmod {mode:o} {directory}",
        )
    try:
        trusted_socket_dir(directory, owners={os.geteuid(), 0})
    except UnsafeSocketPath as exc:
        raise SocketError(exc.message, hint=exc.hint) from exc


def _take_lock(path: str) -> int:
    import fcntl

    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise DaemonRunning(
            f"another nonod is already running on {path}",
            hint="`nonoctl daemon status` talks to it; `nonoctl daemon stop` stops it",
        ) from exc
    return fd


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody accepts on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # a dead daemon's socket: nothing listens on it
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SocketError(f"cannot check {path}: {exc.strerror or exc}") from exc
    finally:
        probe.close()
    raise DaemonRunning(
        f"a daemon is already accepting connections on {path}",
        hint="`nonoctl daemon stop` stops it; nonod never takes over a live socket",
    )


def bind_control_socket(
    path: StrPath, *, mode: int = 0o600, gid: int | None = None, default_location: bool
) -> BoundSocket:
    """Prepare the directory, take the lock, clear a stale socket, bind and listen."""
    path = plain_path(path)
    dir_mode = 0o750 if gid is not None else 0o700
    prepare_socket_dir(parent_and_name(path)[0], mode=dir_mode, gid=gid, fix_mode=default_location)
    lock_fd = _take_lock(path)
    try:
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            os.fchmod(sock.fileno(), mode)  # the file is born with at most this mode
            sock.bind(path)
            os.chmod(path, mode)
            if gid is not None:
                os.chown(path, -1, gid)
            sock.listen(128)
            st = os.lstat(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise DaemonRunning(f"{path} is in use by another process") from exc
            raise SocketError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    except BaseException:
        os.close(lock_fd)
        raise
    return BoundSocket(
        sock=sock, path=path, _identity=(st.st_dev, st.st_ino), _lock_fd=lock_fd
    )


def activated_socket(environ: dict[str, str] | None = None) -> BoundSocket | None:
    """The socket systemd passed us (``LISTEN_FDS``), or None when not socket-activated.

    The variables are removed from the environment so that nothing we start inherits them.
    """
    env = os.environ if environ is None else environ
    pid = env.get("LISTEN_PID")
    count = env.get("LISTEN_FDS")
    if pid is None or count is None:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if not pid.isdigit() or int(pid) != os.getpid():
        return None
    if count != "1":
        raise SocketError(f"systemd passed {count} sockets; nonod.socket must define exactly one")
    fd = _SD_LISTEN_FDS_START
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise SocketError("the activated socket is not a Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise SocketError("the activated socket is not listening")
    name = sock.getsockname()
    path = plain_path(name) if isinstance(name, str) and name.startswith("/") else None
    return BoundSocket(sock=sock, path=path, activated=True)
