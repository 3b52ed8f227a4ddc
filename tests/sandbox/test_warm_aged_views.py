"""A warm launcher's prepared view must not outlive what it was built from: what the host
replaces between preparation and launch is seen afresh, whatever kind of bind showed it
(``_forkserver._bound_sources``). Red-team review of the prepared views."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sandbox._mounts import idmap_available

pytestmark = [pytest.mark.userns, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="makes a directory in /etc")]

PY = "/usr/bin/python3"
READ = "import sys; print(open(sys.argv[1]).read().strip())"


@pytest.fixture
def etc_dir() -> Iterator[Path]:
    """A directory in /etc (a uid-0 session's read-only grants there are idmapped)."""
    path = Path("/etc") / f"nono-aged-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(f"{path}.old", ignore_errors=True)


@pytest.mark.skipif(not idmap_available(), reason="the kernel cannot idmap /etc here")
def test_an_idmapped_directory_replaced_after_preparation_is_seen_afresh(etc_dir: Path
                                                                         ) -> None:
    """A uid-0 session's read-only grant in /etc is an idmapped tree the fork server clones
    when it makes the warm launcher. The host replaces that directory (``mv``, ``mkdir``:
    how a package or config tool rotates one) after the policy's launchers were prepared:
    the next session reads the new directory, not the clone of the old one."""
    (etc_dir / "conf").write_text("old\n")
    policy = ResolvedPolicy(name="aged", grants=(Grant(path="/usr", access=Access.READ),
                                                 Grant(path=str(etc_dir), access=Access.READ)),
                            denials=())

    async def read(launcher: object) -> str:
        out_r, out_w = os.pipe()
        try:
            proc = await launcher.launch(  # type: ignore[attr-defined]
                policy, LaunchRequest(argv=(PY, "-S", "-c", READ, str(etc_dir / "conf")),
                                      cwd="/", uid=0, gid=0),
                stdio=(0, out_w, 2))
        finally:
            os.close(out_w)
        with os.fdopen(out_r, "rb") as out:
            status = await proc.wait_exited()
            text = out.read().decode().strip()
        assert status.code == 0, status
        return text

    async def main() -> tuple[list[str], str]:
        async with open_launcher("namespaces") as launcher:
            before = [await read(launcher) for _ in range(4)]
            etc_dir.rename(f"{etc_dir}.old")
            etc_dir.mkdir(mode=0o755)
            (etc_dir / "conf").write_text("new\n")
            after = await read(launcher)
        return before, after

    before, after = trio.run(main)
    assert before == ["old"] * 4
    assert after == "new"
