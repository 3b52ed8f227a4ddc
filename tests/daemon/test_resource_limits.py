"""Resource limits through the daemon, against the real kernel's cgroups (v1 on the project's
test host): a session is killed at its memory limit, stopped at its pid cap, and accounted."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonoctl.client import Client, RemoteError
from nonod import protocol as p
from nonod.cgroups import CgroupLimits, open_backend

from ..proctree import wait_until
from .conftest import DaemonThread, wait_pid_gone
from .test_cli import CLI, cli_env

PY = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or open_backend("/probe")[0] is None,
    reason="needs root and a writable cgroup hierarchy with memory and pids controllers")

ALLOCATE = """
import time
chunks = []
for i in range(400):
    chunks.append(bytearray(1 << 20))  # zero-filled: every page is touched
print("allocated 400M", flush=True)
"""

FORK_UNTIL_REFUSED = """
import os, sys, time
children = 0
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        print("refused after", children, exc.errno, flush=True)
        sys.exit(3)
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children += 1
"""


@pytest.fixture
def profile(short_tmp: Path) -> Path:
    path = short_tmp / "limits.json"
    path.write_text(json.dumps({"meta": {"name": "limits"}, "workdir": {"access": "read"},
                                "groups": {"include": ["python_runtime"]}}))
    return path


@pytest.fixture
def client(daemon_thread: DaemonThread) -> Iterator[Client]:
    with Client(daemon_thread.socket, autostart=False) as c:
        yield c


def wait_ended(client: Client, session: str, timeout: float = 30) -> p.SessionDetail:
    with client._fresh() as conn:  # wait on its own connection: the first keeps answering
        reply = conn.request(p.Wait(session=session))
    assert isinstance(reply, p.Exited), reply
    detail = client.inspect(session)
    assert detail.state == "exited"
    return detail


def launch(client: Client, profile: Path, cwd: Path, argv: list[str],
           **options: object) -> p.SessionDetail:
    return client.launch(argv, profile=str(profile), cwd=str(cwd), stdio="null",
                         options=p.LaunchOptions(**options))  # type: ignore[arg-type]


def _answer_time(client: Client) -> float:
    """The quickest of three ``sessions`` round trips: what the daemon takes, less the
    moments a loaded host did not run it."""
    took = []
    for _ in range(3):
        started = time.monotonic()
        client.sessions()
        took.append(time.monotonic() - started)
    return min(took)


def test_a_session_past_its_memory_limit_is_killed_with_reason_oom(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "alloc.py").write_text(ALLOCATE)
    neighbour = launch(client, profile, short_tmp, [PY, "-S", "-c", "import time; time.sleep(60)"],
                       memory=32 << 20)
    answered_before = _answer_time(client)
    hog = launch(client, profile, short_tmp, [PY, "-S", "alloc.py"], memory=32 << 20)
    layer = {lay.name: lay for lay in (hog.enforcement.layers if hog.enforcement else ())}
    assert layer["limits"].state == "applied", layer["limits"]
    ended = wait_ended(client, hog.id)
    assert ended.reason == "oom"
    assert ended.usage is not None and ended.usage.oom_kills >= 1
    assert ended.usage.memory_peak_bytes <= 32 << 20
    assert ended.limits is not None and ended.limits.memory == 32 << 20
    # The audit record says so, with the figures.
    audit = short_tmp / "state" / "sessions" / hog.id / "audit.ndjson"
    last = [json.loads(line) for line in audit.read_text().splitlines()
            if '"session_ended"' in line][-1]
    ended_event = last["event"]
    assert ended_event["reason"] == "oom" and ended_event["signal"] == 9
    usage = ended_event["usage"]
    assert usage["oom_kills"] >= 1 and usage["memory_peak_bytes"] > 16 << 20
    # The neighbour and the daemon are untouched, and answer at once: as fast as before the
    # hog (the quickest of three answers each, with a margin for a loaded host's noise).
    answered_after = _answer_time(client)
    assert answered_after < 0.5 + 10 * answered_before, (answered_before, answered_after)
    live = {s.id: s for s in client.sessions()}
    assert neighbour.id in live and live[neighbour.id].state == "running"
    assert live[neighbour.id].usage is not None and live[neighbour.id].usage.oom_kills == 0
    client.stop(neighbour.id, force=True)


def test_forks_past_the_pid_cap_are_refused_and_the_session_ends_with_reason_pids_limit(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "fork.py").write_text(FORK_UNTIL_REFUSED)
    session = launch(client, profile, short_tmp, [PY, "-S", "fork.py"], max_processes=16)
    ended = wait_ended(client, session.id)
    assert ended.exit_code == 3
    assert ended.reason == "pids_limit"
    assert ended.usage is not None and ended.usage.pids_limit_hits >= 1
    # 16 for the session, + the launcher's outer process and the session's init
    assert ended.usage.pids_peak <= 18


def test_every_process_of_a_session_is_born_in_its_cgroup_cold_or_warm(
        client: Client, profile: Path, short_tmp: Path) -> None:
    # The first launch of a kind is cold (its launcher joins the session's groups); the next
    # ones find warm launchers made for it, whose init was born in a group of its own, which
    # becomes the session's (its limits written there) before the plan is handed over.
    sessions = [launch(client, profile, short_tmp, [PY, "-S", "-c", "import time; time.sleep(60)"],
                       memory=48 << 20, max_processes=30)
                for _ in range(3)]
    kinds = []
    for session in sessions:
        assert session.pid is not None and session.enforcement is not None
        layer = next(lay for lay in session.enforcement.layers if lay.name == "limits")
        group = layer.detail.rsplit("/", 1)[1]  # the memory group's name, as reported
        kinds.append("cold" if group == session.id else "warm")
        lines = Path(f"/proc/{session.pid}/cgroup").read_text().splitlines()
        for controller in ("memory", "pids", "cpuacct"):
            path = next(line.split(":")[2] for line in lines
                        if controller in line.split(":")[1].split(","))
            assert path.rsplit("/", 2)[1].startswith("nono-"), (controller, path)
            assert path.rsplit("/", 1)[1] == group, (controller, path, group)
            limit = {"memory": ("memory.limit_in_bytes", str(48 << 20)),
                     "pids": ("pids.max", "32")}.get(controller)
            if limit is not None:  # written by the daemon (cold) or the fork server (warm)
                assert Path(f"/sys/fs/cgroup/{controller}{path}/{limit[0]}").read_text() \
                    .strip() == limit[1], (controller, path)
        assert client.inspect(session.id).usage.pids >= 2  # type: ignore[union-attr]
        client.stop(session.id, force=True)
    assert kinds[0] == "cold" and "warm" in kinds, kinds


def _host_processes() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def _usage(client: Client, session: str) -> p.Usage:
    usage = client.inspect(session).usage
    assert usage is not None
    return usage


BOMB = """
import os, time
while True:  # every process forks forever; refused forks are retried
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""


