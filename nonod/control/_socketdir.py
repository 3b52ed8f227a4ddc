"""Whether a control socket's directory can be trusted, by the client and by the daemon.

Standard library only, and str paths with ``os.path`` rather than :mod:`pathlib`: ``nonoctl``
runs this before every connection, and pathlib (with the ``urllib.parse``, ``ipaddress``,
``fnmatch`` and ``ntpath`` it imports) would cost each command several milliseconds.

A socket path is only as safe as the directories on it: whoever may write to one of them can
replace what lies beneath (rename a directory away, plant another with a fake daemon in it). So
every directory from ``/`` down to the socket's own, after resolving symlinks, must be

- owned by one of the trusted uids (the caller and root),
- not writable by group or others. A sticky directory (``/tmp``) is tolerated *above* the
  socket's directory (there nobody can rename or remove another user's entry), never as the
  socket's directory itself.

Once checked, the path is used in its resolved form, so swapping a symlink afterwards changes
nothing; changing a checked directory takes one of the trusted uids.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import NonoError

TYPE_CHECKING = False  # no ``typing`` or ``collections.abc`` at run time (``nonoctl._lean``)
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Final

#: A path as the callers give one: a str or an ``os.PathLike`` (a ``pathlib.Path``).
StrPath = str | os.PathLike[str]


SOCKET_NAME: Final = "nonod.sock"
SYSTEM_SOCKET: Final = "/run/nono/" + SOCKET_NAME


class UnsafeSocketPath(NonoError):
    """A directory on the socket path could let another user put a fake daemon there."""

    code = "socket.unsafe_path"


def plain_path(path: StrPath) -> str:
    """``path`` as ``str(pathlib.Path(path))`` spells it, without importing pathlib: repeated
    slashes, ``.`` components and a trailing slash dropped, ``..`` kept, ``.`` for nothing.
    (So the socket paths named in messages and connected to are the ones they always were.)"""
    text = os.fspath(path)
    root = "//" if text[:2] == "//" and text[2:3] != "/" else "/" if text[:1] == "/" else ""
    return root + "/".join(part for part in text.split("/") if part not in ("", ".")) or "."


def parent_and_name(path: str) -> tuple[str, str]:
    """``(str(Path(path).parent), Path(path).name)`` of a :func:`plain_path`."""
    head, name = os.path.split(path)
    return head or ".", "" if name == "." else name


def _who(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def trusted_socket_dir(directory: StrPath, *, owners: Collection[int]) -> str:
    """``directory`` resolved, once every directory on it is checked (see the module doc).

    Raises FileNotFoundError (NotADirectoryError) when a component does not exist (is not a
    directory): nothing listens there; UnsafeSocketPath when one could be controlled by a uid
    outside ``owners``.
    """
    directory = plain_path(directory)
    real = os.path.realpath(directory)
    current = "/"
    parts = [part for part in real.split("/") if part]
    for index in range(len(parts) + 1):
        if index:
            current = os.path.join(current, parts[index - 1])
        st = os.lstat(current)  # FileNotFoundError: nothing there yet
        last = index == len(parts)
        if stat.S_ISLNK(st.st_mode):  # resolved a moment ago: someone is swapping it
            raise UnsafeSocketPath(
                f"{current} changed while the socket path {directory} was being checked"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), current)
        if st.st_uid not in owners:
            raise UnsafeSocketPath(
                f"{current} belongs to {_who(st.st_uid)}, who could put a fake nonod at "
                f"{directory}; refusing to use it",
                hint=f"remove {current} (it is not yours) or use another socket path"
                if last else "use a socket path whose directories belong to you or root",
            )
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (last or not st.st_mode & stat.S_ISVTX):
            raise UnsafeSocketPath(
                f"{current} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}), "
                f"who could replace the nonod socket at {directory}; refusing to use it",
                hint=f"chmod go-w {current}",
            )
    return real


def default_socket_path(*, system: bool = False, environ: dict[str, str] | None = None) -> str:
    """The control socket of the user daemon (or of the system daemon)."""
    if system:
        return SYSTEM_SOCKET
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and runtime.startswith("/"):
        return os.path.join(plain_path(runtime), "nono", SOCKET_NAME)
    shared = f"/tmp/nono-{os.geteuid()}"
    home = env.get("HOME", "")
    if home.startswith("/"):
        # Any user can make that name in /tmp first. Taken by another: meet in our home
        # instead; absent (the other has removed it since): where our daemon already is.
        own = os.path.join(plain_path(home), ".cache", "nono", "run", SOCKET_NAME)
        held = _holder(shared)
        if held is False or (held is None and os.path.lexists(own)):
            return own
    return f"{shared}/{SOCKET_NAME}"


def _holder(directory: str) -> bool | None:
    """True: ``directory`` is a directory of ours; False: it is someone else's (or not a
    directory); None: it does not exist."""
    try:
        st = os.lstat(directory)
    except OSError:
        return None
    return st.st_uid == os.geteuid() and stat.S_ISDIR(st.st_mode)


def client_socket_path(*, system: bool = False, environ: dict[str, str] | None = None) -> str:
    """The socket a client talks to: ``NONO_SOCKET`` if set, else the default."""
    env = os.environ if environ is None else environ
    override = env.get("NONO_SOCKET")
    if override:
        return plain_path(override)
    return default_socket_path(system=system, environ=dict(env))
