"""Caches kept outside the cache home are copy-on-write too (branch ``redteam14``).

Go builds what ``~/go/pkg/mod`` holds without checking it again, Cargo runs the ``build.rs``
of ``~/.cargo/registry/src``, Maven and Gradle load the jars of ``~/.m2`` and
``~/.gradle/caches``, ``npx`` runs what ``~/.npm/_npx`` holds: a session with a writable
home, or a writable grant of one of them, wrote code the host runs later. Each is an overlay
now, like the cache home; an absent one is refused to the creation guard.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec
import pytest

from nonod.policy import Access
from nonod.profiles import ResolveContext, parse_profile, resolve

from ..conftest import SandboxUser
from .test_cache_cow import _session as _lines
from .test_sandbox import policy, probe
from .test_viewguard import WAIT, _masked, _meanwhile

pytestmark = pytest.mark.userns

# (place, file in it) as a host tool left them.
PLANTED = (("go/pkg/mod/example.com/m@v1.0.0", "m.go"),
           (".cargo/registry/src/index-1/crate-1.0.0", "build.rs"),
           (".m2/repository/org/x/1.0", "x-1.0.jar"),
           (".npm/_npx/0abc/node_modules/tool", "index.js"),
           (".local/share/pipx/venvs/black/bin", "black"))


@pytest.fixture
def home(world_tmp: Path, sandbox_user: SandboxUser) -> Path:
    home = world_tmp / "home"
    (home / "proj").mkdir(parents=True)
    for place, name in PLANTED:
        (home / place).mkdir(parents=True)
        (home / place / name).write_text("HOST\n")
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    return home


def _session(user: SandboxUser, home: Path, grant: Path, code: str) -> list[str]:
    return _lines(user, policy((grant, Access.READWRITE), (home / "proj", Access.READWRITE)),
                  home, code)


@pytest.mark.parametrize("granted", ["home", "each"])
def test_caches_outside_the_cache_home_are_copy_on_write(
        sandbox_user: SandboxUser, home: Path, granted: str) -> None:
    """Each planted file is read, rewritten and read back in the session, and a new one is
    made beside it; on the host every file is as the tool left it and nothing was added.
    Granted as a writable home, and as a writable grant of each tool's own directory (all
    in one session: each cache's overlay is placed under its own grant)."""
    grants = [home] if granted == "home" else list(dict.fromkeys(
        home / place.split("/")[0] for place, _ in PLANTED))
    files = [home / place / name for place, name in PLANTED]
    out = _lines(sandbox_user, policy(*((g, Access.READWRITE) for g in grants),
                                      (home / "proj", Access.READWRITE)), home,
                 "".join(f"t(lambda: open('{f}').read().strip())\n"
                         f"t(lambda: open('{f}', 'w').write('SESSION'))\n"
                         f"t(lambda: open('{f}.new', 'w').write('NEW'))\n"
                         f"t(lambda: open('{f}').read())\n" for f in files))
    for at, (place, name) in enumerate(PLANTED):
        f = home / place / name
        assert out[4 * at:4 * at + 4] == ["OK HOST", "OK 7", "OK 3", "OK SESSION"], (place, out)
        assert f.read_text() == "HOST\n", place
        assert os.listdir(home / place) == [name], place