def test_a_fork_bomb_stops_at_its_pid_cap_and_the_session_still_stops_cleanly(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "bomb.py").write_text(BOMB)
    before = _host_processes()
    bomb = launch(client, profile, short_tmp, [PY, "-S", "bomb.py"], max_processes=32)
    deadline = time.monotonic() + 20
    while _usage(client, bomb.id).pids_limit_hits < 5:  # bounded: the cap is hit at once
        assert time.monotonic() < deadline, "the bomb never reached its cap"
        time.sleep(0.05)
    usage = _usage(client, bomb.id)
    assert usage.pids <= 34 and usage.pids_peak <= 34
    # Other work on the host comes and goes; an uncapped bomb adds thousands.
    assert _host_processes() - before < 200
    started = time.monotonic()
    exited = client.stop(bomb.id, timeout=1)
    assert time.monotonic() - started < 15
    assert exited.reason == "stopped"
    ended = client.inspect(bomb.id)
    assert ended.state == "exited" and ended.usage is not None
    assert ended.usage.pids_limit_hits >= 5


BUSY = """
import os, sys, time
os.sched_setaffinity(0, {0})  # both sessions on one CPU: weights decide who gets it
end = time.monotonic() + 60
while time.monotonic() < end:
    pass
"""


def _cpu_over(client: Client, sessions: list[str], seconds: float) -> list[float]:
    first = [_usage(client, s).cpu_ns for s in sessions]
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window, not a synchronisation
    wall = time.monotonic() - started
    return [(_usage(client, s).cpu_ns - a) / 1e9 / wall
            for s, a in zip(sessions, first, strict=True)]


