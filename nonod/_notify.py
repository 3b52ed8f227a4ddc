"""systemd readiness notification (``sd_notify``) without a library: one datagram.

Under ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and waits for ``READY=1``. Outside systemd the variable is unset and this is a no-op.
"""

from __future__ import annotations

import os
import socket


def notify(state: str, *, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``RELOADING=1``...); True if sent."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        except OSError:
            # systemd went away or never listened: readiness is advisory, the daemon serves on.
            return False
    return True
