"""Red team, the host's device nodes in a session's view (the thirty-first pass,
docs/security-model.md): ``/dev/null``, ``zero``, ``full``, ``random``, ``urandom`` and
``tty`` are the host's own inodes, bound into the session's ``/dev``, and the binds were
writable. Landlock (ABI 7) does not check ``chmod``, ``chown``, ``utimes`` or extended
attributes, and the kernel lets a file's owner change its mode without any capability, so a
uid 0 session (a root daemon's session of root, mapped to the host's uid 0) could change the
host's ``/dev/null`` for every process of the host: ``chmod 000 /dev/null`` and every other
user's programs lose it. The threat table says "``chmod``, ``chown``, ``utime``,
``setxattr`` outside its grants: read grants are read-only mounts"; these six were not.

Closed by binding them read-only: writing to a character device does not need a writable
mount (the kernel takes no write access on the mount for special files), changing the inode
does (``EROFS``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonod.policy import Access, Grant, ResolvedPolicy

from ..conftest import SandboxUser
from ..sandbox.test_sandbox import probe

pytestmark = pytest.mark.userns

#: Each node's mode and times set to what they are (nothing changes, whoever may), then the
#: nodes used as programs use them.
NODES = ("null", "zero", "full", "random", "urandom", "tty")
CHANGE = "".join(
    f"st = os.stat('/dev/{name}')\n"
    f"t(lambda: os.chmod('/dev/{name}', st.st_mode & 0o7777))\n"
    f"t(lambda: os.utime('/dev/{name}', ns=(st.st_atime_ns, st.st_mtime_ns)))\n"
    for name in NODES
) + (
    "t(lambda: os.write(os.open('/dev/null', os.O_WRONLY), b'x'))\n"
    "t(lambda: len(os.read(os.open('/dev/urandom', os.O_RDONLY), 8)))\n"
    "t(lambda: os.read(os.open('/dev/zero', os.O_RDONLY), 2).hex())\n"
    "t(lambda: os.open('/dev/tty', os.O_RDWR))\n"  # no controlling terminal here: ENXIO
)


def test_a_session_changes_none_of_the_hosts_device_nodes(sandbox_user: SandboxUser,
                                                          world_tmp: Path) -> None:
    """Before, for root: ``OK`` twelve times (the host's nodes were the session's to change);
    for uid 65534 ``EPERM`` (root owns them)."""
    policy = ResolvedPolicy(name="devices", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ)),
        denials=())
    before = {name: (Path("/dev", name).stat().st_mode, Path("/dev", name).stat().st_mtime_ns)
              for name in NODES}
    r = sandbox_user.run(policy, probe(CHANGE), cwd="/usr")
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["EROFS"] * 12 + ["OK 1", "OK 8", "OK 0000", "ENXIO"]
    assert before == {name: (Path("/dev", name).stat().st_mode,
                             Path("/dev", name).stat().st_mtime_ns) for name in NODES}


#: Host device nodes a profile may grant (an emulator's /dev/kvm, a loop device, tun).
GRANTED_FILES = tuple(p for p in ("/dev/kvm", "/dev/loop-control") if Path(p).exists())


@pytest.mark.skipif(not GRANTED_FILES or not Path("/dev/net/tun").exists(),
                    reason="no /dev/kvm or /dev/loop-control, or no /dev/net/tun")
def test_a_granted_device_is_used_but_its_host_node_not_changed(
        sandbox_user: SandboxUser) -> None:
    """review27: the thirty-first pass made the six nodes the sandbox provides read-only; a
    profile's own write grant of a host device (``/dev/kvm``, a loop device) or of a directory
    of them (``/dev/net``, ``/dev/dri``) was still bound writable, so a uid 0 session could
    ``chmod 0666 /dev/kvm`` or a loop device (raw access to what it backs) for every user of
    the host, or make names in the host's ``/dev``. Before, for root: ``OK`` for each change
    (here to the same mode and times, or a name made and removed at once). Now ``EROFS``,
    and the devices open for reading and writing as the grant says."""
    node = GRANTED_FILES[0]
    policy = ResolvedPolicy(name="devices", grants=(
        Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
        Grant(path=node, access=Access.READWRITE, is_file=True),
        Grant(path="/dev/net", access=Access.READWRITE)), denials=())
    code = "".join(
        f"st = os.stat({path!r})\n"
        f"t(lambda: os.chmod({path!r}, st.st_mode & 0o7777))\n"
        f"t(lambda: os.utime({path!r}, ns=(st.st_atime_ns, st.st_mtime_ns)))\n"
        for path in (node, "/dev/net/tun", "/dev/net")
    ) + (
        "t(lambda: os.unlink(os.close(os.open('/dev/net/nono-r27', os.O_CREAT | os.O_WRONLY))"
        " or '/dev/net/nono-r27'))\n"
        f"t(lambda: os.close(os.open({node!r}, os.O_RDWR)) or 0)\n"
        "t(lambda: os.close(os.open('/dev/net/tun', os.O_RDWR)) or 0)\n"
    )
    paths = (node, "/dev/net/tun", "/dev/net")
    before = {p: (os.stat(p).st_mode, os.stat(p).st_mtime_ns) for p in paths}
    r = sandbox_user.run(policy, probe(code), cwd="/usr")
    assert r.code == 0, r.stderr
    used = ["OK 0", "OK 0"] if sandbox_user.uid == 0 else ["EACCES", "EACCES"]  # root's 0600
    assert r.stdout.splitlines() == ["EROFS"] * 7 + used
    assert before == {p: (os.stat(p).st_mode, os.stat(p).st_mtime_ns) for p in paths}
    assert not os.path.lexists("/dev/net/nono-r27")
