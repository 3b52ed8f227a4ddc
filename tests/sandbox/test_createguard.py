"""The creation guard against the real kernel: absent persistence names in writable
directories cannot be created by any syscall, every other name still can (with the program's
umask), and the host is never written to achieve it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nonod.errors import EnforcementUnavailable
from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, _cinit
from nonod.sandbox._createguard import first_missing, guarded_dirs, layer2_dirs, prepare
from nonod.sandbox._plan import build_plan

from ..conftest import SandboxUser
from .test_sandbox import probe

#: Every test here launches a session in new namespaces.
pytestmark = pytest.mark.userns

WORK_NAMES = (".envrc", ".vscode", ".github", ".gitmodules", ".pre-commit-config.yaml",
              ".ENVRC")
HOME_NAMES = (".bashrc", ".ssh", ".profile")


# openat2(dirfd, path, {O_CREAT | O_WRONLY, mode 0o666, resolve}): its flags are behind a
# pointer, so the filter notifies every call.
OPENAT2 = (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def openat2(p, resolve=0, dirfd=-100):\n"
    "    how = ctypes.create_string_buffer((0o101).to_bytes(8, 'little')"
    " + (0o666).to_bytes(8, 'little') + resolve.to_bytes(8, 'little'), 24)\n"
    "    r = libc.syscall(437, dirfd, p.encode(), how, 24)\n"
    "    if r < 0: raise OSError(ctypes.get_errno(), 'openat2')\n"
    "    os.close(r)\n"
    "    return 0\n"
)


# Prepended to a probe: wait until the init has become ``nono-reaper`` (``REAPER_AFTER``
# after the start), so that what follows is served by the C guard, not the Python one.
AFTER_REAPER = (
    "import time\n"
    "_end = time.monotonic() + 30\n"
    "while open('/proc/1/comm').read().strip() != 'nono-reaper':\n"
    "    assert time.monotonic() < _end, 'the init never became the reaper'\n"
    "    time.sleep(0.005)\n"
)


def layout_policy(home: Path, work: Path, **kw: object) -> ResolvedPolicy:
    return ResolvedPolicy(
        name="test",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(home), access=Access.READWRITE),
                Grant(path=str(work), access=Access.READWRITE)),
        denials=(Denial(path="/etc/shadow", is_file=True),),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def layout(world_tmp: Path, sandbox_user: SandboxUser) -> tuple[Path, Path]:
    """A writable $HOME without rc files or .ssh, and a writable workdir inside it with one
    existing subdirectory and none of the persistence names."""
    home = world_tmp / "home"
    work = home / "work"
    (work / "src").mkdir(parents=True)
    (home / "notes.txt").write_text("hello\n")
    sandbox_user.chown(home, work, work / "src", home / "notes.txt")
    return home, work


def _listing(*dirs: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_mode, p.lstat().st_mtime_ns)
            for d in dirs for p in d.iterdir()}


def run_in(sandbox_user: SandboxUser, home: Path, work: Path, code: str,
           **kw: object) -> list[str]:
    r = sandbox_user.run(layout_policy(home, work, **kw), probe(code), cwd=str(work),
                         env=(("HOME", str(home)),))
    assert r.code == 0, r.stderr
    return r.stdout.splitlines()


# --- what is refused, computed in the parent ---------------------------------------------------


def test_first_missing_names_the_first_absent_component() -> None:
    present = {"/w", "/w/.git", "/w/.git/info", "/h"}
    got = first_missing(
        ["/w/.envrc", "/w/.github/workflows", "/w/.git/info/attributes", "/w/.git",
         "/elsewhere/x/y", "/w/.github/other"],
        ["/w"], exists=present.__contains__)
    assert got == ("/w/.envrc", "/w/.github", "/w/.git/info/attributes")


def test_layer2_rules_go_everywhere_but_the_way_to_guarded_dirs() -> None:
    tree = {"/w": ["/w/src", "/w/.git", "/w/docs"], "/w/.git": ["/w/.git/info", "/w/.git/objects"],
            "/w/.git/info": ["/w/.git/info/sub"], "/h": ["/h/.config"],
            "/h/.config": ["/h/.config/nvim"]}
    guarded = guarded_dirs(["/w/.envrc", "/w/.git/info/attributes", "/h/.config/fish"])
    assert sorted(guarded) == ["/h/.config", "/w", "/w/.git/info"]
    rules = layer2_dirs(["/w", "/h", "/tmp"], guarded, lambda d: tree.get(d, []))
    assert sorted(rules) == ["/h/.config/nvim", "/tmp", "/w/.git/info/sub", "/w/.git/objects",
                             "/w/docs", "/w/src"]


def test_the_guard_is_refused_without_refer_unless_degraded(layout: tuple[Path, Path]) -> None:
    home, work = layout
    req = LaunchRequest(argv=("/bin/true",), cwd=str(work), env=(("HOME", str(home)),))
    old = ("landlock", "landlock_refer", "landlock_truncate", "landlock_scopes")
    with pytest.raises(EnforcementUnavailable, match="creation_guard") as info:
        build_plan(layout_policy(home, work, allow_degraded=old), req, landlock_abi=1)
    assert info.value.step == "creation_guard"
    plan, report = build_plan(layout_policy(home, work, allow_degraded=(*old, "creation_guard")),
                              req, landlock_abi=1)
    assert plan.creation_refused == ()
    assert "creation_guard: unavailable" in report.summary()
    plan, report = build_plan(layout_policy(home, work), req)
    assert str(work / ".envrc") in plan.creation_refused
    assert str(home / ".bashrc") in plan.creation_refused
    layer = next(lay for lay in report.layers if lay.name == "creation_guard")
    assert layer.state == "applied" and "names refused" in layer.detail


def test_the_guard_fails_closed_when_it_cannot_be_built(tmp_path: Path) -> None:
    """What the init does at step `createguard`: a guarded directory that is not there, or a
    Landlock without REFER, is an error (the launch is refused), never a guard left out."""
    with pytest.raises(FileNotFoundError):
        prepare([str(tmp_path / "gone" / ".envrc")], [str(tmp_path)], abi=7)
    with pytest.raises(OSError, match="REFER"):
        prepare([str(tmp_path / ".envrc")], [str(tmp_path)], abi=1)
    guard = prepare([str(tmp_path / ".envrc")], [str(tmp_path)], abi=7)
    try:
        assert list(guard.guarded.values()) == [frozenset({".envrc"})]
        assert guard.ruled == frozenset()  # tmp_path is guarded and has no subdirectories
    finally:
        for fd in (guard.ruleset, *guard.keep):
            os.close(fd)


# --- in real sessions ----------------------------------------------------------------------------


def test_protected_names_cannot_be_created_by_any_syscall(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    home, work = layout
    for seed in (work / "seed", home / "seed"):
        seed.write_text("x")
        sandbox_user.chown(seed)
    before = _listing(home, work)
    targets = [*(str(work / n) for n in WORK_NAMES), *(str(home / n) for n in HOME_NAMES)]
    code = AFTER_REAPER + OPENAT2
    for t in targets:
        same = os.path.join(os.path.dirname(t), "seed")  # rename and link: same mount
        code += (f"t(lambda: os.open('{t}', os.O_CREAT | os.O_WRONLY, 0o644))\n"
                 f"t(lambda: openat2('{t}'))\n"
                 f"t(lambda: os.mkdir('{t}'))\n"
                 f"t(lambda: os.symlink('seed', '{t}'))\n"
                 f"t(lambda: os.link('{same}', '{t}'))\n"
                 f"t(lambda: os.rename('{same}', '{t}'))\n"
                 f"t(lambda: os.mkfifo('{t}'))\n"
                 f"t(lambda: os.mknod('{t}', 0o600 | 0o100000))\n")
    out = run_in(sandbox_user, home, work, code)
    assert len(out) == 8 * len(targets)
    tried = [t for t in targets for _ in range(8)]
    assert set(out) == {"EACCES"}, list(zip(out, tried, strict=True))
    assert _listing(home, work) == before  # nothing made on the host, mtimes unchanged


def test_a_daemon_umask_without_the_search_bit_does_not_refuse_the_launch(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """The fork server keeps the umask the daemon had when it started it (0177 if another
    thread was binding a control socket then). The directories the launcher makes in the
    session's root on the way to the grants (``/tmp/nono-test-*`` in the private ``/tmp``)
    must still be searchable, or the guard cannot open the workdir once the capabilities are
    dropped and the launch is refused at step 'createguard' (EACCES)."""
    home, work = layout
    r = sandbox_user.run(layout_policy(home, work), probe(
        "t(lambda: open('made.txt', 'w').write('made'))\n"
        "t(lambda: open('.envrc', 'w'))\n"
        f"t(lambda: oct(os.stat('{work.parent.parent}').st_mode & 0o777))\n"
    ), cwd=str(work), env=(("HOME", str(home)),), umask=0o177)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["OK 4", "EACCES", "OK 0o755"]
    assert (work / "made.txt").read_text() == "made"
    assert not (work / ".envrc").exists()


def test_other_names_are_created_with_the_programs_umask(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    home, work = layout
    out = run_in(sandbox_user, home, work, (
        OPENAT2 +
        "os.umask(0o027)\n"
        "t(lambda: os.close(os.open('made.txt', os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666)))\n"
        "t(lambda: open('made.txt', 'a').write('more'))\n"
        "t(lambda: os.get_inheritable(libc.open(b'fd.txt', os.O_CREAT | os.O_RDWR, 0o600)))\n"
        "t(lambda: os.get_inheritable(libc.open(b'cx.txt', os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,"
        " 0o600)))\n"
        "t(lambda: os.mkdir('newdir', 0o777))\n"
        "t(lambda: os.makedirs('newdir/a/b'))\n"
        "t(lambda: open('newdir/a/b/deep.txt', 'w').write('deep'))\n"
        "t(lambda: open('src/kernel.txt', 'w').write('k'))\n"
        "t(lambda: os.symlink('made.txt', 'link'))\n"
        "t(lambda: os.link('made.txt', 'hard'))\n"
        "t(lambda: os.rename('newdir/a/b/deep.txt', 'moved.txt'))\n"
        "t(lambda: os.rename('moved.txt', 'src/moved.txt'))\n"
        "t(lambda: os.mkfifo('fifo', 0o666))\n"
        "t(lambda: os.open('made.txt', os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n"
        "t(lambda: os.mkdir('newdir'))\n"
        f"t(lambda: open('{home}/.bashrc.bak', 'w').write('ok'))\n"
        f"t(lambda: os.mkdir('{home}/Documents'))\n"
        "t(lambda: open('/dev/shm/scratch', 'w').write('t'))\n"
        "t(lambda: openat2('o2.txt'))\n"
        "t(lambda: openat2('/o2b.txt', 0x10, os.open('.', os.O_PATH)))\n"  # RESOLVE_IN_ROOT
        "t(lambda: openat2('../o2c.txt', 0x08))\n"  # RESOLVE_BENEATH
    ))
    assert out == ["OK ", "OK 4", "OK True", "OK False", "OK ", "OK ", "OK 4", "OK 1", "OK ",
                   "OK ", "OK ", "OK ", "OK ", "EEXIST", "EEXIST", "OK 2", "OK ", "OK 1", "OK 0",
                   "OK 0", "EXDEV"]
    uid = sandbox_user.uid

    def mode(p: Path) -> int:
        st = p.lstat()
        assert st.st_uid == uid, p
        return stat.S_IMODE(st.st_mode)

    assert (work / "made.txt").read_text() == "more"
    assert mode(work / "made.txt") == 0o640
    assert mode(work / "newdir") == 0o750
    assert mode(work / "newdir" / "a" / "b") == 0o750
    assert mode(work / "fifo") == 0o640 and stat.S_ISFIFO((work / "fifo").lstat().st_mode)
    assert os.readlink(work / "link") == "made.txt"
    assert (work / "hard").stat().st_ino == (work / "made.txt").stat().st_ino
    assert (work / "src" / "moved.txt").read_text() == "deep"
    assert (work / "src" / "kernel.txt").read_text() == "k"
    assert (home / ".bashrc.bak").read_text() == "ok" and (home / "Documents").is_dir()
    assert mode(work / "o2.txt") == 0o640 and mode(work / "o2b.txt") == 0o640
    assert not (home / "o2c.txt").exists()


def test_names_are_refused_as_they_fold(sandbox_user: SandboxUser,
                                       layout: tuple[Path, Path]) -> None:
    """The supervisor (``nono-reaper``) compares names decomposed and case-folded: a spelling
    that folds to a refused name is refused; other non-ASCII names, and names that are not
    UTF-8, are created."""
    home, work = layout
    out = run_in(sandbox_user, home, work, AFTER_REAPER + (
        "def make(name): os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))\n"
        "t(lambda: make('.v\\u017fcode'))\n"  # LATIN SMALL LETTER LONG S: folds to s
        "t(lambda: make('.GITHUB'))\n"
        "t(lambda: make('r\\u00e9sum\\u00e9.txt'))\n"
        "t(lambda: make(b'\\xff.envrc'))\n"
        "t(lambda: make('.\\uff45nvrc'))\n"  # FULLWIDTH e: folds to itself, not ASCII
    ))
    assert out == ["EACCES", "EACCES", "OK ", "OK ", "OK "]
    assert not (work / ".v\u017fcode").exists() and not (work / ".GITHUB").exists()
    assert (work / "r\u00e9sum\u00e9.txt").is_file()
    assert os.path.isfile(os.fsencode(work) + b"/\xff.envrc")


def test_the_reapers_fold_table_is_unicodes() -> None:
    """``reaper_guard.c`` folds a name to ASCII with a table of the non-ASCII characters
    whose NFD + casefold is ASCII: it must be exactly those of this Python's unicodedata."""
    import re
    import unicodedata

    source = (Path(__file__).parents[2] / "nonod" / "sandbox" / "reaper_guard.c").read_text()
    table = {int(cp, 16): fold for cp, fold in
             re.findall(r'\{0x([0-9A-F]+), "([^"]*)"\}', source)}
    expected = {}
    for cp in range(0x80, 0x110000):
        folded = unicodedata.normalize("NFD", chr(cp)).casefold()
        if folded.isascii():
            expected[cp] = folded
    assert table == expected