def test_cpu_weights_share_one_cpu_in_their_ratio(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "busy.py").write_text(BUSY)
    light = launch(client, profile, short_tmp, [PY, "-S", "busy.py"], cpu_weight=100)
    heavy = launch(client, profile, short_tmp, [PY, "-S", "busy.py"], cpu_weight=300)
    try:
        light_share, heavy_share = _cpu_over(client, [light.id, heavy.id], 2.0)
        # Documented: CPU time in proportion to the weights (1:3) when they compete.
        ratio = heavy_share / max(light_share, 1e-3)
        assert 2.0 <= ratio <= 4.5, (light_share, heavy_share)
    finally:
        client.stop(light.id, force=True)
        client.stop(heavy.id, force=True)


def test_a_cpu_quota_caps_cpu_time_per_wall_second(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "busy.py").write_text(BUSY)
    capped = launch(client, profile, short_tmp, [PY, "-S", "busy.py"], cpus=0.2)
    try:
        (share,) = _cpu_over(client, [capped.id], 2.0)
        assert 0.02 < share <= 0.25, share
    finally:
        client.stop(capped.id, force=True)


def test_a_wall_clock_limit_stops_the_session_with_reason_wall_clock(
        client: Client, profile: Path, short_tmp: Path) -> None:
    session = launch(client, profile, short_tmp, ["/bin/sleep", "60"], timeout=0.5)
    ended = wait_ended(client, session.id)
    assert ended.reason == "wall_clock"
    assert ended.limits is not None and ended.limits.wall_clock == 0.5


ESCAPE = """
import os, sys
def attempt(what, f):
    try:
        f()
        print(what, "OK")
    except OSError as exc:
        print(what, exc.errno)
attempt("list", lambda: os.listdir("/sys/fs/cgroup"))
for subtree in sys.argv[1:]:
    attempt("list", lambda: os.listdir(subtree))
    for name in ("pids.max", "memory.limit_in_bytes", "cgroup.procs"):
        attempt("write", lambda: open(os.path.join(subtree, name), "w").write("0"))
print("cgroup", open("/proc/self/cgroup").read().split())
"""


def test_a_session_cannot_see_or_write_the_cgroup_tree(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "escape.py").write_text(ESCAPE)
    backend, _ = open_backend(str(short_tmp / "state"))
    assert backend is not None
    subtrees = backend.subtrees()  # the daemon's: every session's group is below them
    probe = client.launch([PY, "-S", "escape.py", *subtrees], profile=str(profile),
                          cwd=str(short_tmp), stdio="pty",
                          options=p.LaunchOptions(memory=64 << 20, max_processes=64))
    wait_ended(client, probe.id)
    out = b"".join(client.logs(probe.id)).decode()
    # /sys is in nono's default system group (read-only), but /sys/fs/cgroup is masked
    # (EACCES) or, in a root session's narrowed /sys, absent (ENOENT).
    assert "OK" not in out, out
    refused = [line for line in out.splitlines() if line.endswith((" 13", " 2"))]
    assert sum(line.startswith("list ") for line in refused) == 1 + len(subtrees), out
    assert sum(line.startswith("write ") for line in refused) == 3 * len(subtrees), out
    # Its cgroup namespace is rooted at its own group: no path of the host's tree shows.
    assert "cgroup ['" in out and "nono-" not in out, out


