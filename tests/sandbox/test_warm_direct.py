"""Warm launchers without an outer process (``_launcher.direct``, ``run_direct``): for a
prepared view with nothing to guard, the fork server makes the session's init straight in
its namespaces (``_libc.fork_into``) and writes its id maps, ``oom_score_adj`` and group
itself. The sessions they serve must be what the outer process made them: same namespaces,
maps, setgroups, limits, and the fork server's death still ends them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox import Launcher, LaunchRequest, Sandboxed, _libc, open_launcher
from nonod.sandbox._api import GuardReport
from nonod.sandbox._launcher import View, direct
from nonod.sandbox._mounts import MASK_FILE, MountOp

from ..proctree import children, stat, wait_until

pytestmark = pytest.mark.userns

T = TypeVar("T")

PY = "/usr/bin/python3"
POLICY = ResolvedPolicy(name="direct", grants=(Grant(path="/usr", access=Access.READ),
                                                Grant(path="/etc", access=Access.READ)),
                        denials=())
#: What a session prints about itself: its parent as pid 1 sees it, its maps, setgroups,
#: oom_score_adj, cgroup path, and whether pid 1 is its init.
SHOW = (
    "import os\n"
    "r = lambda p: open(p).read().split()\n"
    "print(os.getppid(), r('/proc/self/uid_map'), r('/proc/self/gid_map'),"
    " r('/proc/self/setgroups'), r('/proc/self/oom_score_adj'),"
    " open('/proc/self/cgroup').read().splitlines()[-1])\n"
)


async def run_gated(launcher: Launcher, request: LaunchRequest,
                    waiting: Callable[[Sandboxed], T], policy: ResolvedPolicy = POLICY
                    ) -> tuple[Sandboxed, int, str, T]:
    """One session of ``request``, whose program reads its stdin to the end first: while it
    waits, its init's parent is read and ``waiting(session)`` called. The session, that
    parent, what the program printed and what ``waiting`` returned; it must exit 0."""
    out_r, out_w = os.pipe()
    gate_r, gate_w = os.pipe()
    try:
        proc = await launcher.launch(policy, request, stdio=(gate_r, out_w, 2))
    finally:
        os.close(out_w)
        os.close(gate_r)
    parent = int((stat(proc.pid) or ["", "0"])[1])  # the init, while its program waits
    got = waiting(proc)
    os.close(gate_w)
    with os.fdopen(out_r) as out:
        status = await proc.wait_exited()
        printed = out.read().strip()
    assert status.code == 0, (status, printed)
    return proc, parent, printed, got


async def _launches(n: int, request: LaunchRequest) -> tuple[int, list[tuple[int, str]]]:
    """``n`` sessions back to back (after the first, prepared launchers serve them): the
    fork server's pid, and for each session its init's parent (read while it runs) and
    what it printed."""
    seen: list[tuple[int, str]] = []
    async with open_launcher("namespaces") as launcher:
        for _ in range(n):
            _, parent, printed, _ = await run_gated(launcher, request, lambda _proc: None)
            seen.append((parent, printed))
        return launcher.pid, seen


def test_a_view_with_nothing_to_guard_is_served_without_an_outer_process() -> None:
    """The init's parent is the fork server itself (an outer launcher before), and the
    session sees what the outer used to make: its uid and gid mapped to themselves,
    setgroups denied, the requested oom_score_adj, a cgroup namespace of its own."""
    request = LaunchRequest(argv=(PY, "-S", "-c", "import sys; sys.stdin.read()\n" + SHOW),
                            cwd="/", oom_score_adj=700)
    server, seen = trio.run(_launches, 5, request)
    uid, gid = os.getuid(), os.getgid()
    for parent, line in seen[1:]:  # the first launch is cold: its outer stays the parent
        assert parent == server, (parent, server, line)
        assert line == (f"1 {[str(uid), str(uid), '1']} {[str(gid), str(gid), '1']} "
                        "['deny'] ['700'] 0::/"), line


def test_direct_only_for_a_view_the_guard_has_nothing_in() -> None:
    namespaces = (_libc.CLONE_NEWUSER | _libc.CLONE_NEWNS | _libc.CLONE_NEWPID
                  | _libc.CLONE_NEWNET)
    plain = View(mounts=(MountOp(MASK_FILE, "/proc/kmsg"),), pinned=(), landlock=None,
                 creation_refused=())
    guarded = View(mounts=(MountOp(MASK_FILE, "/home/u/.netrc"),), pinned=(), landlock=None,
                   creation_refused=())
    assert direct((0, 0, namespaces, 0, -1), plain)
    assert not direct((0, 0, namespaces, 0, -1), guarded)  # the outer guards it
    assert not direct((0, 0, namespaces, 7, -1), plain)  # an audit tag: set by the outer
    assert direct((0, 0, namespaces, 7, -1), plain, lends=True)  # unless lent (_loginuid)
    assert not direct((0, 0, namespaces & ~_libc.CLONE_NEWPID, 0, -1), plain)
    assert not direct((0, 0, namespaces, 0, -1), None)


def test_fork_into_starts_the_child_in_its_namespaces() -> None:
    """pid 1 of a new pid namespace, in a new user and network namespace; the parent
    writes its maps."""
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    flags = _libc.CLONE_NEWUSER | _libc.CLONE_NEWPID | _libc.CLONE_NEWNET
    pid = _libc.fork_into(flags)
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
            ns = [os.readlink(f"/proc/self/ns/{n}") for n in ("user", "net")]
            os.write(out_w, f"{os.getpid()} {os.getuid()} {' '.join(ns)}".encode())
        finally:
            os._exit(0)
    os.close(r)
    os.close(out_w)
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{os.getuid()} {os.getuid()} 1"),
                           ("gid_map", f"{os.getgid()} {os.getgid()} 1")):
            Path(f"/proc/{pid}/{name}").write_text(text)
        os.write(w, b"g")
        got = os.read(out_r, 4096).decode().split()
    finally:
        os.close(w)
        os.close(out_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ours = [os.readlink(f"/proc/self/ns/{n}") for n in ("user", "net")]
    assert got[:2] == ["1", str(os.getuid())]
    assert got[2] != ours[0] and got[3] != ours[1]


#: Four sessions of a policy with nothing to guard, the last sleeping ``argv[1]`` seconds:
#: for each, the fork server's pid, its init's parent and the init's pid, while it runs.
SESSIONS = r"""
import sys, trio
from nonod.policy import ResolvedPolicy, Grant, Access
from nonod.sandbox import LaunchRequest, open_launcher
policy = ResolvedPolicy(name="direct", grants=(Grant(path="/usr", access=Access.READ),
                                                Grant(path="/etc", access=Access.READ)),
                        denials=())
