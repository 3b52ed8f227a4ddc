"""Red team, twenty-ninth pass: the working directory verified is not the one the session gets.

The daemon reads a launch's trust policies from its working directory and verifies the
instruction files there, by path; the session's view then names the directory again by path
(a bind of the grant, a ``chdir``). Whoever may rename in a directory above it (another local
user who owns a shared directory a user keeps a project in, or another session of the user
granted the parent) swapped the project for a directory of its own in between
(``renameat2(RENAME_EXCHANGE)`` in a loop): the launch was verified against the project and
the agent read the other directory's ``AGENTS.md``, which nobody signed and which refuses the
launch on its own (8 of 40 launches here). Now the policies' read and the scan each check
that the directory stayed one directory, and the session's init checks, right after its
``chdir``, that it entered that directory (its device and inode): a directory renamed into
its place refuses the launch (``ESTALE``, step ``chdir``), before the program runs.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from nonod import trust
from nonod.errors import LaunchError
from nonod.policy import Access
from nonod.sandbox import LaunchRequest, _cinit, open_launcher
from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.daemon.test_trust_launch import _user_policy
from tests.sandbox.test_sandbox import policy

_LIBC = ctypes.CDLL(None, use_errno=True)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

#: Run as the other user: swaps two names of its directory until its stdin closes.
SWAPPER = r"""
import ctypes, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("swapping", flush=True)
while not done.is_set():
    for _ in range(64):
        libc.renameat2(-100, a, -100, b, 2)