def test_a_caller_over_a_ceiling_is_refused_naming_the_limit(
        short_tmp: Path, profile: Path) -> None:
    config = '[limits]\nmax_memory = "64M"\nmax_processes = 100\ncpu_weight = 50\n'
    daemon = DaemonThread(short_tmp, config=config).start()
    try:
        with Client(daemon.socket, autostart=False) as client:
            argv = [PY, "-S", "-c", "pass"]
            with pytest.raises(RemoteError) as refused:
                launch(client, profile, short_tmp, argv, memory=128 << 20)
            assert refused.value.remote_code == "limits.exceeded"
            assert "memory 128M is above this daemon's ceiling 64M" in refused.value.message
            with pytest.raises(RemoteError, match="max_processes 500 is above"):
                launch(client, profile, short_tmp, argv, max_processes=500)
            # Asking for nothing gets the ceilings, and the defaults.
            session = launch(client, profile, short_tmp, argv)
            assert session.limits == p.Limits(memory=64 << 20, max_processes=100, cpu_weight=50)
            wait_ended(client, session.id)
    finally:
        daemon.stop()


def test_groups_left_by_a_dead_daemon_are_removed_at_the_next_start(
        short_tmp: Path) -> None:
    state = short_tmp / "state"
    backend, _ = open_backend(str(state))
    assert backend is not None
    # What a daemon killed with its sessions' groups still populated leaves behind.
    group = backend.create("0badc0de", CgroupLimits(pids=8))
    # An orphan, as the sessions of a dead daemon are (pid 1 reaps it).
    leftover = int(subprocess.run(["/bin/sh", "-c", "/bin/sleep 300 >/dev/null 2>&1 & echo $!"],
                                  capture_output=True, text=True, check=True).stdout)
    for procs in group.procs:
        Path(procs).write_text(str(leftover))
    daemon = DaemonThread(short_tmp).start()
    try:
        assert wait_pid_gone(leftover, timeout=10)
        assert not any(Path(sub, "0badc0de").exists() for sub in backend.subtrees())
    finally:
        daemon.stop()
    # A daemon that stops cleanly leaves nothing either.
    assert not any(Path(sub).exists() for sub in backend.subtrees())


