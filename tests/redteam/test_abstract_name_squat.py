"""Red team, names a session takes in a namespace it shares with the host: abstract Unix
socket names (the thirty-fourth pass, docs/security-model.md, found and not closed).

A session whose profile leaves the network unrestricted (nono's default) shares the host's
network namespace, and with it the one namespace of abstract Unix socket names. Landlock's
scope (ABI 6) stops the session *connecting* to a name outside its domain; nothing stops it
*binding* one. ``socket(AF_UNIX)`` is refused, but ``socketpair()`` is always allowed and
either of its sockets binds a name (it cannot listen: ``EINVAL``). A session bound
``@/tmp/.X11-unix/X1``-like names of the host's services before they start: the service then
got ``EADDRINUSE`` for as long as the session lived (an X server or Xwayland for that
display, a containerd shim, a D-Bus daemon given a fixed ``unix:abstract=``). Another
session of the host netns is the same. A profile with ``"unix_sockets": true`` can also
listen there, and a host client (which no scope restricts) connects to the session.

Not closed: the filter cannot see ``bind``'s address (a pointer) or its descriptor's family,
and the lengths of abstract and inet addresses overlap; Landlock has no rule for a bind of
an abstract name. A private network namespace (any network section) separates the names.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from nonod.policy import Access, Grant, ResolvedPolicy

from ..conftest import Result, SandboxUser
from ..sandbox.test_sandbox import PY

pytestmark = pytest.mark.userns

#: Binds the abstract ``NAME`` with a socket of a ``socketpair``, says so, holds it until
#: ``release`` appears.
SQUAT = r"""
import errno, os, socket, sys, time
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    a.bind(b"\0" + sys.argv[1].encode())
    print("BOUND", flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], flush=True)
open('held', 'w').close()
end = time.monotonic() + 60
while not os.path.exists('release') and time.monotonic() < end:
    time.sleep(0.05)
"""


def _policy(work: Path) -> ResolvedPolicy:
    return ResolvedPolicy(name="squat", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
        Grant(path=str(work), access=Access.READWRITE)), denials=())


@pytest.mark.xfail(strict=True, reason="found and not closed (docs/security-model.md, "
                   "thirty-fourth pass): a session of the host's network namespace binds "
                   "abstract Unix names through socketpair; nothing refuses a bind by name")
def test_a_session_of_the_hosts_network_takes_no_abstract_name_from_the_host(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """Now: ``BOUND`` in the session, and the host service's bind ``EADDRINUSE``."""
    name = f"/tmp/.X11-unix/X-nono-redteam34-{world_tmp.name}"
    sandbox_user.chown(world_tmp)
    out: list[Result] = []
    holder = threading.Thread(target=lambda: out.append(sandbox_user.run(
        _policy(world_tmp), [PY, "-S", "-c", SQUAT, name], cwd=str(world_tmp), timeout=90)))
    holder.start()
    try:
        end = time.monotonic() + 60
        while not (world_tmp / "held").exists() and holder.is_alive():
            assert time.monotonic() < end, "the squatter never said"
            time.sleep(0.05)
        assert holder.is_alive(), out
        service = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            service.bind(b"\0" + name.encode())
            service.listen(1)
            seen = "OK"
        except OSError as exc:
            seen = str(exc.strerror)
        finally:
            service.close()
    finally:
        (world_tmp / "release").touch()
        holder.join(90)
    assert out and out[0].code == 0, out
    assert seen == "OK", (out[0].stdout, seen)
