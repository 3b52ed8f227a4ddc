"""Cache files hard-linked into a writable grant are read-only in the session (branch
``hardlink``).

uv (its default link mode on Linux) and pnpm hard-link their caches into projects: written in
place through the project's name, the cache's inode changed, and every later ``uv sync`` on
the host linked the session's bytes. The layouts here are made as uv makes them (a file in
``~/.cache/uv/archive-v0/...`` and a link of it in the project's ``.venv``); the sessions are
real, and the host's inode is read after them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from nonod.errors import EnforcementUnavailable
from nonod.policy import Access
from nonod.sandbox import LaunchRequest, _cinit, open_launcher
from nonod.sandbox._linkscan import Budget, scan
from nonod.sandbox._mounts import BIND_DIR, LINKED, MASK_DIR, OVERLAY, READONLY, MountOp
from nonod.sandbox._plan import build_plan

from ..conftest import NOBODY, SandboxUser
from .test_sandbox import PY, policy, probe

SITE = ".venv/lib/python3.12/site-packages/pkg"
ARCHIVE = ".cache/uv/archive-v0/Xq3/pkg"


@pytest.fixture
def uv_home(world_tmp: Path, sandbox_user: SandboxUser) -> Path:
    """``home`` with uv's cache entry ``pkg/__init__.py`` and ``pkg/sub/mod.py``
    hard-linked into ``proj/.venv`` (beside files uv and Python write there: ``pyvenv.cfg``,
    ``__pycache__``), a file of the project's own, and a file with two names both in the
    project (``a`` and ``b``)."""
    home = world_tmp / "home"
    for d in (f"{ARCHIVE}/sub", f"proj/{SITE}/sub", f"proj/{SITE}/__pycache__"):
        (home / d).mkdir(parents=True)
    (home / "proj/.venv/pyvenv.cfg").write_text("home = /usr/bin\n")
    (home / "proj" / SITE / "__pycache__/__init__.cpython-312.pyc").write_text("pyc")
    for name in ("__init__.py", "sub/mod.py"):
        cached = home / ARCHIVE / name
        cached.write_text("HOST-CODE\n")
        os.link(cached, home / "proj" / SITE / name)
    (home / "proj/main.py").write_text("mine\n")
    (home / "proj/a").write_text("twins\n")
    os.link(home / "proj/a", home / "proj/b")
    for path in (home, *home.rglob("*")):
        sandbox_user.chown(path)
    return home


@pytest.mark.userns
def test_a_cache_file_linked_into_the_workdir_cannot_be_written_through_it(
        sandbox_user: SandboxUser, uv_home: Path) -> None:
    proj = uv_home / "proj"
    cached = uv_home / ARCHIVE / "__init__.py"
    before = os.stat(cached)
    linked = f"{proj}/{SITE}/__init__.py"
    r = sandbox_user.run(policy((proj, Access.READWRITE), (uv_home / ".cache", Access.READ)),
                         probe(
        f"L = {linked!r}\n"
        "t(lambda: open(L).read().strip())\n"
        "t(lambda: open(L, 'w').write('POISON'))\n"
        "t(lambda: open(L, 'r+').write('POISON'))\n"
        "t(lambda: open(L, 'a').write('POISON'))\n"
        "t(lambda: os.truncate(L, 0))\n"
        "t(lambda: os.chmod(L, 0o777))\n"
        "t(lambda: os.utime(L, (0, 0)))\n"
        "t(lambda: open('/proc/self/fd/%d' % os.open(L, os.O_RDONLY), 'w').write('P'))\n"
        "t(lambda: os.link(L, 'again'))\n"
        "t(lambda: os.unlink(L))\n"
        "t(lambda: open('new.py', 'w').write('upgraded'))\n"
        "t(lambda: os.replace('new.py', L))\n"
        "t(lambda: open('main.py', 'w').write('edited'))\n"
        "t(lambda: open('a', 'w').write('both'))\n"
        "t(lambda: open('b').read())\n"
        f"S = {str(proj / SITE)!r}\n"
        "t(lambda: open(S + '/sub/mod.py', 'a').write('POISON'))\n"
        "t(lambda: open(S + '/sub/new.py', 'w').write('x'))\n"
        "t(lambda: open(S + '/__pycache__/y.pyc', 'w').write('pyc'))\n"
    ), cwd=str(proj))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:18] == [
        "OK HOST-CODE", "EROFS", "EROFS", "EROFS", "EROFS", "EROFS", "EROFS", "EROFS", "EXDEV",
        "EBUSY", "OK 8", "EBUSY", "OK 6", "OK 4", "OK both", "EROFS", "EROFS", "OK 3"], r.stdout
    after = os.stat(cached)
    assert cached.read_text() == (uv_home / ARCHIVE / "sub/mod.py").read_text() == "HOST-CODE\n"
    assert (after.st_ino, after.st_mtime_ns, after.st_nlink) == \
        (before.st_ino, before.st_mtime_ns, before.st_nlink)
    assert (proj / "main.py").read_text() == "edited"


@pytest.mark.userns
def test_a_writable_cache_grant_does_not_open_the_link(
        sandbox_user: SandboxUser, uv_home: Path) -> None:
    """The cache granted writable too (copy-on-write, an overlay): its link in the project
    is still a name outside what the session writes in place."""
    proj = uv_home / "proj"
    cached = uv_home / ARCHIVE / "__init__.py"
    pol = policy((proj, Access.READWRITE), (uv_home / ".cache", Access.READWRITE),
                 cache_home=str(uv_home / ".cache"))
    r = sandbox_user.run(pol, probe(
        f"t(lambda: open({str(proj / SITE / '__init__.py')!r}, 'w').write('POISON'))\n"
        f"t(lambda: open({str(cached)!r}, 'w').write('OWN-COPY'))\n"
        f"t(lambda: open({str(cached)!r}).read())\n"), cwd=str(proj))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["EROFS", "OK 8", "OK OWN-COPY"], r.stdout
    assert cached.read_text() == "HOST-CODE\n"


def _ops(*ops: MountOp) -> tuple[MountOp, ...]:
    return ops


def test_the_scan_finds_names_with_a_link_outside_the_writable_grants(
        uv_home: Path) -> None:
    proj = str(uv_home / "proj")
    site = f"{proj}/{SITE}"
    # ``sub`` holds only linked names: bound whole; ``pkg`` holds ``__pycache__`` too.
    linked = (f"{site}/__init__.py", f"{site}/sub")
    found = scan(_ops(MountOp(BIND_DIR, proj, proj, True)))
    assert found.targets == linked and not found.incomplete
    assert (found.names, found.inodes, found.dirs) == (2, 2, 1)
    ids = tuple((st.st_dev, st.st_ino) for st in map(os.lstat, linked))
    assert found.ids == ids  # what the mount must still find there (``_mounts._linked``)
    assert found.ops() == tuple(MountOp(LINKED, t, f"{d}:{i}")
                                for t, (d, i) in zip(linked, ids, strict=True))
    # Both names writable (the cache's directory a writable bind of the host's): nothing
    # the session could not already write.
    home = str(uv_home)
    assert scan(_ops(MountOp(BIND_DIR, home, home, True))).targets == ()
    # The cache an overlay below a writable home: its names are not the host's to write.
    cache = str(uv_home / ".cache")
    assert scan(_ops(MountOp(BIND_DIR, home, home, True),
                     MountOp(OVERLAY, cache, cache, True))).targets == linked
    # A read-only bind or a mask over the way: not walked.
    venv = f"{proj}/.venv"
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, True),
                     MountOp(BIND_DIR, venv, venv, False))).targets == ()
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, True),
                     MountOp(MASK_DIR, venv))).targets == ()
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, True),
                     MountOp(READONLY, linked[0]))).targets == linked[1:]
    # A read-only grant of the project: nothing to do.
    assert scan(_ops(MountOp(BIND_DIR, proj, proj, False))).targets == ()
    # The grant itself is never bound whole, even when it holds only linked names.
    assert scan(_ops(MountOp(BIND_DIR, f"{site}/sub", f"{site}/sub", True))).targets == (
        f"{site}/sub/mod.py",)


@pytest.mark.skipif(os.getuid() != 0, reason="walks for another uid as root")
def test_a_walk_for_another_uid_lists_only_what_it_could_enter(
        uv_home: Path, world_tmp: Path) -> None:
    """The system daemon walks as root for its caller: a directory the caller can neither
    enter nor chmod is not listed (the names of its linked files would show in the
    session's mount table); one of its own, whatever its mode, is."""
    proj = uv_home / "proj"
    theirs, own = proj / "theirs", proj / "own"
    for d in (theirs, own):
        d.mkdir()
        os.link(uv_home / ARCHIVE / "__init__.py", d / "x.py")
        (d / "y").write_text("")
    os.chown(uv_home / ARCHIVE / "__init__.py", NOBODY, NOBODY)  # (the caller's to write)
    os.chown(theirs, 0, 0)
    os.chown(own, NOBODY, NOBODY)
    theirs.chmod(0o700)
    own.chmod(0)
    ops = _ops(MountOp(BIND_DIR, str(proj), str(proj), True))
    assert f"{theirs}/x.py" not in scan(ops, uid=NOBODY).targets
    assert f"{own}/x.py" in scan(ops, uid=NOBODY).targets
    assert f"{theirs}/x.py" in scan(ops).targets
    theirs.chmod(0o701)  # searchable: a known name can be opened
    assert f"{theirs}/x.py" in scan(ops, uid=NOBODY).targets


@pytest.mark.skipif(os.getuid() != 0, reason="walks for another uid as root")
def test_a_walk_for_another_uid_binds_no_file_the_caller_could_not_write(
        uv_home: Path) -> None:
    """In another user's directory the caller may enter but not list (0750, a group it is
    not in; 0711), a linked file the caller may not write was bound all the same: its name
    showed in the session's mount table, and the caller could not write it anyway. One
    others may write stays bound."""
    proj = uv_home / "proj"
    theirs = proj / "theirs"
    theirs.mkdir()
    for name, mode in (("sealed", 0o644), ("open", 0o666)):
        outside = uv_home / name  # (the home is not granted: the link is outside)
        outside.write_text(f"{name}\n")
        os.chown(outside, 0, 0)
        outside.chmod(mode)
        os.link(outside, theirs / f"{name}-name.py")
    (theirs / "plain").write_text("")  # (so the directory is not bound whole)
    os.chown(theirs, 0, 0)
    ops = _ops(MountOp(BIND_DIR, str(proj), str(proj), True))
    for mode in (0o750, 0o711):
        theirs.chmod(mode)
        targets = scan(ops, uid=NOBODY).targets
        assert f"{theirs}/sealed-name.py" not in targets, oct(mode)
        assert f"{theirs}/open-name.py" in targets, oct(mode)
    assert f"{theirs}/sealed-name.py" in scan(ops).targets  # root's session may write it


@pytest.mark.skipif(os.getuid() != 0, reason="a bind mount, in a mount namespace of its own")
def test_one_directory_granted_by_two_paths_holds_one_name(uv_home: Path) -> None:
    """The project bind-mounted on the host at a second path, both granted writable: the
    walk meets the linked file twice, but it is one name of the inode (the cache holds the
    other), so both paths are bound read-only."""
    proj, again = uv_home / "proj", uv_home / "again"
    again.mkdir()
    code = (
        "import sys, ctypes, os\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from nonod.sandbox._linkscan import scan\n"
        "from nonod.sandbox._mounts import BIND_DIR, MountOp\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.mount(sys.argv[1].encode(), sys.argv[2].encode(), None, 4096, None) == 0\n"
        "ops = [MountOp(BIND_DIR, p, p, True) for p in sys.argv[1:3]]\n"
        "print('\\n'.join(scan(ops).targets))\n")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-c", code, str(proj), str(again)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"{again}/{SITE}/__init__.py", f"{again}/{SITE}/sub",
                                   f"{proj}/{SITE}/__init__.py", f"{proj}/{SITE}/sub"]


