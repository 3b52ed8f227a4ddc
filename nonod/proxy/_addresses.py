"""Host names and IP addresses: normalisation and the special ranges the proxy refuses.

Everything here is pure and synchronous. Two questions are answered:

* What does a target host *mean*? :func:`normalize_host` turns what a client wrote into one
  canonical form: a lower-case A-label name without a trailing dot, or an IP address. Numeric
  spellings that C resolvers accept (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``,
  ``[::ffff:127.0.0.1]``) all become the address they denote, so a check made on the name and a
  connection made by the kernel can never disagree about the destination.
* Is an address one a sandbox must not reach? :func:`special_range` names the range an address
  falls in (loopback, link-local, private...) or returns None for a public address.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Final

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostError(ValueError):
    """A target host that is not a host name or an IP address (after every normalisation)."""


class Special(enum.StrEnum):
    """Why an address is not a public unicast destination. Values are stable reason codes."""

    LOOPBACK = "loopback"
    LINK_LOCAL = "link_local"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    BROADCAST = "broadcast"
    CGNAT = "cgnat"
    PRIVATE = "private"
    RESERVED = "reserved"


_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Order matters only for readability; the ranges below do not overlap.
_SPECIAL_V4: Final[tuple[tuple[ipaddress.IPv4Network, Special], ...]] = (
    (_V4("0.0.0.0/32"), Special.UNSPECIFIED),
    (_V4("0.0.0.0/8"), Special.RESERVED),  # "this network": Linux connects it to loopback
    (_V4("10.0.0.0/8"), Special.PRIVATE),
    (_V4("100.64.0.0/10"), Special.CGNAT),
    (_V4("127.0.0.0/8"), Special.LOOPBACK),
    (_V4("169.254.0.0/16"), Special.LINK_LOCAL),  # cloud metadata lives here
    (_V4("172.16.0.0/12"), Special.PRIVATE),
    (_V4("192.0.0.0/24"), Special.RESERVED),  # IETF protocol assignments
    (_V4("192.0.2.0/24"), Special.RESERVED),  # documentation
    (_V4("192.88.99.0/24"), Special.RESERVED),  # deprecated 6to4 relay anycast
    (_V4("192.168.0.0/16"), Special.PRIVATE),
    (_V4("198.18.0.0/15"), Special.RESERVED),  # benchmarking
    (_V4("198.51.100.0/24"), Special.RESERVED),  # documentation
    (_V4("203.0.113.0/24"), Special.RESERVED),  # documentation
    (_V4("224.0.0.0/4"), Special.MULTICAST),
    (_V4("255.255.255.255/32"), Special.BROADCAST),
    (_V4("240.0.0.0/4"), Special.RESERVED),
)

# IPv6 is checked the other way round: only global unicast (2000::/3) can be public, then the
# reserved blocks inside it are carved out. Addresses that embed an IPv4 address are judged by
# the address they embed (see _embedded_v4).
_GLOBAL_UNICAST: Final = _V6("2000::/3")
_SPECIAL_V6: Final[tuple[tuple[ipaddress.IPv6Network, Special], ...]] = (
    (_V6("::/128"), Special.UNSPECIFIED),
    (_V6("::1/128"), Special.LOOPBACK),
    (_V6("fe80::/10"), Special.LINK_LOCAL),
    (_V6("fc00::/7"), Special.PRIVATE),  # unique local
    (_V6("64:ff9b:1::/48"), Special.PRIVATE),  # local-use NAT64
    (_V6("ff00::/8"), Special.MULTICAST),
    (_V6("2001::/23"), Special.RESERVED),  # IETF protocol assignments (Teredo, ORCHID...)
    (_V6("2001:db8::/32"), Special.RESERVED),  # documentation
    (_V6("3fff::/20"), Special.RESERVED),  # documentation
)
_NAT64: Final = _V6("64:ff9b::/96")
_SIX_TO_FOUR: Final = _V6("2002::/16")

# Names that always mean the machine itself or a cloud metadata service, whatever DNS says.
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost",
                                    "ip6-loopback"})
_METADATA_NAMES: Final = frozenset({
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
    "metadata.packet.net",
})

_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A last label made only of digits, or a 0x number, is no DNS name: C resolvers read it as an
# IPv4 address in one of inet_aton's forms.
_NUMERIC_LABEL: Final = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


def special_range(address: IPAddress) -> Special | None:
    """The special range ``address`` is in, or None if it is a public unicast address."""
    if isinstance(address, ipaddress.IPv4Address):
        for network, kind in _SPECIAL_V4:
            if address in network:
                return kind
        return None
    embedded = _embedded_v4(address)
    if embedded is not None:
        return special_range(embedded)
    for network6, kind in _SPECIAL_V6:
        if address in network6:
            return kind
    if address.ipv4_mapped is None and address in _V6("::/96"):
        return Special.RESERVED  # deprecated IPv4-compatible addresses
    if address not in _GLOBAL_UNICAST:
        return Special.RESERVED
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64 well-known, 6to4)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    return None


def canonical_address(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 addresses become the IPv4 address they carry; others are unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_ipv4(text: str) -> ipaddress.IPv4Address:
    """Parse ``text`` as inet_aton(3) does: 1 to 4 parts, each decimal, octal (leading 0) or
    hexadecimal (0x), the last part filling the remaining bytes. Raises HostError."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        raise HostError("not an IPv4 address")
    values: list[int] = []
    for part in parts:
        if part.startswith(("0x", "0X")):
            digits = part[2:]
            if digits and not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise HostError("bad hexadecimal part")
            values.append(int(digits, 16) if digits else 0)
            continue
        if not part or not part.isascii() or not part.isdigit():
            raise HostError("bad IPv4 part")
        base = 8 if len(part) > 1 and part.startswith("0") else 10
        try:
            values.append(int(part, base))
        except ValueError:
            raise HostError("bad octal part") from None
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        raise HostError("IPv4 part out of range")
    number = 0
    for v in head:
        number = (number << 8) | v
    number = (number << (8 * (4 - len(head)))) | last
    return ipaddress.IPv4Address(number)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any encoding a resolver would accept, or None when it
    is meant as a name. IPv6 must be bracketed. Raises HostError for a malformed literal."""
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            raise HostError("bad IPv6 literal")
        try:
            return canonical_address(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise HostError("bad IPv6 literal") from None
    lowered = host.lower().removesuffix(".")
    last = lowered.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last):
        return parse_ipv4(lowered)
    return None


def normalize_name(host: str) -> str:
    """A host name in canonical form: IDNA (UTS 46) A-labels, lower case, no trailing dot.

    Raises HostError for anything that is not a syntactically valid host name.
    """
    if not host or len(host) > 1024:
        raise HostError("empty or oversized host")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in host):
        raise HostError("control character or space in host")
    name = host[:-1] if host.endswith(".") else host
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError:
            raise HostError("not a valid internationalised name") from None
    name = name.lower()
    if len(name) > 253:
        raise HostError("host name too long")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise HostError("bad label in host name")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise HostError("bad punycode label") from None
    return name


def is_loopback_name(name: str) -> bool:
    """``localhost`` and friends, and every name under ``.localhost`` (RFC 6761)."""
    return name in _LOOPBACK_NAMES or name.endswith(".localhost")


def is_metadata_name(name: str) -> bool:
    """Cloud instance metadata services, refused by name before any lookup."""
    return name in _METADATA_NAMES


def format_host(address: IPAddress) -> str:
    """How an address appears as a host: IPv6 in brackets."""
    if isinstance(address, ipaddress.IPv6Address):
        return f"[{address.compressed}]"
    return str(address)
