"""The view guard: what the launcher mounted stays in place when the host renames or deletes
the paths under it while the session runs (the kernel detaches a mount whose dentry goes).

Each test starts a program that signals it is running (a ``ready`` file), waits for ``go``,
then tries the path. Between the two, the host does what git, editors and ``rm -rf`` do.
Without the guard every one of these reads the host's new file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nonod.policy import Access
from nonod.sandbox import LaunchRequest

from ..conftest import Result, SandboxUser
from ..proctree import wait_until
from .test_sandbox import home as home  # the fixture
from .test_sandbox import policy, probe

#: Every test here launches a session in new namespaces.
pytestmark = pytest.mark.userns

WAIT = (
    "import time\n"
    "open('ready', 'w').close()\n"
    "while not os.path.exists('go'):\n"
    "    time.sleep(0.01)\n"
)


def _ppid(pid: str | int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _guarded_by_the_fork_server(work: Path) -> bool:
    """Whether the session running in ``work`` is guarded by the fork server's hub: its
    program's parent (the init, ``nono-reaper``) has been left to the fork server by the
    outer launcher, which guarded the view in Python until then (``_launcher.hands_over``)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == str(work):
                init = _ppid(entry.name)
                server = _ppid(init)  # the fork server, not a launcher forked from it
                code = b"_forkserver import main"  # not a file name: pytest's argv has some
                if (Path(f"/proc/{init}/comm").read_text().strip() == "nono-reaper"
                        and code in Path(f"/proc/{server}/cmdline").read_bytes()
                        and code not in Path(f"/proc/{_ppid(server)}/cmdline").read_bytes()):
                    return True
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours
    return False


def _view(work: Path) -> Path:
    """The session's view of the file system, as its program running in ``work`` sees it
    (its root, through /proc: the host's root reads the session's mounts there)."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and os.readlink(entry / "cwd") == str(work)
                    and Path(f"/proc/{_ppid(entry.name)}/comm").read_text().strip()
                    == "nono-reaper"):
                return entry / "root"
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours
    return Path("/proc/0/root")  # none (any more): a view that does not exist


def _seen(view: Path, path: Path) -> Path:
    """``path`` as the session sees it."""
    return view / str(path).lstrip("/")


def _masked(view: Path, path: Path) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(_seen(view, path)).st_mode) == 0
    return False


def _read_only(view: Path, path: Path) -> bool:
    with contextlib.suppress(OSError):
        return bool(os.statvfs(_seen(view, path)).f_flag & os.ST_RDONLY)
    return False


def _reads(view: Path, path: Path, text: str) -> bool:
    with contextlib.suppress(OSError):
        return _seen(view, path).read_text() == text
    return False


def _until(what: str, check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds, or give up quietly after 20 s: the program then looks
    at an unprotected view and the test fails on what it reads."""
    with contextlib.suppress(AssertionError):
        wait_until(what, check)


def _meanwhile(work: Path, change: Callable[[], None], restored: Callable[[Path], bool],
               ready: str = "ready", go: str = "go") -> threading.Thread:
    """Do ``change`` once the program is ready and the fork server guards it (if it never
    does, ``go`` never comes and the run times out: the test must exercise the hub's repairs,
    ``nono-reaper --repair`` in ``reaper_outer.c``); then, once the session's view shows the
    protection back (``restored(view)``), let the program look. The guard re-mounts within
    a millisecond when idle and later on a loaded machine: the window in between is
    documented (docs/trust.md); what is tested is that the protection comes back, and that
    it comes back in the session's view, for its program to find. ``ready`` and ``go``:
    the names of the files the program makes and waits for."""
    def run() -> None:
        deadline = time.monotonic() + 30
        while not (work / ready).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        while not _guarded_by_the_fork_server(work):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        change()
        _until("the guard restored the view", lambda: restored(_view(work)))
        (work / go).touch()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


VERIFIED = "# verified rules\n"


