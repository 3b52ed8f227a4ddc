"""Warm launchers that build a policy's view ahead (``_launcher.View``): one launcher serves
only plans with its very view, and what it built ahead is checked against the host at
launch. Every test launches several sessions through one fork server, back to back, so
that after the first launches of a policy its prepared launchers serve the next ones."""

from __future__ import annotations

import os
import select
import shutil
import socket
import typing
from pathlib import Path

import pytest
import trio

from nonod.errors import LaunchError
from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox import Launcher, LaunchRequest, open_launcher
from nonod.sandbox._forkserver import (
    BUSY_DEPTH,
    WARM_DEPTH,
    Cue,
    PoolKey,
    _InFlight,
    _Pool,
    _Warm,
)
from nonod.sandbox._guardhub import GuardHub
from nonod.sandbox._landlock import (
    LandlockPlan,
    build_ruleset,
    fs_rights_for_abi,
    probe_abi,
    rules_current,
)
from nonod.sandbox._types import LayerReport

from ..proctree import children, comm, launchers, wait_until

#: Every test here launches sessions in new namespaces.
pytestmark = pytest.mark.userns

PY = "/usr/bin/python3"
#: Prints, for each path, its first line or the errno name of the failure.
READ_ALL = (
    "import errno, sys\n"
    "for p in sys.argv[1:]:\n"
    "    try:\n"
    "        print(open(p).readline().strip())\n"
    "    except OSError as e:\n"
    "        print(errno.errorcode.get(e.errno, e.errno))\n"
)


def _policy(name: str, *grants: Grant, denials: tuple[Denial, ...] = ()) -> ResolvedPolicy:
    return ResolvedPolicy(
        name=name,
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                *grants),
        denials=denials,
    )


