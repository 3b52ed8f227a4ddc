"""Name resolution for the proxy: operator pins first, then the system resolver, then the
special-range check on every address returned.

The proxy connects to exactly the addresses :meth:`Resolver.resolve` returns; it never hands a
name to ``connect``, so there is no second lookup and no DNS-rebinding window between the check
and the connection.
"""

from __future__ import annotations

import _socket
import errno
import functools
import ipaddress
import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar, overload

import msgspec
import trio

from .._callerfs import made_as
from .._descriptors import for_sessions
from ..errors import NonoError
from ._addresses import (
    HostError,
    IPAddress,
    Special,
    canonical_address,
    normalize_name,
    parse_ip_literal,
    special_range,
)
from ._decide import Reason

AddrInfo: TypeAlias = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr)
GetAddrInfo: TypeAlias = Callable[[str, int, int, int, int, int], Sequence[AddrInfo]]

_LOOKUP_FLAGS: Final = socket.AI_ADDRCONFIG | socket.AI_NUMERICSERV


class ResolveError(NonoError):
    """An allowed name could not be turned into an address the proxy may connect to.

    ``reason`` is the audit reason code; ``refused`` is True when the name resolved but to an
    address the proxy refuses (loopback, link-local, private...), False when the lookup itself
    failed or timed out.
    """

    code = "proxy.resolve"

    def __init__(self, message: str, *, reason: Reason, refused: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.refused = refused


class PinError(NonoError):
    """A ``[network] resolve`` entry of the daemon configuration is malformed."""

    code = "proxy.pin"


class Resolved(msgspec.Struct, frozen=True, kw_only=True):
    """Where to connect for one target: ``(address, port)`` pairs in the order to try them.
    ``pinned`` says the operator chose them (``[network] resolve``)."""

    host: str
    addresses: tuple[tuple[str, int], ...]
    pinned: bool = False


class Resolver:
    """Resolves allowed target names for one session's proxy.

    ``pins`` maps a host name to ``"address:port"``, ``"[v6]:port"`` or a bare address (the
    request's port is kept), like curl's ``--resolve``; pinned names skip the lookup and the
    special-range refusal, because the operator chose the address. Every other answer is
    refused if any of its addresses is loopback, link-local (cloud metadata), unspecified,
    multicast, broadcast, reserved, CGNAT or, unless ``allow_private``, private.

    Lookups run in worker threads, at most ``max_concurrent`` at a time for this resolver (so
    one session's slow lookups cannot use up the threads of another), each bounded by
    ``timeout`` seconds. ``getaddrinfo`` is the lookup function (``socket.getaddrinfo``
    signature); tests pass a fake DNS here.
    """

    def __init__(
        self,
        *,
        pins: Mapping[str, str] | None = None,
        allow_private: bool = False,
        timeout: float = 5.0,
        max_concurrent: int = 4,
        getaddrinfo: GetAddrInfo = socket.getaddrinfo,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._pins = {key: value for key, value in _parse_pins(pins or {})}
        self._allow_private = allow_private
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._getaddrinfo = getaddrinfo

    def pinned(self, host: str) -> bool:
        """Whether the operator pinned ``host`` (a normalised name)."""
        return host in self._pins

    async def resolve(self, host: str, port: int) -> Resolved:
        """The addresses to connect to for ``host`` (as normalised by ``decide``) and ``port``.

        Raises ResolveError when the lookup fails, times out, returns nothing, or returns an
        address the proxy refuses. Call it only for a name ``decide`` allowed.
        """
        resolved = self._at_once(host, port)
        if resolved is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            return resolved
        infos = await self._lookup(host, port)
        addresses: list[tuple[str, int]] = []
        for info in infos:
            if info[0] not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = canonical_address(ipaddress.ip_address(info[4][0]))
            self._check(host, address)
            pair = (str(address), port)
            if pair not in addresses:
                addresses.append(pair)
        if not addresses:
            raise ResolveError(f"{host} has no address", reason=Reason.RESOLVE_FAILED,
                               refused=False)
        return Resolved(host=host, addresses=tuple(addresses))

    def resolve_now(self, host: str, port: int) -> Resolved | None:
        """What :meth:`resolve` answers for a pinned name or an address literal, at once and
        from any thread (no lookup, no event loop); None for a name that needs a lookup."""
        return self._at_once(host, port)

    def _at_once(self, host: str, port: int) -> Resolved | None:
        pin = self._pins.get(host)
        if pin is not None:
            address, pin_port = pin
            return Resolved(host=host, addresses=((str(address), pin_port or port),),
                            pinned=True)
        try:
            literal = parse_ip_literal(host)
        except HostError:
            raise ResolveError("not a host", reason=Reason.BAD_HOST, refused=True) from None
        if literal is None:
            return None
        self._check(host, literal)
        return Resolved(host=host, addresses=((str(literal), port),))

    async def _lookup(self, host: str, port: int) -> Sequence[AddrInfo]:
        def lookup() -> Sequence[AddrInfo]:
            return self._getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                     socket.IPPROTO_TCP, _LOOKUP_FLAGS)

        try:
            with trio.fail_after(self._timeout):
                return await trio.to_thread.run_sync(lookup, abandon_on_cancel=True,
                                                     limiter=self._limiter)
        except trio.TooSlowError:
            raise ResolveError(f"looking up {host} timed out", reason=Reason.RESOLVE_TIMEOUT,
                               refused=False) from None
        except (OSError, UnicodeError) as exc:
            raise ResolveError(f"looking up {host} failed", reason=Reason.RESOLVE_FAILED,
                               refused=False) from exc

    def _check(self, host: str, address: IPAddress) -> None:
        kind = special_range(address)
        if kind is not None and not (self._allow_private and kind is Special.PRIVATE):
            raise ResolveError(f"{host} resolves to a {kind.value} address",
                               reason=Reason(kind.value), refused=True)
        if is_host_address(address):
            raise ResolveError(f"{host} resolves to an address of this host",
                               reason=Reason.HOST_ADDRESS, refused=True)


def is_host_address(address: IPAddress) -> bool:
    """Whether ``address`` is one of this host's own (in the daemon's network namespace): a
    public address on an interface reaches every service bound to the wildcard address, as
    loopback does. Asked of the kernel's routing, no packet sent: a UDP socket ``connect``ed
    to an own address takes that address as its source (the ``local`` route), and to any
    other, the address of the interface it leaves by. An address with no route at all is not
    the host's (a TCP connection to it fails the same way). A probe socket that cannot be
    made raises ResolveError (fail closed)."""
    family = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET
    try:
        probe = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except OSError:
        raise ResolveError("no socket to check the address with",
                           reason=Reason.CONNECT_FAILED, refused=False) from None
    with probe:
        if not for_sessions(probe.fileno()):  # the daemon's own (``nonod._descriptors``)
            raise ResolveError("descriptors kept for the daemon",
                               reason=Reason.CONNECT_FAILED, refused=False)
        try:
            probe.connect((str(address), 9))
        except OSError:
            return False
        return ipaddress.ip_address(probe.getsockname()[0].split("%")[0]) == address


def _parse_pins(pins: Mapping[str, str]) -> list[tuple[str, tuple[IPAddress, int | None]]]:
    out: list[tuple[str, tuple[IPAddress, int | None]]] = []
    for raw_host, raw_target in pins.items():
        try:
            host = normalize_name(raw_host)
            if parse_ip_literal(host) is not None:
                raise HostError("an address cannot be pinned")
        except HostError as exc:
            raise PinError(f"resolve: `{raw_host}` is not a host name ({exc})") from None
        out.append((host, _parse_pin_target(raw_host, raw_target)))
    return out


def _parse_pin_target(host: str, target: str) -> tuple[IPAddress, int | None]:
    text, port_text = target.strip(), ""
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise PinError(f"resolve.{host}: `{target}` is not ADDRESS[:PORT]")
        text, port_text = inner, rest[1:]
    elif text.count(":") == 1:
        text, _, port_text = text.partition(":")
    try:
        address = canonical_address(ipaddress.ip_address(text))
    except ValueError:
        raise PinError(f"resolve.{host}: `{target}` is not ADDRESS[:PORT]",
                       hint='for example "127.0.0.1:8443" or "[::1]:8443"') from None
    if not port_text:
        return address, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise PinError(f"resolve.{host}: bad port in `{target}`")
    return address, int(port_text)


_Sock = TypeVar("_Sock", bound=_socket.socket)


@overload
def start_connect(address: str, port: int, *, below: int | None = None,
                  owner: int | None = None) -> tuple[socket.socket, bool]: ...
@overload
def start_connect(address: str, port: int, *, below: int | None = None,
                  owner: int | None = None, kind: type[_Sock]) -> tuple[_Sock, bool]: ...
def start_connect(address: str, port: int, *, below: int | None = None,
                  owner: int | None = None, kind: type[_socket.socket] = socket.socket
                  ) -> tuple[_socket.socket, bool]:
    """A non-blocking TCP connection to exactly ``address`` (an address literal, the one that
    was checked: no name lookup, so no window for DNS rebinding between the check and the
    connect), begun: the socket, and whether it is connected already (a loopback or local
    upstream); if not, it is once writable, with its ``SO_ERROR`` saying how it went. A
    connection refused at once raises OSError, and so does a socket whose number lies in
    the daemon's reserve (EMFILE; ``below``: its ``watermark()``, if the caller has just
    read it). ``kind``: the socket's type (the pump takes the C type, which has no Python
    steps to make or close; trio takes the standard library's). ``owner``: the uid the
    connection is made for (the system daemon's session's user), whose the socket is in the
    kernel's view (``_callerfs.made_as``); None: the daemon's own."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    flags = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    if owner is None or kind is _socket.socket:
        sock = made_as(owner, functools.partial(kind, family, flags))
    else:
        # Made as the C type under the owner's uid, wrapped after: the standard library's
        # class runs Python code as it is made, where the cycle collector (and any finalizer
        # it calls) would run as that user too (review28).
        raw = made_as(owner, functools.partial(_socket.socket, family, flags))
        sock = kind(family, flags, 0, raw.detach())
    fd = sock.fileno()  # the daemon's own above the watermark (``nonod._descriptors``)
    if not (for_sessions(fd) if below is None else fd < below):
        sock.close()
        raise OSError(errno.EMFILE, "descriptors kept for the daemon")
    error = sock.connect_ex((address, port))
    if error == errno.EINPROGRESS:
        try:
            sock.getpeername()  # connected already
            return sock, True
        except OSError:
            return sock, False
    if error:
        sock.close()
        raise OSError(error, os.strerror(error))
    return sock, True


async def connect_exactly(address: str, port: int, *, deadline: float = math.inf,
                          owner: int | None = None) -> trio.SocketStream:
    """A TCP connection to exactly ``address`` (:func:`start_connect`). A connection that
    completes at once costs no pass through the event loop and no cancel scope; otherwise this
    waits until the socket is writable, until ``deadline`` (then ``trio.TooSlowError``)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    sock, connected = start_connect(address, port, owner=owner)
    try:
        if not connected:
            with trio.fail_at(deadline):
                await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))