def _run_pinned(sandbox_user: SandboxUser, work: Path, rules: Path,
                change: Callable[[], None], code: str,
                restored: Callable[[Path], bool] | None = None) -> Result:
    """Run ``code`` in ``work`` with ``rules`` pinned to ``# verified rules``, while the host
    does ``change`` once the program is ready (then the program looks once ``restored``,
    by default once the session reads the verified bytes at ``rules`` again)."""
    thread = _meanwhile(work, change, restored or (lambda view: _reads(view, rules, VERIFIED)))
    try:
        request = LaunchRequest(argv=tuple(probe(code)), cwd=str(work),
                                pins=((str(rules), b"# verified rules\n"),))
        return sandbox_user.run_request(policy((work, Access.READWRITE)), request)
    finally:
        thread.join()


def _read_masked_while(sandbox_user: SandboxUser, home: Path, denied: Path, secret: str,
                       change: Callable[[], None]) -> Result:
    """Read ``denied/NAME`` and list ``denied`` (a denied directory under a writable home)
    once the host has made ``denied`` with the file ``NAME`` holding ``secret``, after
    ``change`` (which may remove what was there first)."""
    def make() -> None:
        change()
        denied.mkdir()
        (denied / "NAME").write_text(secret)
        sandbox_user.chown(denied)
        sandbox_user.chown(denied / "NAME")

    thread = _meanwhile(home / "work", make, lambda view: _masked(view, denied))
    try:
        return sandbox_user.run(policy((home, Access.READWRITE), denials=(denied,)), probe(
            WAIT + f"t(lambda: open('{denied}/NAME').read())\n"
                   f"t(lambda: os.listdir('{denied}'))\n"), cwd=str(home / "work"))
    finally:
        thread.join()


def test_a_mask_survives_the_host_deleting_and_recreating_the_directory(
        sandbox_user: SandboxUser, home: Path) -> None:
    ssh = home / ".ssh"
    r = _read_masked_while(sandbox_user, home, ssh, "NEW-KEY-CANARY\n",
                           lambda: shutil.rmtree(ssh))
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["EACCES", "EACCES"]
    assert "CANARY" not in r.stdout


def test_a_denied_directory_the_host_creates_after_the_outer_left_is_masked(
        sandbox_user: SandboxUser, home: Path) -> None:
    """A denied path absent at launch, made by the host once the session is down to its init
    (the fork server guards it): masked when it appears, its file never read."""
    r = _read_masked_while(sandbox_user, home, home / ".aws", "LATE-KEY-CANARY\n",
                           lambda: None)
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["EACCES", "EACCES"], r.stdout
    assert "CANARY" not in r.stdout