def test_an_absent_cache_outside_the_cache_home_is_refused_in_a_writable_home(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """No ``~/go`` and no ``~/.gradle`` at launch: no overlay can be placed, and the session
    would make the host's module cache itself. The names are refused to the creation guard;
    the rest of the home is written."""
    home = world_tmp / "fresh"
    (home / "proj").mkdir(parents=True)
    (home / ".cargo").mkdir()
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    out = _session(sandbox_user, home, home,
                   f"t(lambda: os.makedirs('{home}/go/pkg/mod/example.com'))\n"
                   f"t(lambda: os.makedirs('{home}/.cargo/registry/src'))\n"
                   f"t(lambda: os.mkdir('{home}/other'))\n"
                   f"t(lambda: os.rename('{home}/other', '{home}/.gradle'))\n"
                   f"t(lambda: open('{home}/.cargo/env', 'w').write('kept'))\n")
    assert out[:5] == ["EACCES", "EACCES", "OK ", "EACCES", "OK 4"], out
    assert sorted(os.listdir(home)) == [".cargo", "other", "proj"]
    assert os.listdir(home / ".cargo") == ["env"]


def test_the_way_to_a_cache_cannot_be_moved_aside(
        sandbox_user: SandboxUser, home: Path) -> None:
    """The overlay is at the cache itself (``~/go/pkg/mod``, a cache home kept at
    ``~/.var/cache``); the directories between the writable grant and it are not mount points.
    Renamed aside, with the cache's path made again in their place, the session's files were
    the host's cache: the next host build ran them. The way is anchored (``EBUSY``)."""
    deep = home / ".var/cache/go-build"
    deep.mkdir(parents=True)
    (deep / "entry").write_text("HOST\n")
    for path in (home / ".var", home / ".var/cache", deep, deep / "entry"):
        sandbox_user.chown(path)
    pol = msgspec.structs.replace(policy((home, Access.READWRITE)),
                                  cache_home=str(home / ".var/cache"))
    mod = "go/pkg/mod/example.com/m@v1.0.0"
    out = _lines(sandbox_user, pol, home,
                 f"t(lambda: os.rename('{home}/go', '{home}/go.aside'))\n"
                 f"t(lambda: os.rename('{home}/go/pkg', '{home}/go/pkg.aside'))\n"
                 f"t(lambda: os.makedirs('{home}/{mod}', exist_ok=True))\n"
                 f"t(lambda: open('{home}/{mod}/m.go', 'w').write('SESSION'))\n"
                 f"t(lambda: os.rename('{home}/.var', '{home}/var.aside'))\n"
                 f"t(lambda: os.makedirs('{deep}', exist_ok=True))\n"
                 f"t(lambda: open('{deep}/entry', 'w').write('SESSION'))\n"
                 f"t(lambda: open('{home}/proj/out', 'w').write('kept'))\n")
    assert out[:8] == ["EBUSY", "EBUSY", "OK ", "OK 7", "EBUSY", "OK ", "OK 7", "OK 4"], out
    assert (home / mod / "m.go").read_text() == "HOST\n"
    assert (deep / "entry").read_text() == "HOST\n"
    assert sorted(os.listdir(home)) == [".cargo", ".local", ".m2", ".npm", ".var", "go", "proj"]


def test_caches_the_callers_environment_moved_are_copy_on_write(
        sandbox_user: SandboxUser, home: Path) -> None:
    """``GOCACHE`` and ``GOPATH`` in the caller's environment (how its host tools are set
    up) move Go's build and module caches out of ``~/.cache`` and ``~/go``: the host's next
    build reads them there. Named in ``cache_dirs``, a writable grant that holds them makes
    them overlays, and an absent one (``CARGO_HOME``'s) is refused to the creation guard."""
    gocache, modcache = home / "build/go-cache", home / "work/go/pkg/mod"
    (gocache / "ab").mkdir(parents=True)
    (gocache / "ab/entry-d").write_text("HOST\n")
    modcache.mkdir(parents=True)
    for path in (home / "build", home / "work", *(home / "build").rglob("*"),
                 *(home / "work").rglob("*")):
        sandbox_user.chown(path)
    moved = (str(gocache), f"{home}/rust/registry", str(modcache))
    pol = msgspec.structs.replace(policy((home, Access.READWRITE)), cache_dirs=moved)
    out = _lines(sandbox_user, pol, home,
                 f"t(lambda: open('{gocache}/ab/entry-d', 'w').write('SESSION'))\n"
                 f"t(lambda: os.makedirs('{modcache}/example.com/m@v1'))\n"
                 f"t(lambda: os.makedirs('{home}/rust/registry/src'))\n"
                 f"t(lambda: open('{home}/build/other', 'w').write('kept'))\n")
    assert out[:4] == ["OK 7", "OK ", "EACCES", "OK 4"], out
    assert (gocache / "ab/entry-d").read_text() == "HOST\n"
    assert os.listdir(modcache) == []
    assert not (home / "rust").exists()
    assert (home / "build/other").read_text() == "kept"


def _moved(home: Path, environ: dict[str, str]) -> tuple[str, ...]:
    """``cache_dirs`` as resolution finds them for ``environ`` (the caller's)."""
    ctx = ResolveContext.for_user(home=str(home), workdir=str(home / "proj"), uid=0,
                                  environ=environ)
    return resolve(parse_profile(b'{"filesystem": {"read": ["/usr"]}}', "t"), ctx).cache_dirs


def test_resolution_names_the_caches_the_callers_environment_moved(home: Path) -> None:
    assert _moved(home, {"GOCACHE": f"{home}/build/go-cache", "GOPATH": f"{home}/work/go:/x",
                         "CARGO_HOME": f"{home}/rust", "UV_CACHE_DIR": "relative/uv",
                         "CONDA_PKGS_DIRS": "/c1,/c2"}) == (
        "/c1", "/c2", f"{home}/build/go-cache", f"{home}/rust/git", f"{home}/rust/registry",
        f"{home}/work/go/pkg/mod")


def test_a_moved_cache_that_holds_the_working_directory_is_not_one(home: Path) -> None:
    """``HF_HOME`` at the directory the project lies in: taken as a cache root, the
    project itself would be copy-on-write and the session's work lost."""
    assert _moved(home, {"HF_HOME": str(home / "proj"), "GOCACHE": str(home)}) == ()


def test_a_cache_outside_the_cache_home_kept_elsewhere_through_a_link(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """``~/go`` a link to ``~/data/go`` (kept on another disk), ``~/data`` granted writable:
    the module cache is where the link leads, and an overlay there."""
    home = world_tmp / "linked"
    mod = home / "data/go/pkg/mod/example.com/m@v1.0.0"
    mod.mkdir(parents=True)
    (mod / "m.go").write_text("HOST\n")
    (home / "proj").mkdir()
    (home / "go").symlink_to("data/go")
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    out = _session(sandbox_user, home, home / "data",
                   f"t(lambda: open('{mod}/m.go').read().strip())\n"
                   f"t(lambda: open('{mod}/m.go', 'w').write('SESSION'))\n"
                   f"t(lambda: open('{home}/data/other', 'w').write('kept'))\n")
    assert out[:3] == ["OK HOST", "OK 7", "OK 4"], out
    assert (mod / "m.go").read_text() == "HOST\n"
    assert (home / "data/other").read_text() == "kept"


def _masked_on_the_way(view: Path, home: Path, d: str) -> bool:
    """Whether the session's ``view`` masks ``home / d`` or a directory on its way there."""
    way = Path(d)
    return any(_masked(view, home / p) for p in (way, *way.parents) if p.parts)


def test_a_cache_the_host_removes_and_makes_again_stays_out_of_reach(
        sandbox_user: SandboxUser, home: Path) -> None:
    """The overlay lies on the host's directory entry (``~/.cache`` in a writable home, and
    ``~/go/pkg/mod`` below its anchored way): when the host removes the cache during the
    session (``rm -rf ~/.cache``, a cache clean-up) the kernel drops the mounts on it, and the
    directory a host tool makes again was the session's to write. The view guard masks what
    is made there instead."""
    def made(d: str) -> None:  # ``d`` and the directories on its way, inside ``home`` only
        (home / d).mkdir(parents=True, exist_ok=True)
        sandbox_user.chown(*(p for p in (home / d).parents if home in p.parents), home / d)

    for d in (".cache/go-build", "go/pkg/mod"):
        made(d)
    work = home / "proj"
    pol = policy((home, Access.READWRITE))

    def change() -> None:
        for d in (".cache", "go"):
            shutil.rmtree(home / d)
        for d in (".cache/go-build", "go/pkg/mod"):
            made(d)

    # What the guard masks is the overlay's place made again: ``~/.cache`` (the cache home)
    # whole, ``~/go/pkg/mod`` itself; looked for at each place on the way, not only at the
    # directory made last (its mask hides it: waited for, it ran out the 20 s bound).
    thread = _meanwhile(work, change, lambda view: all(
        _masked_on_the_way(view, home, d) for d in (".cache/go-build", "go/pkg/mod")))
    try:
        r = sandbox_user.run(pol, probe(
            WAIT + f"t(lambda: open('{home}/.cache/go-build/entry', 'w').write('SESSION'))\n"
            f"t(lambda: open('{home}/go/pkg/mod/m.go', 'w').write('SESSION'))\n"
            f"t(lambda: open('{home}/other', 'w').write('kept'))\n"),
            cwd=str(work), env=(("HOME", str(home)),))
    finally:
        thread.join()
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["EACCES", "EACCES", "OK 4"], r.stdout
    assert os.listdir(home / ".cache/go-build") == []
    assert os.listdir(home / "go/pkg/mod") == []


def test_a_long_list_of_moved_caches_is_looked_at_up_to_a_bound(home: Path) -> None:
    """The caller writes ``CONDA_PKGS_DIRS``: each entry would be a path every launch asks
    the host about."""
    many = ",".join(f"/pkgs/{i}" for i in range(100_000))
    assert _moved(home, {"CONDA_PKGS_DIRS": many}) == tuple(sorted(
        f"/pkgs/{i}" for i in range(16)))