async def _read(launcher: Launcher, policy: ResolvedPolicy, *paths: Path,
                code: str = READ_ALL, env: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """What a session of ``policy`` prints running ``code`` on ``paths`` (by default: what
    it reads there, see ``READ_ALL``)."""
    out_r, out_w = os.pipe()
    try:
        proc = await launcher.launch(
            policy, LaunchRequest(argv=(PY, "-S", "-c", code, *map(str, paths)), cwd="/",
                                  env=env),
            stdio=(0, out_w, 2))
    finally:
        os.close(out_w)
    with os.fdopen(out_r, "rb") as out:
        status = await proc.wait_exited()
        text = out.read().decode()
    assert status.code == 0, status
    return text.splitlines()


def _grant_dir(root: Path, name: str) -> tuple[Path, Grant]:
    directory = root / name
    directory.mkdir()
    (directory / "marker").write_text(f"{name}\n")
    return directory / "marker", Grant(path=str(directory), access=Access.READ)


def test_two_policies_alternating_each_see_only_their_own_view(world_tmp: Path) -> None:
    """Policies A and B take turns on one fork server: every session of A reads A's
    directory and not B's, and the other way round, also once both have warm launchers
    prepared for their views."""
    a_marker, a_grant = _grant_dir(world_tmp, "a")
    b_marker, b_grant = _grant_dir(world_tmp, "b")
    a, b = _policy("a", a_grant), _policy("b", b_grant)

    async def main() -> list[tuple[str, list[str]]]:
        seen: list[tuple[str, list[str]]] = []
        async with open_launcher("namespaces") as launcher:
            for policy in (a, b) * 6:
                seen.append((policy.name, await _read(launcher, policy, a_marker, b_marker)))
        return seen

    for name, lines in trio.run(main):
        assert lines == (["a", "ENOENT"] if name == "a" else ["ENOENT", "b"]), (name, lines)


@pytest.mark.root
def test_sessions_run_at_the_daemons_priority_not_the_refills(world_tmp: Path) -> None:
    """Warm launchers prepare themselves at a lower priority (``WARM_NICE``); every session,
    the ones they serve included, runs with the fork server's policy and nice value."""
    _, grant = _grant_dir(world_tmp, "a")
    policy = _policy("a", grant)
    code = "import os; print(os.nice(0), os.sched_getscheduler(0))"

    async def main() -> list[list[str]]:
        async with open_launcher("namespaces") as launcher:
            return [await _read(launcher, policy, code=code) for _ in range(6)]

    assert trio.run(main) == [[f"{os.nice(0)} {os.sched_getscheduler(0)}"]] * 6


def _inotify_watches(pid: int) -> int:
    """How many inotify watches the process ``pid`` holds (its fdinfo)."""
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += info.read_text().count("inotify wd:")
        except OSError:
            continue  # closed meanwhile
    return count


def _waits_for_a_plan(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/wchan").read_text() == "__skb_wait_for_more_packets"
    except OSError:
        return False


def test_a_prepared_launcher_guards_its_view_before_its_launch(world_tmp: Path) -> None:
    """A launcher prepared for a view with a mask has its view guard watching before any
    plan comes (``_launcher._adopt_ahead``; with an outer, ``_arm_guard``): once the
    sessions have ended, the fork server's hub still watches the way to the mask, for the
    launcher waiting. The sessions are guarded as before."""
    project = world_tmp / "project"
    project.mkdir()
    (project / "marker").write_text("project\n")
    (project / ".env").write_text("SECRET\n")
    policy = _policy("project", Grant(path=str(project), access=Access.READ),
                     denials=(Denial(path=str(project / ".env"), is_file=True),))

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:
            before = [await _read(launcher, policy, project / "marker", project / ".env")
                      for _ in range(3)]
            server = launcher._proc.pid

            def only_waiting_launchers() -> bool:  # the sessions' outers and inits have gone
                # An outer waits with its init below it; a direct init (no outer) waits in
                # its plan socket's recv. (The hub's repair server, there while it guards a
                # waiting launcher's view, waits in poll: not a launcher.)
                ours = {pid for pid in launchers(server) if comm(pid) != "nono-repair"}
                return bool(ours) and all(children(pid) or _waits_for_a_plan(pid)
                                          for pid in ours)

            def watching() -> bool:
                return only_waiting_launchers() and _inotify_watches(server) > 0

            await trio.to_thread.run_sync(
                lambda: wait_until("only warm launchers are left", only_waiting_launchers))
            await trio.to_thread.run_sync(
                lambda: wait_until("a waiting launcher's guard watches", watching, 5))
            (project / ".env").rename(project / ".env.old")
            (project / ".env").write_text("NEW-SECRET\n")
            after = await _read(launcher, policy, project / "marker", project / ".env")
        return before, after

    before, after = trio.run(main)
    for lines in [*before, after]:
        assert lines[0] == "project" and "SECRET" not in "".join(lines[1:]), (before, after)


def test_every_session_holds_no_capability_cold_or_warm(world_tmp: Path) -> None:
    """The init empties the bounding set while it prepares (a warm one ahead of its launch)
    and the other sets at step ``caps``: the program of the first (cold) session and of
    those served by warm launchers has every capability set empty, no_new_privs and its
    seccomp filter."""
    _, grant = _grant_dir(world_tmp, "a")
    policy = _policy("a", grant)
    status = (
        "for line in open('/proc/self/status'):\n"
        "    if line.split(':')[0] in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb',"
        " 'NoNewPrivs', 'Seccomp'):\n"
        "        print(' '.join(line.split()))\n"
    )

    async def main() -> list[list[str]]:
        async with open_launcher("namespaces") as launcher:
            return [await _read(launcher, policy, code=status) for _ in range(4)]

    for lines in trio.run(main):
        assert lines == [*(f"Cap{s}: 0000000000000000" for s in ("Inh", "Prm", "Eff", "Bnd",
                                                                    "Amb")),
                         "NoNewPrivs: 1", "Seccomp: 2"], lines


def test_a_launch_failing_on_a_warm_launcher_reports_its_step(world_tmp: Path) -> None:
    """The init fails (its working directory is not in the view) after launches that warmed
    the pool: the error reaches the caller (the pid the fork server writes once the init has
    let go comes after it), and the next launch of the view works."""
    marker, grant = _grant_dir(world_tmp, "a")
    policy = _policy("a", grant)
    elsewhere = world_tmp / "elsewhere"
    elsewhere.mkdir()

    async def main() -> tuple[str, list[str]]:
        async with open_launcher("namespaces") as launcher:
            for _ in range(3):
                await _read(launcher, policy, marker)
            with pytest.raises(LaunchError) as failed:
                await launcher.launch(policy, LaunchRequest(argv=("/bin/true",),
                                                            cwd=str(elsewhere)))
            return failed.value.step, await _read(launcher, policy, marker)

    assert trio.run(main) == ("chdir", ["a"])


def test_a_bound_directory_replaced_between_launches_is_bound_afresh(world_tmp: Path) -> None:
    """The host swaps a granted directory for a new one (``mv``, then ``mkdir``) after a
    policy's launchers were prepared: the next session sees the new directory, not the
    one the prepared launchers had bound."""
    marker, grant = _grant_dir(world_tmp, "project")
    policy = _policy("project", grant)

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:
            before = [await _read(launcher, policy, marker) for _ in range(4)]
            marker.parent.rename(world_tmp / "project.old")
            marker.parent.mkdir()
            marker.write_text("replaced\n")
            after = await _read(launcher, policy, marker)
        return before, after

    before, after = trio.run(main)
    assert before == [["project"]] * 4
    assert after == ["replaced"]


def test_prepared_copy_on_write_caches_are_each_sessions_own(world_tmp: Path) -> None:
    """A writable cache grant is an overlay in views built ahead too: every session reads
    the host's cache as it is (an entry the host adds between launches included) and writes
    only its own copy, which neither the host nor the next session sees."""
    cache = world_tmp / "home" / ".cache" / "go-build"
    cache.mkdir(parents=True)
    (cache / "entry").write_text("host\n")
    policy = ResolvedPolicy(
        name="cache", cache_home=str(cache.parent), denials=(),
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(cache), access=Access.READWRITE)))
    code = ("import os, sys\n"
            "c = sys.argv[1]\n"
            "print(sorted(os.listdir(c)), open(c + '/entry').read().strip())\n"
            "open(c + '/entry', 'w').write('session')\n"
            "open(c + '/mine', 'w').write('session')\n")

    async def main() -> list[list[str]]:
        async with open_launcher("namespaces") as launcher:
            seen = [await _read(launcher, policy, cache, code=code) for _ in range(4)]
            (cache / "added").write_text("host\n")
            seen.append(await _read(launcher, policy, cache, code=code))
        return seen

    seen = trio.run(main)
    assert seen[:4] == [["['entry'] host"]] * 4, seen
    assert seen[4] == ["['added', 'entry'] host"], seen
    assert sorted(os.listdir(cache)) == ["added", "entry"]
    assert (cache / "entry").read_text() == "host\n"


