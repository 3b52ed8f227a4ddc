"""Caches host tools trust are copy-on-write in a session (branch ``cachecow``).

Go links what ``~/.cache/go-build`` holds after checking only its size, pip installs the
wheels of its cache, pre-commit runs the environments of ``~/.cache/pre-commit``: a session
that wrote there would run code on the host later. A writable grant in the user's cache home
is an overlay: the host's directory under a tmpfs of the session's own. The session reads the
host's entries and its writes stay its own; the host's files never change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.profiles import ResolveContext, load_profile, parse_profile, resolve

from ..conftest import SandboxUser
from .test_masks import _run_while
from .test_sandbox import policy, probe
from .test_viewguard import _masked

pytestmark = pytest.mark.userns


@pytest.fixture
def cache_home(world_tmp: Path, sandbox_user: SandboxUser) -> Path:
    """``home`` with ``.cache/go-build/ab/entry`` (the host's compiled package) and a
    project."""
    home = world_tmp / "home"
    for d in (".cache/go-build/ab", "proj"):
        (home / d).mkdir(parents=True)
    (home / ".cache/go-build/ab/entry").write_text("HOST-OBJECT\n")
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    return home


def _cached(home: Path, *grants: tuple[Path, Access], **kw: object) -> ResolvedPolicy:
    pol = policy((home / "proj", Access.READWRITE), *grants, **kw)
    return msgspec.structs.replace(pol, cache_home=str(home / ".cache"))


WRITE_AND_READ = (
    "t(lambda: sorted(os.listdir(C + '/ab'))[0])\n"
    "t(lambda: open(C + '/ab/entry').read().strip())\n"
    "t(lambda: open(C + '/ab/entry', 'w').write('SESSION-OBJECT'))\n"
    "t(lambda: open(C + '/ab/new', 'w').write('SESSION-NEW'))\n"
    "t(lambda: open(C + '/ab/entry').read())\n"
    "t(lambda: open(C + '/ab/new').read())\n"
    "t(lambda: os.mkdir(C + '/cd'))\n"
)


def _writes_stay_private(user: SandboxUser, pol: ResolvedPolicy, home: Path,
                        more: str = "") -> None:
    """A session of ``pol`` sees the host's entry in ``~/.cache/go-build``, rewrites it,
    writes a new one and a directory, reads both back (then runs ``more``); the host's cache
    is as it was."""
    cache = home / ".cache/go-build"
    r = user.run(pol, probe(f"C = {str(cache)!r}\n" + WRITE_AND_READ + more),
                 cwd=str(home / "proj"), env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:7] == ["OK entry", "OK HOST-OBJECT", "OK 14", "OK 11",
                                        "OK SESSION-OBJECT", "OK SESSION-NEW", "OK "], r.stdout
    assert (cache / "ab/entry").read_text() == "HOST-OBJECT\n"
    assert sorted(os.listdir(cache)) == ["ab"]
    assert sorted(os.listdir(cache / "ab")) == ["entry"]


def test_a_writable_cache_grant_is_copy_on_write(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    pol = _cached(cache_home, (cache_home / ".cache/go-build", Access.READWRITE))
    _writes_stay_private(sandbox_user, pol, cache_home)


def test_a_writable_home_keeps_its_cache_copy_on_write(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    """A grant holding the cache home: the cache is an overlay inside it; the rest of the
    home is written as before. The policy names no cache home: ``~/.cache`` is one."""
    pol = policy((cache_home, Access.READWRITE))
    _writes_stay_private(sandbox_user, pol, cache_home,
                         f"t(lambda: open('{cache_home}/proj/out', 'w').write('kept'))\n")
    assert sorted(os.listdir(cache_home / ".cache")) == ["go-build"]
    assert (cache_home / "proj/out").read_text() == "kept"


def test_shared_caches_are_written_on_the_host(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    """The opt-out: a cache listed in ``shared_caches`` is the host's, as before; listed
    below a writable grant that holds it, it is bound over the overlay."""
    cache = cache_home / ".cache/go-build"
    for grant in (cache, cache_home):
        pol = _cached(cache_home, (grant, Access.READWRITE), shared_caches=(str(cache),))
        r = sandbox_user.run(pol, probe(
            f"t(lambda: open('{cache}/ab/new', 'w').write('SHARED'))\n"
            f"t(lambda: open('{cache_home}/.cache/other', 'w').write('PRIVATE'))\n"),
            cwd=str(cache_home / "proj"), env=(("HOME", str(cache_home)),))
        assert r.code == 0, r.stderr
        outside = "OK 7" if grant == cache_home else "EROFS"  # not granted: ~/.cache
        assert r.stdout.split("\n")[:2] == ["OK 6", outside], r.stdout
        assert (cache / "ab/new").read_text() == "SHARED"
        assert not (cache_home / ".cache/other").exists()
        (cache / "ab/new").unlink()


def test_a_writable_file_grant_in_a_cache_is_read_only(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    entry = cache_home / ".cache/go-build/ab/entry"
    pol = _cached(cache_home)
    pol = msgspec.structs.replace(pol, grants=(
        *pol.grants, Grant(path=str(entry), access=Access.READWRITE, is_file=True)))
    r = sandbox_user.run(pol, probe(
        f"t(lambda: open('{entry}').read().strip())\n"
        f"t(lambda: open('{entry}', 'w').write('x'))\n"),
        cwd=str(cache_home / "proj"), env=(("HOME", str(cache_home)),))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["OK HOST-OBJECT", "EROFS"], r.stdout
    assert entry.read_text() == "HOST-OBJECT\n"


def test_denied_paths_in_a_cache_stay_out_when_the_host_changes_them(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    """The view guard's inotify watches see nothing the host does in an overlay's lower
    layer: a denied path absent at launch is made present (opaque) in the upper layer and
    masked; a present one keeps its mask when the host renames it away and makes a new
    one (the mount is on the overlay's dentry, which the host's rename does not touch)."""
    cache = cache_home / ".cache"
    absent, deeper, present = cache / "token", cache / "gh/hosts.yml", cache / "secret"
    absent_dir = cache / "creds"
    present.mkdir()
    (present / "key").write_text("OLD-CANARY\n")
    sandbox_user.chown(present, present / "key")
    pol = _cached(cache_home, (cache, Access.READWRITE))
    pol = msgspec.structs.replace(pol, denials=(
        *pol.denials, Denial(path=str(absent), is_file=True),
        Denial(path=str(deeper), is_file=True), Denial(path=str(present)),
        Denial(path=str(absent_dir))))
    work = cache_home / "proj"

    def change() -> None:
        absent.write_text("TOKEN-CANARY\n")
        deeper.parent.mkdir()
        deeper.write_text("HOSTS-CANARY\n")
        present.rename(cache / "moved")
        present.mkdir()
        (present / "key").write_text("NEW-CANARY\n")
        absent_dir.mkdir()
        (absent_dir / "key").write_text("DIR-CANARY\n")

    r = _run_while(sandbox_user, pol, work, change,
                   f"t(lambda: open('{absent}').read())\n"
                   f"t(lambda: open('{deeper}').read())\n"
                   f"t(lambda: open('{present}/key').read())\n"
                   f"t(lambda: os.listdir('{present}'))\n"
                   f"t(lambda: open('{absent_dir}/key').read())\n"
                   f"t(lambda: os.listdir('{absent_dir}'))\n",
                   lambda view: all(_masked(view, path) for path in
                                    (absent, deeper, present, absent_dir)))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:6] == ["EACCES"] * 6, r.stdout
    assert "CANARY" not in r.stdout
    assert (cache / "moved/key").read_text() == "OLD-CANARY\n"


def test_the_shipped_go_dev_profile_writes_only_its_own_build_cache(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    """``go-dev`` grants ``~/.cache/go-build`` read-write: resolved for this home (the
    cache home comes from resolution), a session's compiled package never reaches the
    host's cache."""
    ctx = ResolveContext(home=str(cache_home), workdir=str(cache_home / "proj"),
                         uid=sandbox_user.uid)
    pol = resolve(load_profile("go-dev", user_dir=None), ctx)
    assert pol.cache_home == str(cache_home / ".cache")
    _writes_stay_private(sandbox_user, pol, cache_home)


def test_the_way_made_to_an_absent_denied_path_keeps_its_mode_whatever_the_umask(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    """``~/.cache/gh`` does not exist and ``~/.cache/gh/hosts.yml`` is denied: the upper
    layer holds ``gh`` (mode 0755, not the daemon's umask's) and the masked file in it."""
    cache = cache_home / ".cache"
    pol = _cached(cache_home, (cache, Access.READWRITE))
    pol = msgspec.structs.replace(pol, denials=(
        *pol.denials, Denial(path=str(cache / "gh/hosts.yml"), is_file=True)))
    r = sandbox_user.run(pol, probe(
        f"t(lambda: oct(os.stat('{cache}/gh').st_mode & 0o777))\n"
        f"t(lambda: os.listdir('{cache}/gh')[0])\n"
        f"t(lambda: open('{cache}/gh/hosts.yml').read())\n"
        f"t(lambda: open('{cache}/gh/config.yml', 'w').write('mine'))\n"),
        cwd=str(cache_home / "proj"), env=(("HOME", str(cache_home)),), umask=0o177)
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["OK 0o755", "OK hosts.yml", "EACCES", "OK 4"], r.stdout
    assert sorted(os.listdir(cache)) == ["go-build"]


def _session(user: SandboxUser, pol: ResolvedPolicy, home: Path, code: str) -> list[str]:
    """The probe lines of a session of ``pol`` run from ``home/proj`` with that ``HOME``."""
    r = user.run(pol, probe(code), cwd=str(home / "proj"), env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    return r.stdout.split("\n")


def _linked_store(user: SandboxUser, home: Path) -> Path:
    """``home/data/hf`` with ``modules/remote.py`` (the host's), ``~/.cache/hf`` linking
    to it: a cache moved to a larger disk."""
    store = home / "data/hf"
    (store / "modules").mkdir(parents=True)
    (store / "modules/remote.py").write_text("HOST-MODULE\n")
    (home / ".cache/hf").symlink_to(store)
    for path in (home / "data", store, store / "modules", store / "modules/remote.py"):
        user.chown(path)
    return store


def test_a_cache_home_the_session_could_make_or_re_point_is_refused(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """A writable home without ``~/.cache`` at launch (no overlay can be placed there), or
    with ``~/.cache`` a link: the session could make the host's cache home itself (or put
    its own directory in the link's place), and host tools would run what it left there.
    The name is refused to the creation guard; the rest of the home is written as before.
    """
    for linked in (False, True):
        home = world_tmp / f"home-{linked}"
        (home / "proj").mkdir(parents=True)
        if linked:
            (home / "data/cache").mkdir(parents=True)
            (home / ".cache").symlink_to("data/cache")
        for path in (home, *home.rglob("*")):
            sandbox_user.chown(path)
        c = f"{home}/.cache"
        out = _session(sandbox_user, policy((home, Access.READWRITE)), home,
                       f"t(lambda: [os.unlink('{c}')] if os.path.islink('{c}') else [])\n"
                       f"t(lambda: os.makedirs('{c}/go-build'))\n"
                       f"t(lambda: os.symlink('elsewhere', '{c}'))\n"
                       f"t(lambda: os.mkdir('{home}/other'))\n"
                       f"t(lambda: os.rename('{home}/other', '{c}'))\n"
                       f"t(lambda: open('{home}/proj/out', 'w').write('kept'))\n")
        assert out[:6] == ["OK ", "EACCES", "EACCES", "OK ", "EACCES", "OK 4"], (linked, out)
        assert not os.path.lexists(home / ".cache/go-build")
        assert (home / "proj/out").read_text() == "kept"


def test_a_cache_kept_elsewhere_through_a_link_is_copy_on_write(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    """``~/.cache/hf`` a link to ``~/data/hf`` (a cache moved to a larger disk): a profile
    granting ``~/.cache/hf`` writable resolved to ``~/data/hf``, outside the cache home, and
    was bound writable; host tools reach it as their cache. It is an overlay now."""
    store = _linked_store(sandbox_user, cache_home)
    ctx = ResolveContext(home=str(cache_home), workdir=str(cache_home / "proj"),
                         uid=sandbox_user.uid)
    profile = parse_profile(json.dumps({
        "meta": {"name": "hf"}, "filesystem": {"allow": ["~/.cache/hf"], "read": ["/usr"]},
    }).encode(), "hf")
    resolved = resolve(profile, ctx)
    assert resolved.cache_links == (str(store),)
    assert any(g.path == str(store) and g.access.writes for g in resolved.grants)
    pol = msgspec.structs.replace(_cached(cache_home, (store, Access.READWRITE)),
                                  cache_links=resolved.cache_links)
    out = _session(sandbox_user, pol, cache_home,
                   f"t(lambda: open('{store}/modules/remote.py').read().strip())\n"
                   f"t(lambda: open('{store}/modules/remote.py', 'w').write('SESSION'))\n"
                   f"t(lambda: open('{store}/modules/new.py', 'w').write('NEW'))\n"
                   f"t(lambda: open('{store}/modules/remote.py').read())\n")
    assert out[:4] == ["OK HOST-MODULE", "OK 7", "OK 3", "OK SESSION"], out
    assert (store / "modules/remote.py").read_text() == "HOST-MODULE\n"
    assert sorted(os.listdir(store / "modules")) == ["remote.py"]


def test_a_cache_kept_elsewhere_is_copy_on_write_however_granted(
        sandbox_user: SandboxUser, cache_home: Path) -> None:
    """The same store granted by its own path (``~/data`` writable, the link not named):
    the cache home's links say where its caches are kept. With the cache home under
    ``shared_caches``, the store is the host's, as the cache home is."""
    module = _linked_store(sandbox_user, cache_home) / "modules/remote.py"
    for shared in ((), (str(cache_home / ".cache"),)):
        pol = _cached(cache_home, (cache_home / "data", Access.READWRITE), shared_caches=shared)
        out = _session(sandbox_user, pol, cache_home,
                       f"t(lambda: open('{module}', 'w').write('SESSION'))\n"
                       f"t(lambda: open('{cache_home}/data/other', 'w').write('kept'))\n")
        assert out[:2] == ["OK 7", "OK 4"], out
        assert module.read_text() == ("SESSION" if shared else "HOST-MODULE\n")
        assert (cache_home / "data/other").read_text() == "kept"
