"""Who is on the other end of a TCP connection over the host's loopback: the uid that owns the
peer's socket, from the kernel (``NETLINK_SOCK_DIAG``, the interface ``ss`` reads).

A session without a network namespace of its own (Landlock network isolation, the
landlock-only mode) reaches its proxy on ``127.0.0.1:<port>`` of the host, where any local
user may connect; the phantom token is no secret from them once a program has put it on a
command line (``/proc/<pid>/cmdline`` is world-readable). :class:`SameUidListener` wraps such
a proxy's listener and closes, before reading a byte, every connection whose peer socket
belongs to another uid.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Final, final

import trio

from ._quiet import QuietWarning

_NETLINK_SOCK_DIAG: Final = 4
_SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST: Final = 1
_NLMSG_ERROR: Final = 2
_ALL_STATES: Final = 0xFFFFFFFF
_NO_COOKIE: Final = 0xFFFFFFFF
_HEADER: Final = struct.Struct("=IHHII")  # nlmsghdr
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid: ports (big
# endian), source and destination (16 bytes each), interface, cookie.
_REQUEST: Final = struct.Struct("=BBBBI")
#: inet_diag_msg: ..., expires, rqueue, wqueue; then uid and inode.
_UID_OFFSET: Final = _HEADER.size + 4 + 48 + 12


def _address(host: str) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.inet_pton(family, host).ljust(16, b"\0")


def tcp_peer_uid(sock: socket.socket | trio.socket.SocketType) -> int:
    """The uid owning the socket at the other end of the local TCP connection ``sock``.

    Raises OSError when the kernel does not know it (the peer has gone, or is not on this
    host's loopback), and when the peer has closed its socket: what the kernel keeps of a
    closed socket (``FIN_WAIT2`` or ``TIME_WAIT`` after ``close``) it reports with uid 0
    whoever held it, so a client that sends and closes before the accept would pass for
    root. A socket with a file (an inode) is one some process still holds."""
    local_host, local_port = sock.getsockname()[:2]
    peer_host, peer_port = sock.getpeername()[:2]
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    # The peer's socket, seen from its side: its source is our peer address.
    body = (_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, _ALL_STATES)
            + struct.pack("!HH", peer_port, local_port) + _address(peer_host)
            + _address(local_host) + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE))
    message = _HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1,
                           0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                       _NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1.0)
        diag.send(message)
        reply = diag.recv(8192)
    if len(reply) < _HEADER.size:
        raise OSError(errno.EPROTO, "short sock_diag reply")
    kind = _HEADER.unpack_from(reply)[1]
    if kind == _NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, _HEADER.size)[0]
        raise OSError(code or errno.EPROTO, os.strerror(code or errno.EPROTO))
    if kind != _SOCK_DIAG_BY_FAMILY or len(reply) < _UID_OFFSET + 8:
        raise OSError(errno.EPROTO, "unexpected sock_diag reply")
    uid, inode = struct.unpack_from("=II", reply, _UID_OFFSET)
    if not inode:
        raise OSError(errno.ENOTCONN, "the peer has closed its socket")
    return int(uid)


@final
class SameUidListener(trio.abc.Listener[trio.SocketStream]):
    """``inner``'s connections whose peer socket belongs to ``uid``; the others are closed
    at once (and counted, logged at most once a second)."""

    def __init__(self, inner: trio.SocketListener, uid: int) -> None:
        self._inner = inner
        self._uid = uid
        self.refused = 0
        self._refusing = QuietWarning("proxy.foreign_peer")

    async def accept(self) -> trio.SocketStream:
        while True:
            stream = await self._inner.accept()
            try:
                owner: int | None = tcp_peer_uid(stream.socket)
            except OSError:
                owner = None  # gone already, or unknown: not admitted
            if owner == self._uid:
                return stream
            self.refused += 1
            self._refusing.warn(peer_uid=owner, session_uid=self._uid, refused=self.refused)
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        await self._inner.aclose()