async def main():
    async with open_launcher("namespaces") as launcher:
        for i in range(4):
            argv = ("/bin/sleep", sys.argv[1] if i == 3 else "0.1")
            p = await launcher.launch(policy, LaunchRequest(argv=argv, cwd="/"))
            parent = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[1]
            print(launcher.pid, parent, p.pid, flush=True)
            assert (await p.wait_exited()).code == 0
trio.run(main)
"""


def test_the_fork_servers_death_ends_a_direct_session() -> None:
    """The init's parent-death signal ties it to the fork server now (as it did to the
    outer): the server killed, the session (its init, so its pid namespace) ends."""
    run = subprocess.Popen([sys.executable, "-c", SESSIONS, "60"], stdout=subprocess.PIPE,
                           text=True)
    try:
        assert run.stdout is not None
        server, parent, init = map(int, [run.stdout.readline() for _ in range(4)][-1].split())
        assert parent == server  # a direct launcher served it
        os.kill(server, signal.SIGKILL)
        wait_until("the session's init ends", lambda: not stat(init) or stat(init)[0] == "Z")
    finally:
        run.kill()
        run.wait()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="runs a daemon's fork server as another uid")
def test_a_daemon_that_is_not_root_gets_direct_launchers_too() -> None:
    """A fork server that is not root may write a child's id maps only while the child is
    dumpable (its /proc files its own): the child says when it is, and only then are they
    written; its sessions are served without an outer process as root's are."""
    run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", SESSIONS, "0.1"], capture_output=True,
                         text=True, cwd="/", timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    assert len(rows) == 4, rows
    assert all(parent == server for server, parent, _ in rows[1:]), rows


def _mount_points(pid: int) -> list[str]:
    try:
        return [line.split()[4] for line in Path(f"/proc/{pid}/mountinfo").read_text()
                .splitlines()]
    except OSError:
        return []