_WALK = ("import sys\n"
         "from nonod.sandbox._linkscan import scan\n"
         "from nonod.sandbox._mounts import BIND_DIR, MountOp\n"
         "print(scan([MountOp(BIND_DIR, sys.argv[1], sys.argv[1], True)]).incomplete)\n")


def _walk_as_nobody(grant: Path, staged_python: tuple[list[str], dict[str, str]]) -> str:
    """Why the walk of the writable grant ``grant``, made as uid 65534 (a user daemon
    walks as its user), stopped early ("" when it did not)."""
    python, env = staged_python
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", *python, "-c", _WALK, str(grant)],
                          capture_output=True, text=True, check=False, cwd="/",
                          env={"PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(os.getuid() != 0, reason="walks as another uid (setpriv)")
def test_a_directory_the_walk_cannot_list_but_the_session_could_open_stops_it(
        uv_home: Path, staged_python: tuple[list[str], dict[str, str]]) -> None:
    """Walking as the session's own uid (a user daemon): a directory of its own it cannot
    list (mode 000: the session may chmod it and write in it) cuts the walk short; one of
    another uid without search bits for group or others is skipped."""
    proj = uv_home / "proj"
    own, theirs = proj / "own", proj / "theirs"
    for d in (own, theirs):
        d.mkdir()
    os.chown(own, NOBODY, NOBODY)
    own.chmod(0)
    theirs.chmod(0o700)  # root's
    assert _walk_as_nobody(proj, staged_python) == f"{own} cannot be listed (Permission denied)"
    own.rmdir()
    assert _walk_as_nobody(proj, staged_python) == ""


@pytest.mark.skipif(os.getuid() != 0, reason="walks as another uid (setpriv)")
def test_a_directory_the_walk_can_list_but_not_search_is_judged_not_raised(
        uv_home: Path, staged_python: tuple[list[str], dict[str, str]]) -> None:
    """A directory with read but no search permission lists its names, but looking at them
    fails: one of the session's own (it may ``chmod`` it) cuts the walk short, as one it
    cannot list does; another uid's without search bits for group or others is skipped,
    with what it holds. Both raised ``PermissionError`` out of the walk before, refusing
    the launch with a file error even where the profile accepts ``linked_files``."""
    proj = uv_home / "proj"
    own, theirs = proj / "own", proj / "theirs"
    for d in (own, theirs):
        (d / "sub").mkdir(parents=True)
        (d / "file").write_text("")
    os.chown(own, NOBODY, NOBODY)
    own.chmod(0o600)
    theirs.chmod(0o744)  # root's
    assert _walk_as_nobody(proj, staged_python) in (
        f"{own}/file cannot be looked at (Permission denied)",
        f"{own}/sub cannot be listed (Permission denied)")
    own.chmod(0o700)
    assert _walk_as_nobody(proj, staged_python) == ""


def test_a_scan_cut_short_refuses_the_launch_unless_accepted(uv_home: Path) -> None:
    proj = uv_home / "proj"
    cut = scan(_ops(MountOp(BIND_DIR, str(proj), str(proj), True)), Budget(entries=2))
    assert cut.incomplete == "more than 2 entries in the writable grants"
    too_many = scan(_ops(MountOp(BIND_DIR, str(proj), str(proj), True)), Budget(mounts=1))
    assert too_many.incomplete == "2 read-only binds needed, more than 1"
    assert too_many.targets == (str(proj / SITE / "__init__.py"),)
    req = LaunchRequest(argv=("/bin/true",), cwd=str(proj))
    pol = policy((proj, Access.READWRITE))
    plan, report = build_plan(pol, req)
    assert (LINKED, str(proj / SITE / "__init__.py")) in {(op.kind, op.target)
                                                          for op in plan.mounts}
    layer = next(layer for layer in report.layers if layer.name == "linked_files")
    assert layer.state == "applied"
    assert layer.detail.startswith("2 names of 2 files hard-linked outside the writable "
                                   "grants, in 2 read-only binds (1 of directories")
    many = proj / "many"
    many.mkdir()
    for i in range(600):  # past a budget of 500 entries
        (many / str(i)).touch()
    budget = Budget(entries=500)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("nonod.sandbox._linkscan.DEFAULT", budget)
        with pytest.raises(EnforcementUnavailable, match="linked_files cannot be enforced"):
            build_plan(pol, req)
        accepted = policy((proj, Access.READWRITE), allow_degraded=("linked_files",))
        _, report = build_plan(accepted, req)
    assert "linked_files: partial" in report.summary()
    assert not report.fully_enforced


def test_landlock_only_mode_refuses_a_linked_workdir_unless_accepted(uv_home: Path) -> None:
    from nonod.sandbox import _mode

    proj = uv_home / "proj"
    req = LaunchRequest(argv=("/bin/true",), cwd=str(proj))
    # what the mode needs besides (host_metadata: for a root test's own uid)
    others = ("creation_guard", "host_proc", "persistence", "host_metadata")
    with pytest.raises(EnforcementUnavailable, match="linked_files cannot be enforced"):
        build_plan(policy((proj, Access.READWRITE), allow_degraded=others), req,
                   mode=_mode.LANDLOCK_ONLY)
    plan, report = build_plan(policy((proj, Access.READWRITE),
                                     allow_degraded=(*others, "linked_files")), req,
                              mode=_mode.LANDLOCK_ONLY)
    assert "linked_files: unavailable (no view to bind them" in report.summary()
    assert plan.mounts == ()


@pytest.mark.userns
@pytest.mark.parametrize("python", [False, True], ids=["c-init", "python-init"])
def test_views_built_ahead_hold_the_read_only_binds(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch, python: bool) -> None:
    """Six sessions back to back through one fork server: after the first ones, warm
    launchers serve views they built ahead (run by the C init, or the Python one forced);
    each still finds the linked name read-only. A name linked on the host between two
    launches is found by the next one's walk."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if python else "")
    cache, proj = world_tmp / "cache", world_tmp / "proj"
    cache.mkdir()
    proj.mkdir()
    for name in ("a.py", "b.py"):
        (cache / name).write_text("HOST-CODE\n")
    linked, later = proj / "a.py", proj / "later.py"
    os.link(cache / "a.py", linked)
    code = ("import errno, sys\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        open(p, 'a').close(); print('OK')\n"
            "    except OSError as e:\n"
            "        print(errno.errorcode[e.errno])\n")
    pol = policy((proj, Access.READWRITE))

    async def main() -> list[list[str]]:
        seen = []
        async with open_launcher("namespaces") as launcher:
            for i in range(6):
                if i == 4:  # the host replaces it with a link of the cache's
                    later.unlink()
                    os.link(cache / "b.py", later)
                out_r, out_w = os.pipe()
                try:
                    proc = await launcher.launch(pol, LaunchRequest(
                        argv=(PY, "-S", "-c", code, str(linked), str(later)), cwd=str(proj)),
                        stdio=(0, out_w, 2))
                finally:
                    os.close(out_w)
                with os.fdopen(out_r, "rb") as out:
                    assert (await proc.wait_exited()).code == 0
                    seen.append(out.read().decode().split())
        return seen

    later.write_text("mine\n")
    assert trio.run(main) == [["EROFS", "OK"]] * 4 + [["EROFS", "EROFS"]] * 2
    assert (cache / "a.py").read_text() == (cache / "b.py").read_text() == "HOST-CODE\n"


def test_the_c_init_applies_a_linked_name_as_a_read_only_cover() -> None:
    """The C init knows no LINKED kind: it gets a READONLY cover flagged as a linked name,
    with the walk's ``device:inode`` of it, which it binds only if it still finds that
    inode there with no symbolic link on the way, as ``_mounts._linked`` (moved by another
    session meanwhile: ``tests/redteam/test_linked_walk_race.py``)."""
    def text(value: str) -> bytes:
        return len(value).to_bytes(4, "little") + value.encode()

    assert _cinit.mount_steps([MountOp(LINKED, "/w/a.py", "2049:77")]) == (
        (1).to_bytes(4, "little") + bytes([_cinit.STEP_COVER, READONLY, _cinit.F_LINKED])
        + text("/w/a.py") + text("2049:77"))
