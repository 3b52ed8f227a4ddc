"""The creation guard under the C init (``reaper_create.c``, ``_cinit.creation_section``): a
warm launch for a view with refused names (the fleet's: a writable workdir, its persistence
names refused) is ``nono-reaper --init`` from its first instruction, with no Python process
below the fork server, and the guard holds as under the Python init: a refused name is
refused by every creation syscall (EACCES), any other name is still created in a guarded
directory (emulated by the init, with the program's umask)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from nonod.sandbox import Launcher, LaunchRequest, _cinit, open_launcher
from nonod.sandbox._launcher import View

from ..conftest import SandboxUser
from ..proctree import wait_until
from . import test_home_caches
from .test_cinit import _c_init_waiting, _python_inits
from .test_createguard import OPENAT2, layout_policy
from .test_home_caches import home as cache_home  # noqa: F401 - the fixture
from .test_sandbox import probe

pytestmark = pytest.mark.userns

#: Every creation syscall at a refused name, then allowed names in the guarded workdir.
CODE = OPENAT2 + "".join(
    f"t(lambda: os.open('{name}', os.O_CREAT | os.O_WRONLY, 0o644))\n"
    f"t(lambda: openat2('{name}'))\n"
    f"t(lambda: os.mkdir('{name}'))\n"
    f"t(lambda: os.symlink('seed', '{name}'))\n"
    f"t(lambda: os.link('seed', '{name}'))\n"
    f"t(lambda: os.rename('seed', '{name}'))\n"
    f"t(lambda: os.mkfifo('{name}'))\n"
    for name in (".envrc", ".ENVRC", ".vscode")
) + (
    "os.umask(0o027)\n"
    "t(lambda: os.write(os.open('made.txt', os.O_CREAT | os.O_WRONLY, 0o666), b'made'))\n"
    "t(lambda: os.mkdir('madedir', 0o777))\n"
    "t(lambda: os.symlink('made.txt', 'madelink'))\n"
    "t(lambda: os.rename('seed', 'moved'))\n"
    "t(lambda: openat2('made2.txt'))\n"
    "t(lambda: oct(os.stat('made.txt').st_mode & 0o777))\n"
    "t(lambda: oct(os.stat('madedir').st_mode & 0o777))\n"
)
REFUSED = 7 * 3


async def _guarded_launch(monkeypatch: pytest.MonkeyPatch, home: Path, work: Path,
                          python: bool) -> tuple[set[int], str, list[str]]:
    """A warm launch of CODE in the workdir once an init waits for it: the Python inits
    under the fork server then, the session's init's executable right after the launch and
    what the program printed."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if python else "")
    policy = layout_policy(home, work)
    env = (("HOME", str(home)), ("PATH", "/usr/bin"))
    request = LaunchRequest(argv=tuple(probe(CODE)), cwd=str(work), env=env)
    async with open_launcher("namespaces") as launcher:
        first = await launcher.launch(policy, LaunchRequest(argv=("/bin/true",), cwd=str(work),
                                                            env=env))
        await first.wait_exited()
        if python:
            wait_until("a Python init", lambda: bool(_python_inits(launcher.pid)))
        else:
            wait_until("a C init ready", lambda: _c_init_waiting(launcher.pid))
        inits = _python_inits(launcher.pid)
        exe, out = await _run_gated(launcher, policy, request)
    return inits, exe, out


async def _run_gated(launcher: Launcher, policy: object, request: LaunchRequest
                     ) -> tuple[str, list[str]]:
    gate_r, gate_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        proc = await launcher.launch(policy, request, stdio=(gate_r, out_w, 2))  # type: ignore[arg-type]
    finally:
        os.close(gate_r)
        os.close(out_w)
    exe = os.readlink(f"/proc/{proc.pid}/exe")
    os.close(gate_w)
    with os.fdopen(out_r) as out:
        status = await proc.wait_exited()
        lines = out.read().splitlines()
    assert status.code == 0, lines
    return exe, lines


@pytest.fixture
def workdir(world_tmp: Path) -> tuple[Path, Path]:
    home = world_tmp / "home"
    work = home / "work"
    (work / "src").mkdir(parents=True)
    (work / "seed").write_text("x")
    return home, work


@pytest.mark.parametrize("python", [False, True], ids=["c", "python"])
def test_a_guarded_view_is_served_by_the_c_init(monkeypatch: pytest.MonkeyPatch,
                                               workdir: tuple[Path, Path], python: bool) -> None:
    home, work = workdir
    before = sorted(os.listdir(work))
    inits, exe, out = trio.run(_guarded_launch, monkeypatch, home, work, python)
    if not python:
        assert inits == set(), inits
        assert exe.startswith("/memfd:nono-reaper"), exe
    assert out[:REFUSED] == ["EACCES"] * REFUSED, out
    assert out[REFUSED:] == ["OK 4", "OK ", "OK ", "OK ", "OK 0", "OK 0o640",
                             "OK 0o750"], out
    made = ["made.txt", "madedir", "madelink", "made2.txt", "moved"]
    assert sorted(os.listdir(work)) == sorted({*before, *made} - {"seed"})
    assert not any((work / n).exists() for n in (".envrc", ".ENVRC", ".vscode"))
    assert (work / "made.txt").read_text() == "made"


def _view(refused: tuple[str, ...]) -> View:
    return View(mounts=(), pinned=(), landlock=None, creation_refused=refused)


def test_the_creation_section_carries_folded_names_and_refuses_non_ascii() -> None:
    """The guarded directories with their names folded (``.ENVRC`` is ``.envrc``), and no
    section, so no C init, for a name ``reaper_guard.c`` could not compare (its fold is not
    ASCII): that view keeps the Python init."""
    section = _cinit.creation_section(_view(("/w/.ENVRC", "/w/.envrc", "/h/.bashrc")))
    assert section is not None
    assert b".envrc" in section and b".ENVRC" not in section and b"/h" in section
    assert _cinit.creation_section(_view(("/w/.\u00e9nv",))) is None
    assert _cinit.creation_section(_view(())) == bytes(8)


@pytest.mark.parametrize("sandbox_user", ["unprivileged"], indirect=True)
def test_an_unprivileged_servers_guarded_sessions_survive_their_repairs(
        monkeypatch: pytest.MonkeyPatch, sandbox_user: SandboxUser,
        cache_home: Path) -> None:  # noqa: F811 - the fixture
    """A writable home's view (a creation guard, and a view guard for its caches) launched
    warm by an unprivileged fork server: the host removes and makes again the caches, the
    hub repairs the view, the session goes on (a C init there made every repair fail, and
    the session was ended: the repairs entered through the init's pidfd; now through the
    mount namespace the init hands the hub, ``reaper_outer.c``'s ``enter``)."""
    monkeypatch.setenv("NONO_TEST_WARM_INIT", "1")
    test_home_caches.test_a_cache_the_host_removes_and_makes_again_stays_out_of_reach(
        sandbox_user, cache_home)
