"""A tree a session leaves in its writable grant, deeper than the kernel's path limit.

A session makes such a tree one component at a time (``mkdir`` relative to the directory it
is in): no single path it names is too long. The next launch's walk for linked files
(``_linkscan``) looked each directory up by its whole path, and ``ENAMETOOLONG`` came out of
the plan as an untyped ``OSError``: every later launch on the project failed with an internal
error, where the profile could not even accept the layer degraded. Such a tree is left out
of the walk now, and the rest is walked: the launch is refused as one whose walk was cut
short, and one that accepts the layer degraded still gets the other linked names bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonod.errors import EnforcementUnavailable
from nonod.policy import Access
from nonod.sandbox import LaunchRequest
from nonod.sandbox._mounts import LINKED
from nonod.sandbox._plan import build_plan

from ..conftest import SandboxUser
from ..sandbox.test_sandbox import policy, probe

pytestmark = pytest.mark.userns

# 20 components of 250 bytes, each made from the one before: 5,020 bytes below ``src``.
DEEP = (
    "fd = os.open('src', os.O_RDONLY)\n"
    "for _ in range(20):\n"
    "    os.mkdir('d' * 250, dir_fd=fd)\n"
    "    fd = os.open('d' * 250, os.O_RDONLY, dir_fd=fd)\n"
    "t(lambda: open('linked', 'x', opener=lambda p, f: os.open(p, f, dir_fd=fd)).write('x'))\n"
    "t(lambda: os.link('linked', 'twin', src_dir_fd=fd, dst_dir_fd=fd))\n"
)


def test_a_tree_past_the_path_limit_refuses_the_next_launch_as_a_layer(
        world_tmp: Path, sandbox_user: SandboxUser) -> None:
    work = world_tmp / "a-work"
    (work / "src").mkdir(parents=True)  # (ruled by the creation guard: no emulation below)
    lib = world_tmp / "b-lib"  # another writable grant, walked after the workdir
    lib.mkdir()
    cache = world_tmp / "cache.py"  # a cache's file, linked into it (uv)
    cache.write_text("HOST-CODE\n")
    os.link(cache, lib / "cached.py")
    (lib / "own.py").write_text("mine\n")  # (so the file is bound, not the directory)
    sandbox_user.chown(work, work / "src", lib, lib / "own.py")
    pol = policy((work, Access.READWRITE), (lib, Access.READWRITE))
    r = sandbox_user.run(pol, probe(DEEP), cwd=str(work))
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["OK 1", "OK "]
    req = LaunchRequest(argv=("/bin/true",), cwd=str(work))
    with pytest.raises(EnforcementUnavailable, match="linked_files") as info:
        build_plan(pol, req)
    assert "longer than 4095 bytes" in str(info.value)
    accepted = policy((work, Access.READWRITE), (lib, Access.READWRITE),
                      allow_degraded=("linked_files",))
    plan, report = build_plan(accepted, req)
    assert "linked_files: partial" in report.summary()
    # The deep tree is left out, not the rest of the walk: the cache's file is still bound.
    assert (LINKED, str(lib / "cached.py")) in {(op.kind, op.target) for op in plan.mounts}