def _waiting_inits(server: int) -> list[int]:
    """The fork server's children waiting in a socket's recv: direct inits for a plan (the
    hub's repair server waits in poll: not one of them)."""
    return [pid for pid in children(server) if _wchan(pid) == "__skb_wait_for_more_packets"]


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def _sockets(pid: int) -> int:
    """How many sockets ``pid`` holds (a direct init that has handed its guard to the hub
    keeps only its plan socket)."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += os.readlink(fd).startswith("socket:")
    return count


#: Launches of one session of the mask test at most, until one runs as the test needs.
ATTEMPTS = 5


def test_a_view_with_a_mask_is_guarded_by_the_hub_without_an_outer(world_tmp: Path) -> None:
    """A prepared view with something to guard: the init sets the view guard up and hands it
    to the fork server's hub before any plan (``_launcher._adopt_ahead``), and its session
    has no outer process. A masked file the host replaces before the launch (the waiting
    init's view repaired by the hub) and again while the program runs stays masked; each
    restore is reported to the session it belongs to."""
    project = world_tmp / "project"
    project.mkdir()
    secret = project / ".env"
    secret.write_text("SECRET\n")
    policy = ResolvedPolicy(name="masked", grants=(
        *POLICY.grants, Grant(path=str(project), access=Access.READ)),
        denials=(Denial(path=str(secret), is_file=True),))
    request = LaunchRequest(argv=(PY, "-S", "-c", (
        "import sys; sys.stdin.read()\n"
        "try: print(open(sys.argv[1]).read().strip())\n"
        "except OSError as e: print(e.errno)\n"), str(secret)), cwd="/")

    def replace(name: str) -> None:
        secret.rename(project / name)
        secret.write_text("NEW-SECRET\n")

    async def main() -> tuple[int, list[list[tuple[int, str, list[GuardReport], bool]]]]:
        """The launcher's pid and, for each of the three sessions, its attempts: the init's
        parent, what the program printed, its reports, and whether it ran as the test
        needs (the second straight under the fork server, the third on a waiting init
        covered before its launch). A launch may go cold or take a launcher made after
        the change when another program on the host changes the mount table meanwhile
        (the fork server then lets its waiting inits go, or makes new ones, which cover
        the new file as they start, not as a repair): that attempt is made again."""
        tried: list[list[tuple[int, str, list[GuardReport], bool]]] = [[], [], []]
        async with open_launcher("namespaces") as launcher:
            for i in range(3):
                while len(tried[i]) < ATTEMPTS and not any(a[3] for a in tried[i]):
                    covered: list[int] = []
                    if i == 2:  # before the launch: the waiting init's view, repaired
                        covered = await trio.to_thread.run_sync(
                            _replaced_before_launch, launcher.pid, secret, replace)
                    reports: list[GuardReport] = []

                    def waiting_session(proc: Sandboxed, i: int = i,
                                        reports: list[GuardReport] = reports) -> None:
                        proc.on_guard = reports.append
                        if i == 1:  # while the program runs (``pid``: its init's)
                            replace(".env.2")
                            wait_until("the hub covers the new file",
                                       lambda: str(secret) in _mount_points(proc.pid))

                    proc, parent, printed, _ = await run_gated(launcher, request,
                                                               waiting_session, policy)
                    wanted = (True, parent == launcher.pid, proc.pid in covered)[i]
                    tried[i].append((parent, printed, reports, wanted))
        return launcher.pid, tried

    server, tried = trio.run(main)
    print("launches per session:", [len(attempts) for attempts in tried])
    # Masked in every session, however it was launched.
    assert {printed for attempts in tried for _, printed, _, _ in attempts} == {"13"}, tried
    first, running, before = ([a for a in attempts if a[3]] for attempts in tried)
    assert first and running and before, tried  # each ran as needed within ATTEMPTS
    restored = GuardReport("restored", str(secret), what="mask")
    assert first[0][2] == [] and running[0][2] == [restored], tried
    assert running[0][0] == before[0][0] == server, (server, tried)
    # the rename and the new file may reach the hub as one change or as two, each repaired
    # and reported: what matters is that the reports are this session's
    assert before[0][2] and set(before[0][2]) == {restored}, tried


def _replaced_before_launch(server: int, masked: Path, replace: Callable[[str], None]
                            ) -> list[int]:
    """Replace ``masked`` while direct inits wait with its view (the mask on it) built, and
    wait until the hub has covered the new file in each: their pids. (One the fork server
    lets go meanwhile, because another program on the host changed the mount table, is
    not waited for.)"""
    def waiting() -> list[int]:  # with the view built and the guard with the hub
        return [pid for pid in _waiting_inits(server)
                if str(masked) in _mount_points(pid) and _sockets(pid) == 1]

    wait_until("a direct init waiting with the view", lambda: bool(waiting()))
    inits = waiting()  # (two, for a view launched back to back)
    replace(".env.1")
    wait_until("the hub covers the new file", lambda: all(
        str(masked) in _mount_points(init) or not stat(init) for init in inits))
    return inits