def test_a_masked_directory_made_again_between_launches_stays_masked(world_tmp: Path) -> None:
    """The host removes a masked directory and makes it again, with a secret in it, after a
    policy's launchers were prepared (the kernel then drops their mask, which sat on the old
    directory): the next session still cannot read the secret, because the view guard
    covers every guarded path again when the session starts."""
    home = world_tmp / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "id_rsa").write_text("OLD-SECRET\n")
    (home / "notes.txt").write_text("notes\n")
    policy = _policy("home", Grant(path=str(home), access=Access.READ),
                     denials=(Denial(path=str(ssh)),))

    async def main() -> tuple[list[list[str]], list[str]]:
        async with open_launcher("namespaces") as launcher:
            paths = (home / "notes.txt", ssh / "id_rsa")
            before = [await _read(launcher, policy, *paths) for _ in range(4)]
            shutil.rmtree(ssh)
            ssh.mkdir()
            (ssh / "id_rsa").write_text("NEW-SECRET\n")
            after = await _read(launcher, policy, *paths)
        return before, after

    before, after = trio.run(main)
    assert all(lines[0] == "notes" and "SECRET" not in lines[1] for lines in before), before
    assert after[0] == "notes"
    assert "SECRET" not in after[1], after


def test_the_creation_guard_holds_in_every_session_of_a_prepared_view(world_tmp: Path) -> None:
    """A writable ``$HOME`` gets the creation guard (its pinned directories are part of the
    prepared view): in every session, first or served by a prepared launcher, creating
    ``.bashrc`` is refused and creating another name works."""
    home = world_tmp / "home"
    home.mkdir()
    policy = _policy("home", Grant(path=str(home), access=Access.READWRITE))
    create = (
        "import errno, sys\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        open(p, 'x').close()\n"
        "        print('OK')\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode.get(e.errno, e.errno))\n"
    )

    async def main() -> list[list[str]]:
        async with open_launcher("namespaces") as launcher:
            return [await _read(launcher, policy, home / ".bashrc", home / f"note{i}",
                                code=create, env=(("HOME", str(home)),)) for i in range(5)]

    for lines in trio.run(main):
        assert lines[0] != "OK" and lines[1] == "OK", lines
    assert not (home / ".bashrc").exists()
    assert sorted(p.name for p in home.iterdir()) == [f"note{i}" for i in range(5)]


