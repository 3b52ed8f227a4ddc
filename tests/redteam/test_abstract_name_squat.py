"""Red team, names a session takes in a namespace it shares with the host: abstract Unix
socket names (the thirty-fourth pass, docs/security-model.md).

A session whose profile leaves the network unrestricted (nono's default) shares the host's
network namespace, and with it the one namespace of abstract Unix socket names. Landlock's
scope (ABI 6) stops the session *connecting* to a name outside its domain; nothing stopped it
*binding* one. ``socket(AF_UNIX)`` is refused, but ``socketpair()`` is always allowed and
either of its sockets bound any name (it cannot listen: ``EINVAL``). A session bound names of
the host's services before they started (an X server's ``@/tmp/.X11-unix/X<n>``, a
containerd shim's, a D-Bus daemon given a fixed ``unix:abstract=``): the service then got
``EADDRINUSE`` for as long as the session lived.

Closed where the session may make no Unix socket: the filter refuses a ``bind`` whose address
length no inet or netlink address has (``_seccomp.BIND_LENGTHS``), the only thing of the
address it can read. Not closed: abstract names whose address is 12, 16, 24 or 28 bytes
long (9, 13, 21 or 25 bytes of name), and every name for a profile with
``"unix_sockets": true``, which can also listen there for host clients.
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


def _squat(user: SandboxUser, work: Path, name: str) -> tuple[str, str]:
    """What the session said of its bind of ``name``, and what the host's service then got
    from its own bind and listen of it."""
    user.chown(work)
    out: list[Result] = []
    holder = threading.Thread(target=lambda: out.append(user.run(
        _policy(work), [PY, "-S", "-c", SQUAT, name], cwd=str(work), timeout=90)))
    holder.start()
    try:
        end = time.monotonic() + 60
        while not (work / "held").exists() and holder.is_alive():
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
        (work / "release").touch()
        holder.join(90)
    assert out and out[0].code == 0, out
    return out[0].stdout.strip(), seen


def test_a_session_of_the_hosts_network_takes_no_abstract_name_from_the_host(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """Before: ``BOUND`` in the session, and the host service's bind ``EADDRINUSE``."""
    name = f"/tmp/.X11-unix/X-nono-redteam34-{world_tmp.name}"
    assert _squat(sandbox_user, world_tmp, name) == ("EPERM", "OK")


def test_a_session_still_binds_inet_addresses(sandbox_user: SandboxUser,
                                              world_tmp: Path) -> None:
    """The refusal reads the address's length only: IPv4 (16), IPv6 (28), a buffer as large
    as ``sockaddr_storage`` (128) still bind; a Unix autobind (2) does not."""
    program = (
        "import ctypes, errno, socket, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = []\n"
        "for family, addr in ((socket.AF_INET, ('127.0.0.1', 0)),"
        " (socket.AF_INET6, ('::1', 0))):\n"
        "    s = socket.socket(family)\n"
        "    s.bind(addr)\n"
        "    out.append('OK')\n"
        "s = socket.socket()\n"
        "buf = struct.pack('=HH4s', socket.AF_INET, 0, bytes(4)).ljust(128, b'\\0')\n"
        "out.append('OK' if libc.bind(s.fileno(), buf, 128) == 0 else"
        " errno.errorcode[ctypes.get_errno()])\n"
        "a, b = socket.socketpair()\n"
        "try:\n"
        "    a.bind(b'')\n"
        "    out.append('BOUND')\n"
        "except OSError as e:\n"
        "    out.append(errno.errorcode[e.errno])\n"
        "print(*out)\n")
    sandbox_user.chown(world_tmp)
    r = sandbox_user.run(_policy(world_tmp), [PY, "-S", "-c", program], cwd=str(world_tmp))
    assert (r.code, r.stdout.split()) == (0, ["OK", "OK", "OK", "EPERM"]), r


@pytest.mark.xfail(strict=True, reason="found and not closed (docs/security-model.md, "
                   "thirty-fourth pass): an abstract name whose address has an inet "
                   "address's length (here 16 bytes) is still bound; the filter reads only "
                   "the length")
def test_a_session_takes_no_abstract_name_of_an_inet_addresss_length(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """Now: a 13-byte name (a 16-byte address, as ``sockaddr_in``) ``BOUND``, the host's
    bind ``EADDRINUSE``."""
    name = f"n34-{world_tmp.name[-8:]}x"  # 13 bytes, unique to the test
    assert _squat(sandbox_user, world_tmp, name) == ("EPERM", "OK")
