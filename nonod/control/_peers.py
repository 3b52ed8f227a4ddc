"""Who is connecting: the peer's credentials (``SO_PEERCRED``), pinned with ``SO_PEERPIDFD``,
and whether it may use this daemon (its uid or group, and its namespaces: a process inside a
session or a container is refused even with the right uid). In landlock-only mode a session
shares every namespace with the host, so there a peer is also refused when it descends from
the fork server (:func:`descends_from`): every session process does, the fork server being a
child subreaper."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import socket
import struct
from collections.abc import Callable
from typing import Final, final

import trio

from .. import sessions
from ._errors import AuthRefused, ForeignNamespace

_NAMESPACES: Final = ("user", "mnt", "net", "pid")
_SO_PEERPIDFD: Final = getattr(socket, "SO_PEERPIDFD", 77)
#: ioctls: a pidfd's user namespace (Linux 6.11), a namespace's parent and owner.
_PIDFD_GET_USER_NAMESPACE: Final = 0xFF09
_NS_GET_PARENT: Final = 0xB702
_NS_GET_OWNER_UID: Final = 0xB704
#: User namespaces nest at most this deep (the kernel's bound).
_MAX_USERNS_DEPTH: Final = 33
#: Ancestors walked before a peer is refused as too deep to check.
MAX_DEPTH: Final = 256
#: Walks begun again when the tree changes under one, before the peer is refused.
_WALKS: Final = 3


def _ns_identity(pid: int | str) -> tuple[tuple[int, int], ...]:
    out = []
    for name in _NAMESPACES:
        st = os.stat(f"/proc/{pid}/ns/{name}")
        out.append((st.st_dev, st.st_ino))
    return tuple(out)


def _peer_groups(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    return set()


class TreeChanged(Exception):
    """A process on the way up exited or was reparented while the walk read it."""


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"PPid:"):
                return int(line.split()[1])
    raise TreeChanged


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive; signalling needs more than existing
    return True


def descends_from(pid: int, pidfd: int, root: int) -> bool:
    """Whether process ``pid`` (held by ``pidfd``) has process ``root`` among its ancestors.

    Each parent read is confirmed by its child still being alive afterwards, and each parent
    is held (a pidfd) before the child's parent is read again: a pid recycled between two
    reads cannot pass for an ancestor. Raises TreeChanged when the tree changes under the
    walk or is deeper than :data:`MAX_DEPTH`."""
    held: list[int] = []
    try:
        child, child_fd = pid, pidfd
        for _ in range(MAX_DEPTH):
            try:
                try:
                    parent = _parent(child)
                except (PermissionError, FileNotFoundError):
                    if _alive(child_fd):  # alive, hidden from us (hidepid): not ours, so no
                        return False      # session's (every session process is our uid's)
                    raise
                if not _alive(child_fd):
                    raise TreeChanged
                if parent == root:
                    return True
                if parent <= 1:
                    return False
                held.append(os.pidfd_open(parent))
                if _parent(child) != parent or not _alive(child_fd):
                    raise TreeChanged
            except (FileNotFoundError, ProcessLookupError, ValueError) as exc:
                raise TreeChanged from exc
            child, child_fd = parent, held[-1]
        raise TreeChanged
    finally:
        for fd in held:
            os.close(fd)


@final
class PeerCheck:
    """Decides whether a connected peer may talk to this daemon at all."""

    def __init__(self, *, system: bool, group_gid: int | None,
                 session_root: Callable[[], int | None] = lambda: None) -> None:
        self._system = system
        #: The fork server's pid when sessions share the host's namespaces (landlock-only).
        self._session_root = session_root
        self._group_gid = group_gid
        self._uid = os.geteuid()
        # Clients live in the daemon's namespaces, or in the host's (pid 1's) when a service
        # manager gave the daemon private ones (systemd's ProtectSystem= and friends). Sessions
        # are never in either: each gets new user/mount/pid namespaces.
        mine = _ns_identity("self")
        try:
            hosts = _ns_identity(1)
        except OSError:  # pid 1 is not ours to inspect (an unprivileged user daemon)
            hosts = mine
        self._allowed = [{a, b} for a, b in zip(mine, hosts, strict=True)]

    def identify(self, sock: socket.socket | trio.socket.SocketType) -> sessions.Caller:
        """The peer's credentials, or AuthRefused."""
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        caller = sessions.Caller(uid=uid, gid=gid, pid=pid)
        pidfd = -1
        with contextlib.suppress(OSError):
            pidfd = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
        try:
            self._check_uid(caller)
            self._check_namespaces(caller)
            self._check_not_in_session(caller, pidfd)
            if pidfd >= 0:
                try:
                    signal.pidfd_send_signal(pidfd, 0)
                except ProcessLookupError as exc:
                    raise AuthRefused("the connecting process has already exited") from exc
                except PermissionError:
                    pass  # alive; signalling needs more than existing
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return caller

    def _check_uid(self, caller: sessions.Caller) -> None:
        if caller.pid <= 0:
            raise AuthRefused("the connecting process is outside this daemon's pid namespace")
        if not self._system:
            if caller.uid != self._uid:
                raise AuthRefused(
                    f"this nonod serves uid {self._uid} only, not uid {caller.uid}",
                    hint="every user runs their own daemon; see docs/daemon.md",
                )
            return
        if caller.uid == 0:
            return
        if self._group_gid is not None:
            try:
                groups = _peer_groups(caller.pid)
            except OSError as exc:
                raise AuthRefused("cannot read the connecting process's groups") from exc
            if caller.gid == self._group_gid or self._group_gid in groups:
                return
        raise AuthRefused(
            f"uid {caller.uid} may not use the system nonod",
            hint="ask an administrator to add you to the daemon's socket_group",
        )

    def _check_namespaces(self, caller: sessions.Caller) -> None:
        try:
            theirs = _ns_identity(caller.pid)
        except OSError as exc:
            raise ForeignNamespace(
                "cannot check the namespaces of the connecting process; refusing it"
            ) from exc
        for name, allowed, other in zip(_NAMESPACES, self._allowed, theirs, strict=True):
            if other not in allowed:
                raise ForeignNamespace(
                    f"the connecting process is in another {name} namespace (inside a sandbox "
                    "session or a container); nonod does not take orders from there"
                )

    def _check_not_in_session(self, caller: sessions.Caller, pidfd: int) -> None:
        root = self._session_root()
        if root is None:
            return  # sessions have namespaces of their own: the check above refused them
        own = pidfd < 0
        if own:
            pidfd = os.pidfd_open(caller.pid)
        try:
            for _ in range(_WALKS):
                try:
                    inside = descends_from(caller.pid, pidfd, root)
                except TreeChanged:
                    continue
                if inside:
                    raise AuthRefused(
                        "the connecting process runs inside a sandbox session (landlock-only "
                        "mode); nonod does not take orders from there")
                return
            raise AuthRefused("the connecting process's ancestry could not be checked (it "
                              f"changed under every try, or is over {MAX_DEPTH} deep)")
        finally:
            if own:
                os.close(pidfd)


