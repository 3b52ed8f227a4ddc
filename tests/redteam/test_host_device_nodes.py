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