"""

INJECTED = "INJECTED\n"


def _exchange(a: Path, b: Path) -> None:
    if _LIBC.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                       _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _owned(path: Path, user: LocalUser, mode: int = 0o755) -> Path:
    path.mkdir(mode=mode, exist_ok=True)
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def _launch(handle: DaemonThread, work: Path, name: str, script: str, *,
            config: Path, out: Path | None = None,
            prefix: list[str] | None = None) -> dict[str, Any]:
    env = session_env(work)
    env["XDG_CONFIG_HOME"] = str(config)
    options: dict[str, object] = {"allow_cwd": True}
    if out is not None:
        options["allow"] = [str(out)]
    launch = {"type": "launch", "argv": ["/bin/sh", "-c", script], "cwd": str(work),
              "env": env, "options": options, "detach": True, "stdio": "null", "name": name}
    lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": name}],
                       prefix=prefix or [], timeout=60)
    return dict(json.loads(lines[1]))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="useradd, a system daemon")
def test_another_users_swaps_above_a_project_never_give_its_session_their_files(
        two_users: tuple[DaemonThread, list[LocalUser]], short_tmp: Path) -> None:
    """User B owns a shared directory (``0755``, no sticky bit) in which user A keeps its
    project, under A's user-level trust policy (``AGENTS.md`` must be signed). B swaps the
    project with a directory of its own holding an unsigned ``AGENTS.md`` while A launches.
    Before: some of A's sessions ran in B's directory and read it; now each is refused or
    runs in A's project."""
    handle, (owner, other) = two_users
    config = owner.home / "cfg"
    _user_policy(config / "nono", short_tmp / "keys", ["AGENTS.md"])
    for path in (config, *config.rglob("*")):
        os.chown(path, owner.uid, owner.gid)
    team = _owned(short_tmp / "team", other)
    project = _owned(team / "proj", owner)
    (project / "README").write_text("mine\n")
    decoy = _owned(team / "decoy", other)
    (decoy / "AGENTS.md").write_text(INJECTED)
    out = _owned(owner.home / "out", owner, 0o700)
    prefix = owner.prefix()

    alone = _launch(handle, decoy, "alone", "cat AGENTS.md", config=config, prefix=prefix)
    assert alone["type"] == "error" and "AGENTS.md (unsigned)" in alone["message"], alone

    swapper = subprocess.Popen([*other.prefix(), SYSTEM_PYTHON, "-c", SWAPPER, str(project),
                                str(decoy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd="/")
    replies = []
    try:
        assert swapper.stdout is not None and swapper.stdout.readline() == "swapping\n"
        # 30 launches, and more (up to 300) until one ran: on a loaded host the swapper can
        # win every race of 30 (CI once refused all, as it should), and the test must see
        # launches that ran to say none read B's file.
        for n in range(300):
            replies.append(_launch(handle, project, f"s{n}",
                                   f"cat AGENTS.md > {out}/{n} 2>/dev/null; echo ran >> {out}/{n}",
                                   config=config, out=out, prefix=prefix))
            if n >= 29 and any(reply["type"] == "launched" for reply in replies):
                break
    finally:
        swapper.communicate("", timeout=30)
    read = {path.name: path.read_text() for path in out.iterdir()}
    injected = sorted(name for name, text in read.items() if INJECTED in text)
    assert not injected, (injected, replies)  # before: 8 of 40 read B's AGENTS.md
    assert read, replies  # some launches ran (in A's project)
    for reply in replies:
        assert reply["type"] in ("launched", "error"), reply
        if reply["type"] == "error":
            assert reply["code"].startswith(("trust.", "launch.", "policy.")), reply


@pytest.fixture(params=[False, True], ids=["c-init", "python-init"])
def init_daemon(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                short_tmp: Path) -> Iterator[DaemonThread]:
    """A user daemon (this uid) whose launches take the C init or the Python init."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if request.param else "")
    handle = DaemonThread(short_tmp).start()
    yield handle
    handle.stop()


def test_a_directory_renamed_into_place_after_the_scan_refuses_the_launch(
        init_daemon: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap made right after the trust scan (the real one), as the racing user above
    can: the session must not start in the directory nobody verified."""
    config = short_tmp / "cfg"
    _user_policy(config / "nono", short_tmp / "keys", ["AGENTS.md"])
    project, decoy = short_tmp / "proj", short_tmp / "decoy"
    project.mkdir()
    decoy.mkdir()
    (decoy / "AGENTS.md").write_text(INJECTED)
    scan = trust.verify_tree

    def scan_then_swap(*args: Any, **kw: Any) -> trust.TrustReport:
        report = scan(*args, **kw)
        _exchange(project, decoy)
        return report

    monkeypatch.setattr(trust, "verify_tree", scan_then_swap)
    reply = _launch(init_daemon, project, "swapped", f"cat AGENTS.md > {short_tmp}/seen",
                    config=config)
    assert not (short_tmp / "seen").exists(), reply  # before: it held INJECTED
    assert reply["type"] == "error", reply
    assert "step 'chdir'" in reply["message"], reply
    assert "not the directory verified at launch" in reply["message"], reply
    _exchange(project, decoy)
    monkeypatch.setattr(trust, "verify_tree", scan)
    ran = _launch(init_daemon, project, "again", f"echo ok > {short_tmp}/seen; ls > /dev/null",
                  config=config, out=short_tmp)
    assert ran["type"] == "launched", ran
    assert (short_tmp / "seen").read_text() == "ok\n"


@pytest.mark.parametrize("verified", [False, True], ids=["no-policy", "policy"])
def test_a_launch_in_a_cache_directory_is_refused_only_if_something_was_verified(
        init_daemon: DaemonThread, short_tmp: Path, verified: bool) -> None:
    """review25: the daemon's side of the copy-on-write working directory. With a trust
    policy, what was verified in a project kept in a cache directory (its view an overlay,
    taken by path) cannot be held to the session: the launch is refused, saying what to do.
    With none, nothing was decided for that directory and the launch runs as before."""
    config = short_tmp / "cfg"
    if verified:
        _user_policy(config / "nono", short_tmp / "keys", ["AGENTS.md"])
    cache = short_tmp / "cache"
    work = cache / "proj"
    work.mkdir(parents=True)
    out = short_tmp / "out"
    out.mkdir()
    env = session_env(short_tmp / "s")  # a home outside the cache (one above it is no cache)
    env.update(XDG_CONFIG_HOME=str(config), XDG_CACHE_HOME=str(cache))
    launch = {"type": "launch", "argv": ["/bin/sh", "-c", f"echo ok > {out}/seen"],
              "cwd": str(work), "env": env, "options": {"allow_cwd": True, "allow": [str(out)]},
              "detach": True, "stdio": "null", "name": "cached"}
    lines = raw_client(init_daemon.socket, [hello(), launch, {"type": "wait", "session": "cached"}],
                       timeout=60)
    reply = json.loads(lines[1])
    if verified:
        assert reply["type"] == "error", reply
        assert "copy-on-write" in reply["message"], reply
        assert "shared_caches" in reply["hint"], reply
        assert not (out / "seen").exists()
    else:
        assert reply["type"] == "launched", reply
        assert (out / "seen").read_text() == "ok\n"


def test_a_directory_swapped_while_the_policy_is_read_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Policies read in one directory and files scanned in another would verify nothing of
    either: the scan is refused when its root is not the directory the policies came from."""
    config = short_tmp / "cfg"
    _user_policy(config / "nono", short_tmp / "keys", ["AGENTS.md"])
    project, decoy = short_tmp / "proj", short_tmp / "decoy"
    project.mkdir()
    decoy.mkdir()
    read = trust.read_policy_files

    def read_then_swap(*args: Any, **kw: Any) -> trust.PolicyFiles:
        files = read(*args, **kw)
        _exchange(project, decoy)
        return files

    monkeypatch.setattr(trust, "read_policy_files", read_then_swap)
    reply = _launch(daemon_thread, project, "swapped", "true", config=config)
    assert reply["type"] == "error", reply
    assert "was replaced while its instruction files were verified" in reply["message"], reply


@pytest.mark.userns
@pytest.mark.parametrize("how", ["c-init", "python-init", "landlock-only"])
def test_the_init_enters_only_the_directory_it_was_given(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """``LaunchRequest.cwd_identity``, checked by each init after its ``chdir`` (and by the
    launcher of a session without a view, which enters the host's directory): another inode
    is ``ESTALE`` at step ``chdir`` and nothing runs; the right one runs."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if how == "python-init" else "")
    mode = "landlock-only" if how == "landlock-only" else "namespaces"
    # A root session without a view also needs host_metadata (redteam31).
    degraded = (("persistence", "creation_guard", "host_proc")
                + (("host_metadata",) if os.geteuid() == 0 else ())
                if how == "landlock-only" else ())
    work = world_tmp / "work"
    work.mkdir()
    work.chmod(0o777)
    info = os.stat(work)
    marker = work / "ran"

    async def launch(identity: tuple[int, int]) -> str:
        async with open_launcher(mode) as launcher:
            try:
                proc = await launcher.launch(
                    policy((work, Access.READWRITE), allow_degraded=degraded),
                    LaunchRequest(argv=("/bin/sh", "-c", f"echo > {marker}"), cwd=str(work),
                                  cwd_identity=identity))
            except LaunchError as exc:
                return f"{exc.step} {exc.errno} {exc}"
            await proc.wait_exited()
            return "ran"

    refused = trio.run(launch, (info.st_dev, info.st_ino + 1))
    assert refused.startswith(f"chdir {errno.ESTALE} "), refused
    assert "not the directory verified at launch" in refused
    assert not marker.exists()
    assert trio.run(launch, (info.st_dev, info.st_ino)) == "ran"
    assert marker.exists()


@pytest.mark.userns
@pytest.mark.parametrize("how", ["c-init", "python-init"])
def test_a_working_directory_under_a_copy_on_write_cache_is_entered_only_if_verified(
        world_tmp: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """review25: a working directory inside a cache root is an overlay of the host's
    directory (``_mounts.OVERLAY``: copy-on-write), whose lower layer the init takes by
    path when it builds the view. Its ``cwd_identity`` was dropped from the plan as "no
    check by identity fits", so a directory renamed into its place after the daemon
    verified it (the cache home ``$XDG_CACHE_HOME`` may be kept below a directory another
    user owns) was the session's working directory, its files never verified. A launch
    whose verified working directory the view can only show through an overlay is refused
    before anything runs (the hint: list it under ``shared_caches``)."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if how == "python-init" else "")
    home = world_tmp / "home"
    work = home / ".cache" / "proj"
    work.mkdir(parents=True)
    out = world_tmp / "out"
    out.mkdir()
    marker = out / "ran"
    info = os.stat(work)
    pol = msgspec.structs.replace(
        policy((work, Access.READWRITE), (out, Access.READWRITE)),
        cache_home=str(home / ".cache"))

    async def launch(identity: tuple[int, int] | None) -> str:
        async with open_launcher("namespaces") as launcher:
            try:
                proc = await launcher.launch(
                    pol, LaunchRequest(argv=("/bin/sh", "-c", f"echo > {marker}"),
                                       cwd=str(work), env=(("HOME", str(home)),),
                                       cwd_identity=identity))
            except LaunchError as exc:
                return f"{exc.step} {exc} {exc.hint}"
            await proc.wait_exited()
            return "ran"

    refused = trio.run(launch, (info.st_dev, info.st_ino + 1))  # another directory's
    assert not marker.exists(), refused
    assert refused.startswith("mounts "), refused
    assert "shared_caches" in refused
    refused = trio.run(launch, (info.st_dev, info.st_ino))  # even the verified one
    assert not marker.exists() and "shared_caches" in refused, refused
    assert trio.run(launch, None) == "ran"  # not verified (--trust-override): as before
    assert marker.exists()