def test_a_prepared_ruleset_is_current_only_while_its_paths_name_the_same_files(
        world_tmp: Path) -> None:
    """``rules_current``: a file replaced by rename (an editor saving) after the ruleset was
    built makes it stale (its rule is on the old inode), and the launcher builds it again."""
    notes = world_tmp / "notes.txt"
    notes.write_text("first\n")
    plan = LandlockPlan(abi=probe_abi(), handled_access_fs=fs_rights_for_abi(probe_abi()),
                        handled_access_net=0, scoped=0,
                        rules=((str(notes).encode(), 1, True),
                               (str(world_tmp / "gone").encode(), 1, True)),
                        net_rules=(), report=LayerReport(name="landlock", state="applied"))
    ruleset, ids = build_ruleset(plan)
    os.close(ruleset)
    assert ids[1] == (0, 0)
    assert rules_current(plan, ids)
    (world_tmp / "notes.txt.new").write_text("saved\n")
    (world_tmp / "notes.txt.new").rename(notes)
    assert not rules_current(plan, ids)


def test_the_refill_waits_for_the_launch_in_flight_until_its_init_lets_go() -> None:
    """``_InFlight``: while a launch's cue is open (its init has not started the program),
    a refill waits; the init closing its end (after ``posix_spawn``, or by dying) wakes
    the fork server's poll, which lets the refill go."""
    poller = select.poll()
    inflight = _InFlight(poller)
    assert inflight.wait_ms() == 0
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    inflight.add(Cue(ours))
    assert 0 < inflight.wait_ms() <= _InFlight.PATIENCE * 1000
    assert poller.poll(0) == []
    theirs.close()
    events = poller.poll(1000)
    assert [fd for fd, _ in events] == [ours.fileno()]
    assert inflight.ended(ours.fileno())
    assert inflight.wait_ms() == 0
    assert ours.fileno() == -1  # closed by the pool