def test_cli_flags_inspect_ps_top_and_profile_show(
        daemon_thread: DaemonThread, client: Client, profile: Path, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    (short_tmp / "busy.py").write_text(BUSY)
    done = run("launch", "--profile", str(profile), "-d", "--memory", "48M", "--max-processes",
               "20", "--cpus", "0.5", "--cpu-weight", "200", "--timeout", "5m", "--",
               PY, "-S", "busy.py")
    assert done.returncode == 0, done.stderr
    session = done.stdout.strip()
    try:
        shown = run("inspect", session)
        assert "memory 48M, 20 processes, 0.5 CPUs, CPU weight 200, wall clock 300s" \
            in shown.stdout, shown.stdout
        assert "limits: applied" in shown.stdout and "pids" in shown.stdout
        listed = json.loads(run("ps", "--json").stdout)
        mine = next(s for s in listed if s["id"] == session)
        # the program and its init (and, until the init is nono-reaper, the outer launcher)
        assert mine["usage"]["pids"] >= 2 and mine["usage"]["memory_bytes"] > 0
        top = run("top", "--once", "--interval", "0.5")
        assert top.returncode == 0, top.stderr
        header, *rows = top.stdout.splitlines()
        assert header.split()[:4] == ["ID", "NAME", "CPU%", "CPU"]
        row = next(r.split() for r in rows if r.startswith(session))
        assert 10 <= float(row[2]) <= 60, row  # busy, capped at half a CPU
    finally:
        client.stop(session, force=True)
    resolved = run("profile", "show", str(profile), "--resolved", "--memory", "1G",
                   "--timeout", "90s")
    assert resolved.returncode == 0, resolved.stderr
    policy = json.loads(resolved.stdout)
    policy = policy.get("document", policy)
    assert policy["limits"] == {"memory": 1 << 30, "wall_clock": 90.0}, policy
    bad = run("launch", "--memory", "lots", "--", "true")
    assert bad.returncode == 2 and "not a size" in bad.stderr
    doctor = json.loads(run("doctor", "--json").stdout)
    findings = doctor.get("findings", doctor) if isinstance(doctor, dict) else doctor
    cgroups = next(f for f in findings if f["check"] == "cgroups")
    assert cgroups["status"] == "ok" and "cgroup v" in cgroups["detail"]


def test_a_limit_the_host_cannot_apply_refuses_the_launch_unless_the_profile_accepts_it(
        client: Client, profile: Path, short_tmp: Path) -> None:
    backend, _ = open_backend(str(short_tmp / "state"))
    probe = backend.create("probe", CgroupLimits(io_weight=200)) if backend else None
    if probe is None or not probe.missing:
        pytest.skip("this host can apply an I/O weight: no limit to be missing")
    probe.remove()
    argv = [PY, "-S", "-c", "pass"]
    with pytest.raises(RemoteError) as refused:
        launch(client, profile, short_tmp, argv, io_weight=200)
    assert refused.value.remote_code == "launch.enforcement"
    assert "io_weight" in refused.value.message and "allow_degraded" in (refused.value.hint or "")
    lenient = short_tmp / "lenient.json"
    lenient.write_text(json.dumps({**json.loads(profile.read_text()),
                                   "nonod": {"allow_degraded": ["limits"]}}))
    session = launch(client, lenient, short_tmp, argv, io_weight=200, memory=64 << 20)
    layers = {lay.name: lay for lay in session.enforcement.layers}  # type: ignore[union-attr]
    assert layers["limits"].state == "partial" and "io_weight" in layers["limits"].reason
    assert "memory 64M" in layers["limits"].detail
    wait_ended(client, session.id)


OOM_CHILD = """
import os, time
if os.fork() == 0:
    chunks = [bytearray(1 << 20) for _ in range(400)]
    os._exit(0)
time.sleep(60)  # the parent survives the OOM kill of its child
"""


def test_an_oom_kill_of_any_process_ends_the_whole_session(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "oom_child.py").write_text(OOM_CHILD)
    session = launch(client, profile, short_tmp, [PY, "-S", "oom_child.py"], memory=32 << 20)
    started = time.monotonic()
    ended = wait_ended(client, session.id)
    assert time.monotonic() - started < 20  # not the parent's 60 s
    assert ended.reason == "oom" and ended.signal == 9


def test_a_group_made_for_a_launch_that_went_warm_serves_the_next_launch(
        daemon_thread: DaemonThread, client: Client, profile: Path, short_tmp: Path) -> None:
    # Each launch gets its groups made first, in case it goes cold; a warm one runs in its
    # launcher's group instead. The unused groups are kept for later launches with the same
    # limits (a few), not made and removed again for every session.
    backend, _ = open_backend(str(daemon_thread.state_dir))
    assert backend is not None
    memory = next(sub for sub in backend.subtrees() if "/memory" in sub)
    sessions = [launch(client, profile, short_tmp, ["/bin/sleep", "60"], max_processes=30)
                for _ in range(10)]
    used = set()
    for session in sessions:
        lines = Path(f"/proc/{session.pid}/cgroup").read_text().splitlines()
        used.add(next(line.rsplit("/", 1)[1] for line in lines if ":memory:" in line))
    assert len(used) == len(sessions)

    def unused() -> list[str]:
        return [entry for entry in os.listdir(memory)
                if os.path.isdir(Path(memory, entry)) and entry not in used]

    def a_few(groups: list[str]) -> bool:
        return len(groups) <= 4 and 1 <= sum(1 for g in groups if g.startswith("spare-")) <= 2

    # Besides the sessions' own groups: warm launchers waiting for the next launch (two at
    # most per kind) and the spares kept (two at most for these limits, named for what they
    # are). Made per launch, there would be one per warm session. Once the pool has settled:
    # on a loaded host the groups of launchers just retired (their launch went cold, or
    # their pool was refilled) are still being removed when the last launch returns.
    wait_until("the unused groups are a few", lambda: a_few(unused()), timeout=30)
    left = unused()
    assert a_few(left), (left, used)
    for session in sessions:
        client.stop(session.id, force=True)


def test_the_launched_reply_carries_no_usage_and_inspect_does(
        client: Client, profile: Path, short_tmp: Path) -> None:
    # The figures of a session that has only just started are not read for its `launched`
    # reply (a dozen cgroup control files, on the daemon's event loop); `inspect` reads them.
    session = launch(client, profile, short_tmp, ["/bin/sleep", "60"])
    assert session.usage is None
    assert _usage(client, session.id).pids >= 1
    client.stop(session.id, force=True)
