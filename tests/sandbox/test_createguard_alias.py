"""The creation guard against a guarded directory that the view also shows at a second path
(review17): a host bind mount of the workdir below an ordinary subdirectory of the writable
home. Layer 2 puts its creation rule on that subdirectory (it is off the way to every
guarded directory by path), and Landlock grants beneath a rule by the path walked, so the
workdir's refused names are created through the alias: the walk is by path, the guard is
by identity, and only a direct child of a directory on the way is recognised as the same
directory (``prepare``'s identity check). Run with ``NONO_TEST_WARM_INIT=1`` for the C init
(``reaper_create.c``), with ``NONO_PYTHON_INIT=1`` too for the Python one: the same."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import SandboxUser
from .test_createguard import layout, run_in  # noqa: F401 - the fixture

pytestmark = [pytest.mark.userns, pytest.mark.root]


@pytest.fixture
def alias(layout: tuple[Path, Path]) -> Iterator[Path]:  # noqa: F811 - the fixture
    """``home/sub/alias``: the workdir bound there on the host."""
    home, work = layout
    target = home / "sub" / "alias"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(work), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@pytest.mark.xfail(strict=True, reason="found by review17, not closed: docs/security-model.md")
def test_a_refused_name_is_refused_through_a_second_mount_of_its_directory(
        sandbox_user: SandboxUser, layout: tuple[Path, Path],  # noqa: F811 - the fixture
        alias: Path) -> None:
    home, work = layout
    code = (f"t(lambda: os.close(os.open('{alias}/.envrc', os.O_CREAT | os.O_WRONLY, 0o644)))\n"
            f"t(lambda: os.mkdir('{alias}/.vscode'))\n")
    out = run_in(sandbox_user, home, work, code)
    made = [name for name in (".envrc", ".vscode") if (work / name).exists()]
    assert (out, made) == (["EACCES", "EACCES"], [])