def test_a_key_left_without_a_launcher_is_refilled_beside_a_launch_in_flight() -> None:
    """``_Pool.refill_in``: a refill waits for the launch in flight while its key still has
    a launcher waiting, and goes at once when the launches took every launcher of the key
    (its next launch would be made cold: launches back to back from several clients, with
    one nearly always in flight, went cold one in two)."""
    poller = select.poll()
    inflight = _InFlight(poller)
    pool = _Pool(GuardHub(poller), -1)
    assert pool.refill_in(inflight) is None  # nothing launched, nothing to refill
    key = ((os.getuid(), os.getgid(), 0, 0, 0), b"a view")
    pool.want(key, None)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    inflight.add(Cue(ours))
    assert pool.refill_in(inflight) == 0  # no launcher left for it: now
    # One launcher waits for the key (what the decision counts; no process is made here).
    pool._ready[key] = [typing.cast(_Warm, object())]
    assert 0 < (pool.refill_in(inflight) or 0) <= _InFlight.PATIENCE * 1000
    theirs.close()
    assert [fd for fd, _ in poller.poll(1000)] == [ours.fileno()]
    assert inflight.ended(ours.fileno())
    assert pool.refill_in(inflight) == 0  # nothing in flight: the second one now


def test_a_view_launched_beside_other_launches_keeps_four_launchers_refilled_at_once(
        ) -> None:
    """``_Pool``: a view launched again within ``HOT`` while another launch is in flight
    (several clients) keeps ``BUSY_DEPTH`` launchers, refilled at once even with launchers
    left and launches in flight: at 4 in flight the launches come in bursts, and with two
    launchers refilled after the launches in flight 44% of a fleet's launches found none
    and went cold (docs/benchmarks.md, ``fleet5``). One client's launches back to back
    keep two, refilled once the launch in flight let go."""
    poller = select.poll()
    inflight = _InFlight(poller)
    pool = _Pool(GuardHub(poller), -1)
    one, busy = ((os.getuid(), os.getgid(), 0, 0, 0), b"a view"), (
        (os.getuid(), os.getgid(), 0, 0, 0), b"another view")
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    for ours, _ in pairs:
        inflight.add(Cue(ours))
    for _ in range(2):  # back to back: hot
        pool.want(one, None, inflight=1)
        pool.want(busy, None, inflight=2)
    assert (pool._depth(one), pool._depth(busy)) == (WARM_DEPTH, BUSY_DEPTH) == (2, 4)
    pool._ready[busy] = [typing.cast(_Warm, object())] * 3  # (no process made here)
    pool._ready[one] = [typing.cast(_Warm, object())]
    pool._refill.remove(busy)
    assert 0 < (pool.refill_in(inflight) or 0) <= _InFlight.PATIENCE * 1000
    pool._refill.append(busy)
    assert pool.refill_in(inflight) == 0  # the busy view's fourth: now, launches in flight
    for ours, theirs in pairs:
        theirs.close()
        inflight.ended(ours.fileno())


def _refills(pool: _Pool, monkeypatch: pytest.MonkeyPatch) -> list[PoolKey]:
    """The keys ``pool`` makes launchers for from here (in order; no process is made)."""
    made: list[PoolKey] = []

    def make(key: PoolKey, view: object, config: int) -> _Warm:
        made.append(key)
        return typing.cast(_Warm, object())

    monkeypatch.setattr(pool, "_make", make)
    return made