def peer_uid(sock: trio.socket.SocketType) -> int:
    """The uid a connection counts against (``_limits``): the connecting uid
    (``SO_PEERCRED``), or, for a peer in a user namespace below the daemon's, the uid that
    made the outermost of those namespaces, unless root made it. A user with subordinate
    ids (``/etc/subuid``, ``newuidmap``) runs processes under thousands of host uids there,
    each with a share of its own; all of them are that user's. -1 if the kernel will not
    say (the peer has gone; such a connection is refused later anyway, and all of them
    share one count)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pidfd = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    except OSError:
        return -1
    try:
        userns = fcntl.ioctl(pidfd, _PIDFD_GET_USER_NAMESPACE)
    except OSError:
        return -1
    finally:
        os.close(pidfd)
    uid = int(struct.unpack("3i", raw)[1])
    try:
        if _same_namespace(userns, _served_user_namespaces()):
            return uid
        owner = _outermost_owner(userns)
    finally:
        os.close(userns)
    # Root's namespaces (the daemon's own sessions, root's containers) hold other users'
    # processes by design: those still count as themselves.
    return uid if owner == 0 else owner


def _same_namespace(fd: int, namespaces: frozenset[tuple[int, int]]) -> bool:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) in namespaces


@functools.cache
def _served_user_namespaces() -> frozenset[tuple[int, int]]:
    """The user namespaces clients may be in: the daemon's, and the host's (``PeerCheck``)."""
    found = set()
    for pid in ("self", "1"):
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}/ns/user")
            found.add((st.st_dev, st.st_ino))
    return frozenset(found)


def _outermost_owner(userns: int) -> int:
    """The owner (seen from here) of the namespace on ``userns``'s way up whose parent is one
    the daemon serves; -1 when there is none within the kernel's nesting bound."""
    current = userns
    try:
        for _ in range(_MAX_USERNS_DEPTH):
            try:
                parent = fcntl.ioctl(current, _NS_GET_PARENT)
            except OSError:
                return -1  # its parent is out of our sight: not below us
            if _same_namespace(parent, _served_user_namespaces()):
                os.close(parent)
                owner = fcntl.ioctl(current, _NS_GET_OWNER_UID, b"\0" * 4)
                return int(struct.unpack("=I", owner)[0])
            if current != userns:
                os.close(current)
            current = parent
        return -1
    finally:
        if current != userns:
            os.close(current)