def test_existing_subdirectories_keep_creation_in_the_kernel(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """A program whose memory the init cannot read (non-dumpable) is never emulated for:
    existing subdirectories still take new entries (layer 2 has a rule on them), the guarded
    directory does not."""
    home, work = layout
    out = run_in(sandbox_user, home, work, (
        "import ctypes\n"
        "ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\n"  # PR_SET_DUMPABLE 0
        "t(lambda: open('src/direct.txt', 'w').write('d'))\n"
        "t(lambda: os.mkdir('src/sub'))\n"
        "t(lambda: open('top.txt', 'w'))\n"
        "t(lambda: open('.envrc', 'w'))\n"
    ))
    assert out == ["OK 1", "OK ", "EACCES", "EACCES"]
    assert not (work / "top.txt").exists() and not (work / ".envrc").exists()


def test_guarded_directories_cannot_be_moved_aside(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    home, work = layout
    info = work / ".git" / "info"
    info.mkdir(parents=True)
    (info / "exclude").write_text("")
    sandbox_user.chown(work / ".git", info, info / "exclude")
    out = run_in(sandbox_user, home, work, (
        "t(lambda: os.rename('.git/info', '.git/old'))\n"
        "t(lambda: os.rename('.git', 'git2'))\n"
        "t(lambda: os.rename('.git/info', 'src/info'))\n"
        "t(lambda: os.unlink('.git/info/exclude'))\n"
        "t(lambda: os.rmdir('.git/info'))\n"
        "t(lambda: open('.git/info/attributes', 'w'))\n"
        "t(lambda: open('.git/info/exclude', 'w').write('x'))\n"
        "t(lambda: open('.git/index.lock', 'w').write('x'))\n"
    ))
    # .git and .git/info are mount points in the session (EBUSY); moving out of the .git
    # mount is EXDEV.
    assert out == ["EBUSY", "EBUSY", "EXDEV", "OK ", "EBUSY", "EACCES", "OK 1", "OK 1"]
    assert not (info / "attributes").exists()
    assert sorted(p.name for p in (work / ".git").iterdir()) == ["index.lock", "info"]


def test_git_works_in_the_workdir(sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    home, work = layout
    (work / "README").write_text("hi\n")
    sandbox_user.chown(work / "README")
    ident = "-c user.name=t -c user.email=t@example.invalid -c init.defaultBranch=main"
    script = (f"set -e; {git} init -q; {git} {ident} add README; "
              f"{git} {ident} commit -qm one; mkdir -p sub/deep; cd sub/deep; {git} init -q; "
              f"echo x > f; {git} {ident} add f; {git} {ident} commit -qm two; "
              f"{git} log --oneline | wc -l")
    r = sandbox_user.run(layout_policy(home, work), ["/bin/sh", "-c", script],
                         cwd=str(work), env=(("HOME", str(home)), ("PATH", "/usr/bin:/bin")))
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == "1"
    log = subprocess.run([git, "-c", "safe.directory=*", "-C", str(work), "log", "--format=%s"],
                         capture_output=True, text=True, check=False,
                         env={"HOME": str(home), "PATH": "/usr/bin:/bin"}).stdout
    assert log.strip() == "one"
    assert not (work / ".envrc").exists() and not (home / ".bashrc").exists()


def test_racing_the_path_buffer_never_creates_a_refused_name(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """One thread flips the path between an allowed name and .envrc while another creates
    it: what the init checked is what it creates, and what it lets through meets layer 2."""
    home, work = layout
    out = run_in(sandbox_user, home, work, AFTER_REAPER + (
        "import ctypes, threading\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "buf = ctypes.create_string_buffer(16)\n"
        "ctypes.memmove(buf, b'okname\\0', 7)\n"
        "done = threading.Event()\n"
        "def flip():\n"
        "    while not done.is_set():\n"
        "        ctypes.memmove(buf, b'.envrc\\0', 7)\n"
        "        ctypes.memmove(buf, b'okname\\0', 7)\n"
        "th = threading.Thread(target=flip, daemon=True)\n"
        "th.start()\n"
        "made = refused = bad = 0\n"
        "for _ in range(2000):\n"
        "    fd = libc.open(buf, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644)\n"
        "    bad += os.path.lexists('.envrc')\n"
        "    if fd >= 0:\n"
        "        os.close(fd)\n"
        "        made += 1\n"
        "        for n in ('okname', '.envrc'):\n"
        "            if os.path.lexists(n): os.unlink(n)\n"
        "    else:\n"
        "        refused += 1\n"
        "done.set()\n"
        "th.join()\n"
        "print('race', made > 0, bad, refused, file=sys.stderr)\n"
        "print(made > 0, bad)\n"
    ))
    assert out[-1] == "True 0"
    assert not (work / ".envrc").exists()


def test_hostile_arguments_do_not_stop_the_supervisor(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """Pointers the init cannot read (unmapped, past 2**63) are continued into the kernel,
    which answers EFAULT; the init goes on serving."""
    home, work = layout
    openat = {"x86_64": 257, "aarch64": 56}[os.uname().machine]
    out = run_in(sandbox_user, home, work, AFTER_REAPER + (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall.restype = ctypes.c_long\n"
        "def raw(addr):\n"
        f"    r = libc.syscall({openat}, -100, ctypes.c_void_p(addr), 0o101, 0o644)\n"
        "    if r < 0: raise OSError(ctypes.get_errno(), 'openat')\n"
        "    return 0\n"
        "t(lambda: raw(0xFFFFFFFFFFFFFFFF))\n"
        "t(lambda: raw(0x10))\n"
        "t(lambda: open('after', 'w').write('x'))\n"
    ))
    assert out == ["EFAULT", "EFAULT", "OK 1"]
    assert (work / "after").read_text() == "x"


def test_a_guarded_directory_removed_by_the_host_is_guarded_again_at_its_path(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """The host removes W/.git/info while the session runs (its mount in the session goes
    with it); the session makes the directory again: .git/info/attributes stays refused."""
    _host_removes_info(sandbox_user, layout)


def _host_removes_info(sandbox_user: SandboxUser, layout: tuple[Path, Path],
                       launched: Callable[[], bool] = lambda: True) -> None:
    """The test above. The program goes on (the host removes ``.git/info`` and says
    ``go``) once it is ready and ``launched()`` holds (the runner wrote its init's
    executable, read while the init is there)."""
    home, work = layout
    git = work / ".git"
    for d in (git, git / "hooks", git / "info"):
        d.mkdir()
        sandbox_user.chown(d)
    (git / "config").write_text("[core]\n")
    sandbox_user.chown(git / "config")

    def remove_info() -> None:
        deadline = time.monotonic() + 30
        while not ((work / "ready").exists() and launched()) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        shutil.rmtree(git / "info")
        (work / "go").touch()

    thread = threading.Thread(target=remove_info)
    thread.start()
    try:
        out = run_in(sandbox_user, home, work, (
            "import time\n"
            "open('ready', 'w').close()\n"
            "while not os.path.exists('go'):\n"
            "    time.sleep(0.01)\n"
            "t(lambda: os.mkdir('.git/info'))\n"
            "t(lambda: open('.git/info/exclude', 'w').write('x'))\n"
            "t(lambda: open('.git/info/attributes', 'w'))\n"
            "t(lambda: os.symlink('x', '.git/info/attributes'))\n"
        ))
    finally:
        thread.join()
    assert out == ["OK ", "OK 1", "EACCES", "EACCES"]
    assert not (git / "info" / "attributes").exists()


@pytest.mark.parametrize("init", ["c", "python"])
def test_a_guarded_directory_removed_by_the_host_is_guarded_again_on_a_warm_launch(
        monkeypatch: pytest.MonkeyPatch, sandbox_user: SandboxUser, layout: tuple[Path, Path],
        world_tmp: Path, init: str) -> None:
    """The same, launched warm as a daemon launches (an init waiting in its view hands its
    view guard to the fork server's hub, and the hub's repairs re-cover ``.git/info``), by
    each init: the session goes on, for an unprivileged fork server too. Its repairs entered
    through the init's pidfd, which the kernel refused them (the init's image was exec'd
    outside the session's user namespace: the C init's always, the Python init's for its
    first ``REAPER_AFTER``), and each ended the session (killed, 137)."""
    log = world_tmp / "inits"
    log.touch(mode=0o666)
    log.chmod(0o666)
    monkeypatch.setenv("NONO_TEST_WARM_INIT", "1")
    monkeypatch.setenv("NONO_TEST_INIT_LOG", str(log))
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if init == "python" else "")
    # The runner reads the init's command line after the launch: the program must still
    # wait then, or under load it may have ended, and its init with it ("?").
    _host_removes_info(sandbox_user, layout, launched=lambda: log.read_text().endswith("\n"))
    words = log.read_text().splitlines()[-1]
    # an init the C spawner cloned (fleet5) shows the spawner's command line; a Python init
    # shows Python's, or, past ``REAPER_AFTER``, ``nono-reaper`` and a descriptor's number
    assert words != "?", "the init had gone when the runner looked"
    c_init = words in ("nono-reaper --init", "nono-reaper --spawner")
    assert c_init == (init == "c"), words


def test_a_directory_its_user_made_read_only_is_guarded_all_the_same(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """``.git/info`` of mode 0555, owned by the session's user: not writable when the plan is
    made, but the session may ``chmod`` it back (Landlock does not mediate ``chmod``), so
    ``attributes`` is refused there as in a writable one."""
    home, work = layout
    info = work / ".git" / "info"
    info.mkdir(parents=True)
    sandbox_user.chown(work / ".git", info)
    info.chmod(0o555)
    out = run_in(sandbox_user, home, work,
                 f"t(lambda: os.chmod('{info}', 0o755))\n"
                 f"t(lambda: os.close(os.open('{info}/attributes', os.O_CREAT | os.O_WRONLY)))\n"
                 f"t(lambda: os.close(os.open('{info}/exclude', os.O_CREAT | os.O_WRONLY)))\n")
    assert (out, (info / "attributes").exists()) == (["OK ", "EACCES", "OK "], False)
    assert (info / "exclude").is_file()
