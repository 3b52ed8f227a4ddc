"""Measurement (not a test): whose are the sockets of the proxy's name lookups, beside the
upstream connection it makes for a user? Run as root, in a mount namespace of its own whose
``/etc/resolv.conf`` names ``127.0.0.1``, where this script answers as a DNS server and reads
each query's client socket owner from ``/proc/net/udp`` (the kernel's ``sock_i_uid``, what
``ss -e`` and ``sock_diag`` report):

    printf 'nameserver 127.0.0.1\\n' > /tmp/resolv.conf
    unshare -m sh -c 'mount --make-rprivate / &&
        mount --bind /tmp/resolv.conf /etc/resolv.conf &&
        .venv/bin/python tests/tools/lookup_owner.py 1000'

(docs/security-model.md, "Known items closed, third pass".)
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

import trio

from nonod.proxy._resolve import Resolver, start_connect

NAME = "probe.nono.test"
ADDRESS = "93.184.216.34"


def _owner(table: str, port: int) -> int:
    """The uid owning the socket bound to local ``port`` in ``/proc/net/<table>``; -1: none."""
    for suffix in ("", "6"):
        with open(f"/proc/net/{table}{suffix}", encoding="ascii") as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].split(":")[1], 16) == port:
                    return int(fields[7])
    return -1


def _serve(sock: socket.socket, seen: list[tuple[int, int]]) -> None:
    """Answer every query: an A record for ``NAME``, nothing for any other type."""
    while True:
        query, peer = sock.recvfrom(512)
        seen.append((peer[1], _owner("udp", peer[1])))
        end = 12 + query[12:].index(b"\0") + 5
        kind = struct.unpack("!H", query[end - 4:end - 2])[0]
        answer = (struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ADDRESS)
                  if kind == 1 else b"")
        sock.sendto(query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if answer else 0, 0, 0)
                    + query[12:end] + answer, peer)


def main(uid: int) -> None:
    seen: list[tuple[int, int]] = []
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 53))
    threading.Thread(target=_serve, args=(dns, seen), daemon=True).start()
    resolved = trio.run(Resolver().resolve, NAME, 443)
    print(f"the proxy's lookup of {NAME}: {resolved.addresses}")
    print(f"its query sockets (client port, owner uid): {seen}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    upstream, _ = start_connect("127.0.0.1", listener.getsockname()[1], owner=uid)
    port = upstream.getsockname()[1]
    print(f"its upstream connection made for uid {uid}: owner uid {_owner('tcp', port)}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
