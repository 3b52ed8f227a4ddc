"""Who is connecting: the peer's credentials (``SO_PEERCRED``), pinned with ``SO_PEERPIDFD``,
and whether it may use this daemon (its uid or group, and its namespaces: a process inside a
session or a container is refused even with the right uid)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
from typing import Final, final

import trio

from .. import sessions
from ._errors import AuthRefused, ForeignNamespace

_NAMESPACES: Final = ("user", "mnt", "net", "pid")
_SO_PEERPIDFD: Final = getattr(socket, "SO_PEERPIDFD", 77)


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


@final
class PeerCheck:
    """Decides whether a connected peer may talk to this daemon at all."""

    def __init__(self, *, system: bool, group_gid: int | None) -> None:
        self._system = system
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


def peer_uid(sock: trio.socket.SocketType) -> int:
    """The connecting uid (``SO_PEERCRED``); -1 if the kernel will not say (refused later)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return -1
    return int(struct.unpack("3i", raw)[1])