def test_a_busy_view_is_refilled_at_once_behind_a_view_that_can_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``_Pool.refill_in``/``refill_one``: a busy view (``BUSY_DEPTH``) short of launchers
    behind a view that still has one and can wait for the launches in flight: the busy
    one is refilled now, first (the first key alone decided, and the busy view's refill
    waited for the launches in flight: review21)."""
    poller = select.poll()
    inflight = _InFlight(poller)
    pool = _Pool(GuardHub(poller), -1)
    made = _refills(pool, monkeypatch)
    one, busy = ((os.getuid(), os.getgid(), 0, 0, 0), b"a view"), (
        (os.getuid(), os.getgid(), 0, 0, 0), b"another view")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    inflight.add(Cue(ours))
    for _ in range(2):
        pool.want(one, None, inflight=1)
        pool.want(busy, None, inflight=2)
    pool._ready[one] = [typing.cast(_Warm, object())]
    pool._ready[busy] = [typing.cast(_Warm, object())] * 3
    assert pool._refill == [one, busy]
    assert pool.refill_in(inflight) == 0
    pool.refill_one()
    assert made == [busy]
    assert 0 < (pool.refill_in(inflight) or 0) <= _InFlight.PATIENCE * 1000  # one: waits
    theirs.close()
    inflight.ended(ours.fileno())


def test_views_take_turns_at_the_refill(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_Pool.refill_one``: a busy view whose launches take each launcher as it is made
    does not keep every refill; another view short of launchers gets the next (a key kept
    the first place until it had its depth, and the other view's launches found none:
    review21)."""
    poller = select.poll()
    pool = _Pool(GuardHub(poller), -1)
    made = _refills(pool, monkeypatch)
    busy, other = ((os.getuid(), os.getgid(), 0, 0, 0), b"a view"), (
        (os.getuid(), os.getgid(), 0, 0, 0), b"another view")
    for _ in range(2):
        pool.want(busy, None, inflight=2)
        pool.want(other, None, inflight=2)
    for _ in range(4):
        pool.refill_one()
        if made[-1] == busy:  # its launch took it at once, and wants another
            pool.take(busy)
            pool.want(busy, None, inflight=2)
    assert made == [busy, other, busy, other]


def test_a_warm_launch_is_reported_by_its_init_alone(world_tmp: Path) -> None:
    """A warm launch's records from the fork server (the init's pid) travel with its plan,
    and the init writes them on the launch pipe once the program runs: the fork server holds
    no copy of the pipe, so its end comes from the init, not after the fork server's next
    wake-up. A session that blocks before its init lets go is reported to the daemon while
    its program runs: the launch returns with the pid, and the session is still there."""
    _, grant = _grant_dir(world_tmp, "a")
    policy = _policy("a", grant)
    hold = "import sys; sys.stdin.read()"

    async def main() -> list[tuple[int, bool]]:
        seen: list[tuple[int, bool]] = []
        async with open_launcher("namespaces") as launcher:
            for _ in range(4):
                in_r, in_w = os.pipe()
                try:
                    proc = await launcher.launch(
                        policy, LaunchRequest(argv=(PY, "-S", "-c", hold), cwd="/"),
                        stdio=(in_r, 1, 2))
                finally:
                    os.close(in_r)
                seen.append((proc.pid, proc.exit_status is None))
                os.close(in_w)
                status = await proc.wait_exited()
                assert status.code == 0, status
        return seen

    for pid, running in trio.run(main):
        assert pid > 0 and running


def test_every_session_starts_with_no_signal_ignored_or_blocked(world_tmp: Path) -> None:
    """The fork server ignores SIGINT (a terminal's Ctrl-C is the daemon's), and Python its
    SIGPIPE and SIGXFSZ: a disposition ignored stays ignored across exec, so the launchers
    reset each one (``_launcher._reset_signals``). Programs of cold and warm launches alike
    ignore and block none of the signals a program can set: 32 and 33, which glibc keeps for
    itself (its ``sigaction`` refuses them), keep what the daemon inherited."""
    _, grant = _grant_dir(world_tmp, "a")
    policy = _policy("a", grant)
    request = LaunchRequest(argv=("/usr/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"),
                            cwd="/")

    async def main() -> list[list[str]]:
        seen: list[list[str]] = []
        async with open_launcher("namespaces") as launcher:
            for _ in range(4):
                out_r, out_w = os.pipe()
                try:
                    proc = await launcher.launch(policy, request, stdio=(0, out_w, 2))
                finally:
                    os.close(out_w)
                with os.fdopen(out_r, "rb") as out:
                    assert (await proc.wait_exited()).code == 0
                    seen.append([line.split()[1] for line in out.read().decode().splitlines()])
        return seen

    glibc = (1 << 31) | (1 << 32)  # signals 32 and 33: bit n - 1
    for blocked, ignored in trio.run(main):
        assert int(blocked, 16) == 0 and int(ignored, 16) & ~glibc == 0, (blocked, ignored)