def _instances_watching(work: Path, directory: Path) -> tuple[int, list[int]]:
    """(the fork server's inotify instances, the descriptors of those watching
    ``directory``), for the session running in ``work``."""
    ino = f"ino:{os.stat(directory).st_ino:x} "
    for entry in Path("/proc").iterdir():
        try:
            if not (entry.name.isdigit() and os.readlink(entry / "cwd") == str(work)):
                continue
            init = _ppid(entry.name)
            if Path(f"/proc/{init}/comm").read_text().strip() != "nono-reaper":
                continue  # the init itself, or a process of another session
            server = Path(f"/proc/{_ppid(init)}")
            instances = []
            for fd in (server / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == "anon_inode:inotify":
                        instances.append(int(fd.name))
            return len(instances), [fd for fd in instances
                                    if ino in (server / "fdinfo" / str(fd)).read_text()]
        except (OSError, ValueError, IndexError):
            continue
    return 0, []


def test_a_session_moved_to_the_loud_queue_is_still_guarded(
        sandbox_user: SandboxUser, home: Path) -> None:
    """A program that makes and removes thousands of files in its watched home is moved to
    the hub's loud inotify instance (its repair sends its watches again, there): a denied
    directory the host creates afterwards is still masked."""
    denied = home / ".aws"

    seen: list[tuple[int, list[int]]] = []

    def make() -> None:
        seen.append(_instances_watching(home / "work", home))
        denied.mkdir()
        (denied / "NAME").write_text("LOUD-KEY-CANARY\n")
        sandbox_user.chown(denied)
        sandbox_user.chown(denied / "NAME")

    # Once the fork server's hub guards it (past the hand-over), thousands of files made
    # and removed, until the host sees the session moved (bounded: past 60 s it goes on and
    # the test fails on ``seen``). Not a fixed 4,000: on a loaded host the storm can stay
    # under LOUD_EVENTS a second, or the hub still be reading it when the program is done,
    # and the session was not moved yet when looked at.
    storm = (
        "import time\n"
        "open('up', 'w').close()\n"
        "while not os.path.exists('handed'):\n"
        "    time.sleep(0.01)\n"
        "stop = time.monotonic() + 60\n"
        "while not os.path.exists('moved') and time.monotonic() < stop:\n"
        "    for k in range(500):\n"
        f"        open('{home}/storm', 'w').close()\n"
        f"        os.unlink('{home}/storm')\n"
    )

    def moved() -> bool:
        count, watching = _instances_watching(home / "work", home)
        return count == 2 and len(watching) == 1

    handed = _meanwhile(home / "work", lambda: None, lambda _view: True, "up", "handed")
    loud = _meanwhile(home / "work", lambda: None, lambda _view: moved(), "handed", "moved")
    thread = _meanwhile(home / "work", make, lambda view: _masked(view, denied))
    try:
        r = sandbox_user.run(policy((home, Access.READWRITE), denials=(denied,)), probe(
            storm + WAIT + f"t(lambda: open('{denied}/NAME').read())\n"
                           f"t(lambda: os.listdir('{denied}'))\n"), cwd=str(home / "work"))
    finally:
        handed.join()
        loud.join()
        thread.join()
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["EACCES", "EACCES"], r.stdout
    assert "CANARY" not in r.stdout
    # Its home is watched in the second instance, the loud one, and no longer in the first
    # (looked at once the program was done, before the host made the denied directory).
    [(count, watching)] = seen
    assert count == 2 and len(watching) == 1, seen


def test_git_config_stays_read_only_after_git_rewrites_it_by_rename(
        sandbox_user: SandboxUser, home: Path) -> None:
    work = home / "work"
    git = work / ".git"
    git.mkdir()
    (git / "config").write_text("[core]\n")
    for p in (git, git / "config"):
        sandbox_user.chown(p)

    def git_config_set() -> None:  # what `git config` does: write config.lock, rename it
        (git / "config.lock").write_text("[core]\n\tbare = false\n")
        os.replace(git / "config.lock", git / "config")

    thread = _meanwhile(work, git_config_set,
                        lambda view: _read_only(view, git / "config"))
    try:
        r = sandbox_user.run(policy((work, Access.READWRITE)), probe(
            WAIT + "t(lambda: open('.git/config', 'a').write('[core]\\n\\tfsmonitor = x\\n'))\n"),
            cwd=str(work))
    finally:
        thread.join()
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[0] in ("EROFS", "EACCES")
    assert "fsmonitor" not in (git / "config").read_text()


def test_a_pinned_file_replaced_by_rename_still_reads_the_verified_bytes(
        sandbox_user: SandboxUser, home: Path) -> None:
    work = home / "work"
    rules = work / "GEMINI.md"
    rules.write_text("# verified rules\n")
    sandbox_user.chown(rules)

    def swap() -> None:
        (work / "GEMINI.md.tmp").write_text("# INJECTED by rename\n")
        os.replace(work / "GEMINI.md.tmp", rules)

    r = _run_pinned(sandbox_user, work, rules, swap,
                    "t(lambda: open('GEMINI.md').read().strip())\n" + WAIT
                    + "t(lambda: open('GEMINI.md').read().strip())\n"
                    + "t(lambda: open('GEMINI.md', 'a'))\n")
    assert r.code == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[:2] == ["OK # verified rules", "OK # verified rules"], r.stdout
    assert lines[2] in ("EROFS", "EACCES")
    assert rules.read_text() == "# INJECTED by rename\n"  # the host's file is the host's


def _hog_inotify(uid: int, leave: int) -> subprocess.Popen[str]:
    """A process of ``uid`` holding every inotify instance the user may have but ``leave``."""
    hog = subprocess.Popen(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3",
         "-S", "-c",
         "import ctypes, os, sys\n"
         "libc = ctypes.CDLL(None, use_errno=True)\n"
         "held = []\n"
         "while (fd := libc.inotify_init1(0)) >= 0:\n"
         "    held.append(fd)\n"
         "err = ctypes.get_errno()\n"
         f"for fd in held[len(held) - {leave}:] if {leave} else []:\n"
         "    os.close(fd)\n"
         "print(len(held), err, flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert hog.stdout is not None
    _, err = map(int, hog.stdout.readline().split())
    assert err == 24  # EMFILE: the user's limit was reached
    return hog


@pytest.mark.parametrize("sandbox_user", ["own"], indirect=True)  # an inotify count of its own
def test_without_an_inotify_instance_the_launch_is_refused_not_unguarded(
        sandbox_user: SandboxUser, home: Path) -> None:
    """Fail closed: a user out of inotify instances (``fs.inotify.max_user_instances``) gets
    no session rather than one whose masks a host rename would undo."""
    hog = _hog_inotify(sandbox_user.uid, leave=0)
    try:
        r = sandbox_user.run(policy((home, Access.READWRITE), denials=(home / ".ssh",)),
                             probe("t(lambda: print('RAN'))\n"), cwd=str(home / "work"))
    finally:
        hog.kill()
        hog.wait()
    assert r.code != 0
    assert "RAN" not in r.stdout
    assert "guard" in r.stderr, r.stderr


MANY = r"""
import sys, msgspec, trio
from nonod.policy import ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
policy = msgspec.json.decode(sys.argv[1], type=ResolvedPolicy)
async def main():
    async with open_launcher() as launcher:
        procs = [await launcher.launch(policy, LaunchRequest(argv=("/bin/sleep", "0.5"),
                                                             cwd=sys.argv[2]))
                 for _ in range(int(sys.argv[3]))]
        print(sorted({layer.name for layer in procs[0].enforcement.layers}))
        print([(await proc.wait_exited()).code for proc in procs])
trio.run(main)
"""


@pytest.mark.parametrize("sandbox_user", ["own"], indirect=True)  # an inotify count of its own
def test_one_inotify_instance_guards_every_session_of_a_launcher(
        sandbox_user: SandboxUser, home: Path) -> None:
    """The user has a single inotify instance left: the fork server's guard hub takes it,
    and six guarded sessions run at once on it (with an instance per session, the first
    would take it and the other five would be refused)."""
    import msgspec

    pol = policy((home, Access.READWRITE), denials=(home / ".ssh",))
    hog = _hog_inotify(sandbox_user.uid, leave=1)
    try:
        done = subprocess.run(
            ["setpriv", f"--reuid={sandbox_user.uid}", f"--regid={sandbox_user.uid}",
             "--clear-groups", *sandbox_user.python, "-c", MANY,
             msgspec.json.encode(pol).decode(), str(home / "work"), "6"],
            env={"PATH": "/usr/bin:/bin", **sandbox_user.env}, capture_output=True, text=True,
            timeout=60, check=False, cwd="/")
    finally:
        hog.kill()
        hog.wait()
    assert done.returncode == 0, done.stderr
    layers, codes = done.stdout.splitlines()
    assert "view_guard" in layers
    assert codes == str([0] * 6)


AFTER_SHORTAGE = r"""
import sys, msgspec, trio
from nonod.policy import ResolvedPolicy
from nonod.errors import LaunchError
from nonod.sandbox import LaunchRequest, open_launcher
policy = msgspec.json.decode(sys.argv[1], type=ResolvedPolicy)
request = LaunchRequest(argv=("/bin/true",), cwd=sys.argv[2])
async def main():
    async with open_launcher() as launcher:
        try:
            await launcher.launch(policy, request)
            print("first: ran", flush=True)
        except LaunchError as exc:
            print(f"first: refused at {exc.step}", flush=True)
        sys.stdin.readline()  # the instances are free again
        proc = await launcher.launch(policy, request)
        print(f"then: exit {(await proc.wait_exited()).code}", flush=True)
trio.run(main)
"""


@pytest.mark.parametrize("sandbox_user", ["own"], indirect=True)  # an inotify count of its own
def test_a_fork_server_started_during_a_shortage_guards_once_it_is_over(
        sandbox_user: SandboxUser, home: Path) -> None:
    """The user is out of inotify instances when the fork server starts: its guarded launches
    are refused (fail closed) while that lasts, and guarded once instances are free again,
    without a restart."""
    import msgspec

    pol = policy((home, Access.READWRITE), denials=(home / ".ssh",))
    hog = _hog_inotify(sandbox_user.uid, leave=0)
    try:
        run = subprocess.Popen(
            ["setpriv", f"--reuid={sandbox_user.uid}", f"--regid={sandbox_user.uid}",
             "--clear-groups", *sandbox_user.python, "-c", AFTER_SHORTAGE,
             msgspec.json.encode(pol).decode(), str(home / "work")],
            env={"PATH": "/usr/bin:/bin", **sandbox_user.env}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        assert run.stdout is not None and run.stdin is not None
        first = run.stdout.readline().strip()
    finally:
        hog.kill()
        hog.wait()
    try:
        out, err = run.communicate("go\n", timeout=60)
    finally:
        run.kill()
    assert first == "first: refused at guard", (first, err)
    assert out.strip() == "then: exit 0", err


def test_a_pinned_file_replaced_by_a_symlink_ends_the_session(
        sandbox_user: SandboxUser, home: Path) -> None:
    """A pin cannot be mounted over a symbolic link: the guard ends the session rather than
    let it read whatever the link points at."""
    work = home / "work"
    rules = work / "GEMINI.md"
    rules.write_text("# verified rules\n")
    (work / "other.md").write_text("# INJECTED through a link\n")
    for p in (rules, work / "other.md"):
        sandbox_user.chown(p)

    def link() -> None:
        os.symlink("other.md", work / "GEMINI.md.link")
        os.replace(work / "GEMINI.md.link", rules)

    r = _run_pinned(sandbox_user, work, rules, link,
                    WAIT + "t(lambda: open('GEMINI.md').read().strip())\n",
                    lambda view: not view.exists())  # the session is over
    assert "INJECTED" not in r.stdout
    assert r.code == 128 + 9, (r.code, r.stdout, r.stderr)  # SIGKILL from the guard


def test_a_pin_follows_its_path_when_the_host_replaces_a_directory_on_the_way(
        sandbox_user: SandboxUser, home: Path) -> None:
    """The pinned file's directory is renamed away and a new one with an injected file takes
    its name: the path the program opens is covered again, and so is a later rename inside
    the new directory (the guard watches the directory that is on the path now)."""
    work = home / "work"
    docs = work / "docs"
    docs.mkdir()
    rules = docs / "GEMINI.md"
    rules.write_text("# verified rules\n")
    for p in (docs, rules):
        sandbox_user.chown(p)

    def swap_directory() -> None:
        os.rename(docs, work / "docs.old")
        docs.mkdir()
        (docs / "GEMINI.md").write_text("# INJECTED in a new directory\n")
        _until("the pin covers the new directory's file",
               lambda: _reads(_view(work), rules, VERIFIED))
        (docs / "GEMINI.md.tmp").write_text("# INJECTED again, by rename\n")
        os.replace(docs / "GEMINI.md.tmp", docs / "GEMINI.md")

    r = _run_pinned(sandbox_user, work, rules, swap_directory,
                    WAIT + "t(lambda: open('docs/GEMINI.md').read().strip())\n")
    assert r.code == 0, r.stderr
    assert r.stdout.split("\n")[0] == "OK # verified rules", r.stdout
