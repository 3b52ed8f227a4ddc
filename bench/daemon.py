"""The daemon's cost: launch latency through the client and the CLI, and its memory.

One run starts a real ``nonod`` (foreground) as a subprocess in a temporary directory (its own
socket and state directory; HOME and the XDG directories outside every grant, as
tests/daemon/conftest.py does), then:

memory (first, on the fresh daemon)
  fresh         VmRSS and PSS of the daemon and its fork server before any launch
  idle          the same 1 s after one launch (exited, pruned): warm launchers now wait below
                the fork server (two per kind of launch)
  settled       the same once no launch came for the daemon's ``[sandbox] warm_idle`` (30 s
                by default): one warm launcher is left; this is the steady idle state
  100 sessions  the same with ``--sessions`` detached ``sleep 600`` sessions (stdio null), and
                every session process; per-session overhead = (total PSS - idle PSS) / sessions.
                The sessions are then stopped and pruned.
  worked        the same once the latency runs below are over (a few hundred
                launches, then pruned) and no launch came for ``[sandbox] warm_idle``: the
                idle state of a daemon that has worked (JSON: ``after_latency``)
  after fleet   (last, with ``--fleet``) the same once the fleet's sessions are stopped and
                pruned and no launch came for ``[sandbox] warm_idle`` (JSON:
                ``after_fleet``): what a burst of that many live sessions leaves behind

latency of ``/bin/true`` from start to exit (``--runs`` timed after ``--warmup`` untimed runs,
each contender back to back, as bench/launch.py does by default):

  client        blocking ``Connection``, kept open: ``Launch(detach=False, stdio="null")``,
                then read replies until ``Exited``
  client-api    ``Client.launch`` (detached, stdio null) + ``Client.wait``, both on the
                client's kept connection (before 2026-12-05, wait opened a fresh one)
  nonoctl       ``nonoctl launch --allow-cwd --block-net -- /bin/true`` as a subprocess
                (interpreter start, imports, connect, hello, launch with stdio passed, exit),
                from a regular install: a wheel of this tree in a temporary venv
                (bench/_wheel.py; ``--editable`` uses this venv's editable install instead)
  nonoctl-ps    ``nonoctl ps`` (the same install): start-up, connect, one request
  nonoctl-ver   ``nonoctl --version``: the CLI's start-up alone, for reference
  python        ``python -c pass`` of the same venv: the interpreter's floor
  ...@base      with ``--cli-base REV``: the same three from a wheel of that git revision
                (``git archive``), each pair interleaved run by run (the same load for both)
                (``--cli-only``: these rows and ``python`` alone, all interleaved run by
                run, no memory, no engine rows)
  (cpu)         for each of those rows, the CPU time (user + system) of the nonoctl process
                itself: its own cost, which the machine's load stretches less than the wall
                time (the daemon's work is in other processes)
  engine        ``open_launcher()`` in this process: ``launch`` + ``wait_exited`` (bench/launch.py)
  engine-prof   the same with the policy the daemon resolves for ``client`` (the default
                profile: ~30 grants, ~65 denials): what ``client`` pays besides the daemon
  bwrap         ``bwrap --unshare-all ...`` via ``subprocess.run`` (bench/launch.py's argv)

fleet (``--fleet N``, off by default; ``--fleet-only`` skips the steps above)
  N detached ``sleep 600`` sessions with a network namespace and the proxy
  (``--allow-domain example.com``), launched from one client process with K launches in
  flight (``--fleet-inflight K``, default 4: K threads, each with its own kept connection,
  each sending its next launch as soon as its last one is answered): wall time, failures,
  the launch latency's p50 per block of 100 (does it grow with the live sessions?), the CPU
  per session of each kind of process in the daemon's tree during the launches (daemon, fork
  server, launchers that ended, session processes by name; ``tree_cpu``: each live
  process's own time exact, from ``schedstat``, not in whole 10 ms ticks, which cut 6-7 ms
  per session off the inits and 3 off the programs), of the client and of the whole host,
  and the host's split (bench/_hostcpu.py: ``/proc/stat``'s categories, kernel threads by
  name and workqueue, other processes, softirqs by kind; with ``$BENCH_PERF_CONTROL`` a
  ``perf record --control`` records the launches' window alone), PSS of everything,
  ``nonoctl ps`` latency with N sessions (p50 of 21 runs after 2 untimed, wall and the
  nonoctl process's CPU time; timed once the daemon's tree has gone quiet, at most 30 s
  after the last launch, so that it does not time the fleet's own aftermath); then every
  session is stopped and pruned (also on failure or at ``--fleet-timeout``); with
  ``--cli-base``, the base's ``nonoctl ps`` too, alternating run by run.

The daemon's launches use the default profile with ``--allow-cwd --block-net`` (the profile
resolution runs on every launch); the engine and bwrap use bench/_common.py's small policy.

    .venv/bin/python bench/daemon.py [--runs 100] [--warmup 10] [--sessions 100]
                                     [--fleet 1000] [--fleet-inflight 4] [--fleet-only]
                                     [--fleet-timeout 120] [--editable] [--cli-base REV]
                                     [--cli-only]
                                     [--json]
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

import _hostcpu
import trio
from _common import emit, machine, percentile
from _wheel import installed_cli
from launch import Contender, bwrap, make, measure, nonod, summarize, versions

from nonoctl.client import Client, Connection, DaemonUnreachable, RemoteError
from nonod import protocol as p
from nonod._profile_source import ProfilePolicies
from nonod.errors import NonoError
from nonod.policy import ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sessions import Caller

VENV_BIN = Path(sys.executable).parent
OPTIONS = p.LaunchOptions(allow_cwd=True, block_net=True)
FLEET_OPTIONS = p.LaunchOptions(allow_cwd=True, allow_domain=("example.com",))
# Launches the fleet keeps in flight (connections of one client process); see the docstring.
# 4, measured against 2 (fleets of 300 alternating 2/4/4/2, 2026-12-05 19:35 UTC: 7.5 and
# 11.3 s against 5.6 and 7.9 s; docs/benchmarks.md, ``fleet2``): each launch waits on
# hops between the daemon, the fork server and the launchers, which more in flight overlap.
FLEET_INFLIGHT = 4


class BenchFailure(Exception):
    pass


# --- the daemon ----------------------------------------------------------------------------


class Daemon:
    """``python -m nonod`` (foreground) in a short temporary directory."""

    def __init__(self, config: str = "", tree: Path | None = None,
                 trace: Path | None = None, wrapper: str = "_daemon_trace.py") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ndb-", dir="/tmp"))
        self.base.chmod(0o755)
        self.home = Path(f"{self.base}-home")
        self.work = self.base / "work"
        self.socket = self.base / "run" / "nonod.sock"
        (self.home / "run").mkdir(parents=True, mode=0o700)
        self.work.mkdir()
        self.env = {  # the caller's environment: sessions and nonoctl see only this
            "PATH": "/usr/bin:/bin", "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
        }
        self.log = (self.base / "nonod.log").open("wb")
        (self.base / "nonod.toml").write_text(config)
        # this checkout's nonod (or ``tree``'s), even from an export run with another venv
        source = tree or Path(__file__).resolve().parent.parent
        # Compiled first, as an installed package is: a daemon that compiles the modules it
        # imports (a fresh clone, a merge's changed files) kept 3 to 4 MiB more at idle
        # (docs/benchmarks.md, "idle5").
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(source / "nonod")],
                       check=True, stdout=subprocess.DEVNULL)
        daemon_env = {**self.env, "PYTHONPATH": str(source)}
        if trace is not None:
            for name in ("NONO_TRACE_PROFILE", "NONO_TRACE_PROFILE_WINDOW",
                         "NONO_TRACE_PROFILE_CPU", "NONO_TRACE_STEPS"):
                if name in os.environ:
                    daemon_env[name] = os.environ[name]
        # ``trace``: the daemon with its launch steps timed, samples written there at exit
        # (bench/_daemon_trace.py, for bench/daemon_steps.py; ``wrapper`` another such
        # script: bench/_daemon_tasks.py, for bench/daemon_tasks.py)
        entry = (["-m", "nonod"] if trace is None else
                 [str(Path(__file__).resolve().parent / wrapper), str(trace)])
        self.proc = subprocess.Popen(
            [sys.executable, *entry, "--socket", str(self.socket),
             "--config", str(self.base / "nonod.toml")],
            env=daemon_env, cwd="/", stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                Connection.open(self.socket, timeout=5).close()
                break
            except DaemonUnreachable:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise BenchFailure("nonod did not start; see its log") from None
                time.sleep(0.05)

    def client(self) -> Client:
        return Client(self.socket, autostart=False, timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)


@contextmanager
def running_daemon() -> Iterator[Daemon]:
    daemon = Daemon()
    try:
        yield daemon
    finally:
        daemon.close()


# --- memory --------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        cur = todo.pop()
        out.append(cur)
        todo.extend(kids.get(cur, ()))
    return out


def _kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem(pids: list[int]) -> dict[str, float]:
    """VmRSS and PSS summed over ``pids``, in MiB (RSS counts shared pages once per process),
    and PSS of anonymous memory alone (``pss_anon_mib``: heaps and copies, which the daemon's
    tree shares with no other process; the rest, the interpreter's and libraries' files, is
    split with every process on the host that maps them, and moves with the host's load).
    Zombies are left out (the fork server reaps finished launchers at its next request)."""
    pids = [pid for pid in pids if not _zombie(pid)]
    rss = sum(_kib(f"/proc/{pid}/status", "VmRSS") for pid in pids)
    pss = sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids)
    anon = sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss_Anon") for pid in pids)
    return {"processes": len(pids), "rss_mib": rss / 1024, "pss_mib": pss / 1024,
            "pss_anon_mib": anon / 1024}


def _cmdline(pid: int) -> bytes:
    """``pid``'s command line; empty once it has ended (a launcher that just exited)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def snapshot(daemon_pid: int) -> dict[str, dict[str, float]]:
    """The daemon alone; its fork server alone; everything below the fork server (its warm
    launchers, and every session's init and program); all of it together."""
    kids = _children()
    fork_server = [c for c in kids.get(daemon_pid, ()) if b"_forkserver" in _cmdline(c)]
    below = _tree(fork_server[0], kids)[1:] if fork_server else []
    return {
        "daemon": mem([daemon_pid]),
        "fork_server": mem(fork_server[:1]),
        "below": mem(below),
        "total": mem(_tree(daemon_pid, kids)),
    }


def memory(daemon: Daemon, sessions: int) -> dict[str, Any]:
    time.sleep(1.0)
    fresh = snapshot(daemon.proc.pid)  # nothing launched yet: no warm launcher
    with daemon.client() as nono:
        first = nono.launch(["/bin/true"], cwd=str(daemon.work), env=daemon.env,
                            stdio="null", options=OPTIONS)
        nono.wait(first.id)
        enforcement = nono.inspect(first.id).enforcement
        nono.prune()
        launched = time.monotonic()
        time.sleep(1.0)  # the warm launchers are ready
        idle = snapshot(daemon.proc.pid)
        time.sleep(max(0.0, launched + _warm_idle() + 1.5 - time.monotonic()))
        settled = snapshot(daemon.proc.pid)
        ids = [nono.launch(["sleep", "600"], cwd=str(daemon.work), env=daemon.env,
                           stdio="null", options=OPTIONS).id for _ in range(sessions)]
        time.sleep(1.0)
        running = [s for s in nono.sessions() if s.state == "running"]
        if len(running) != sessions:
            raise BenchFailure(f"{len(running)} of {sessions} sessions running")
        loaded = snapshot(daemon.proc.pid)
        for sid in ids:
            nono.stop(sid)
        nono.prune()
    time.sleep(1.0)
    after = snapshot(daemon.proc.pid)
    per = {k: (loaded["total"][k] - idle["total"][k]) / sessions * 1024
           for k in ("rss_mib", "pss_mib")}
    return {"enforcement": enforcement.summary if enforcement else "n/a",
            "sessions": sessions, "fresh": fresh, "idle": idle, "settled": settled,
            "loaded": loaded,
            "after_stop": after,
            "per_session_kib": {"rss": per["rss_mib"], "pss": per["pss_mib"]},
            "session_processes": loaded["below"]["processes"] - idle["below"]["processes"]}


def _warm_idle() -> float:
    """How long the fork server waits before it keeps one warm launcher per kind of launch
    instead of two (0: a tree from before 2026-12-05, which keeps two)."""
    from nonod.sandbox import _forkserver

    return float(getattr(_forkserver, "WARM_IDLE", 0.0))


# --- latency -------------------------------------------------------------------------------


Runner = Callable[[], Any]


def client_conn(daemon: Daemon, conn: Connection) -> Runner:
    request = p.Launch(argv=("/bin/true",), cwd=str(daemon.work), env=daemon.env,
                       options=OPTIONS, detach=False, stdio="null")

    async def run() -> None:
        conn.send(request)
        while True:
            reply = conn.receive()
            if isinstance(reply, p.Exited):
                if reply.exit_code != 0:
                    raise BenchFailure(f"client: /bin/true ended with {reply}")
                return
            if isinstance(reply, p.ErrorReply):
                raise BenchFailure(f"client: {reply.message}")
    return run


def client_api(daemon: Daemon, nono: Client) -> Runner:
    async def run() -> None:
        session = nono.launch(["/bin/true"], cwd=str(daemon.work), env=daemon.env,
                              stdio="null", options=OPTIONS)
        exited = nono.wait(session.id)
        if exited.exit_code != 0:
            raise BenchFailure(f"client-api: /bin/true ended with {exited}")
    return run


def cli(daemon: Daemon, argv: list[str], cpu: list[float] | None = None) -> Runner:
    """Run ``argv`` (``nonoctl ...``); with ``cpu``, append the CPU time (user + system, ms)
    the process itself used: the CLI's own cost, which the machine's load does not stretch
    as much as the wall time (the daemon's work is in other processes)."""
    env = {**daemon.env, "NONO_SOCKET": str(daemon.socket), "NONO_NO_AUTOSTART": "1"}

    async def run() -> None:
        proc = subprocess.Popen(argv, env=env, cwd=daemon.work, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.stderr is not None
        errors = proc.stderr.read()  # a few lines at most: they fit the pipe
        proc.stderr.close()
        if proc.returncode != 0:
            raise BenchFailure(f"{argv[1]}: status {proc.returncode}: "
                               f"{errors.decode(errors='replace').strip()}")
        if cpu is not None:
            cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
    return run


CLI_LAUNCH: Final = ("launch", "--allow-cwd", "--block-net", "--", "/bin/true")
#: The CLI rows: name, what, nonoctl's arguments.
CLI_ROWS: Final = (
    ("nonoctl", "subprocess: nonoctl " + " ".join(CLI_LAUNCH), CLI_LAUNCH),
    ("nonoctl-ps", "subprocess: nonoctl ps", ("ps",)),
    ("nonoctl-ver", "subprocess: nonoctl --version (start-up only)", ("--version",)),
)


#: Per CLI contender, the CPU time of each of its runs (warm-up runs first).
CLI_CPU: dict[str, list[float]] = {}


def cli_rows(daemon: Daemon, bin_dir: Path, base_bin: Path | None) -> list[list[Contender]]:
    """Each CLI row, with its ``@base`` twin when there is a base install."""
    groups = []
    for name, what, words in CLI_ROWS:
        sides = [(name, what, bin_dir)]
        if base_bin is not None:
            sides.append((f"{name}@base", "the same, the base revision's nonoctl", base_bin))
        groups.append([_cli_contender(daemon, label, text, [str(where / "nonoctl"), *words])
                       for label, text, where in sides])
    return groups


def _cli_contender(daemon: Daemon, name: str, what: str, argv: list[str]) -> Contender:
    cpu = CLI_CPU.setdefault(name, [])
    return _adapt(make(name, what, lambda: cli(daemon, argv, cpu)))


async def latency(daemon: Daemon, runs: int, warmup: int, bin_dir: Path,
                  base_bin: Path | None = None, cli_only: bool = False) -> list[Contender]:
    if cli_only:
        # The CLI rows, their @base twins and the interpreter's floor, all interleaved run by
        # run: the same load for every one, so the ratios to ``python`` hold on a busy host
        # (the exited launches are not in ``ps``'s list: it does not grow meanwhile).
        floor = CLI_CPU.setdefault("python", [])
        group = [*(c for row in cli_rows(daemon, bin_dir, base_bin) for c in row), _adapt(make(
            "python", "subprocess: python -c pass (the same venv's floor)",
            lambda: cli(daemon, [str(bin_dir / "python"), "-c", "pass"], floor)))]
        await measure(group, runs, warmup, interleave=True)
        with daemon.client() as nono:
            nono.prune()
        return group
    async with open_launcher() as launcher:
        with daemon.client() as nono, Connection.open(daemon.socket) as conn:
            groups = [
                [_adapt(make("client", "Connection: Launch(detach=False, stdio=null) .. Exited",
                             lambda: client_conn(daemon, conn)))],
                [_adapt(make("client-api", "Client.launch(stdio=null) + Client.wait",
                             lambda: client_api(daemon, nono)))],
                *cli_rows(daemon, bin_dir, base_bin),
                [_adapt(make("python", "subprocess: python -c pass (the same venv's floor)",
                             lambda: cli(daemon, [str(bin_dir / "python"), "-c", "pass"])))],
                [make("engine", "open_launcher(): launch + wait_exited (bench/launch.py)",
                      lambda: nonod(launcher))],
                [make("engine-prof", "the same with the policy the daemon resolves for client",
                      lambda: nonod(launcher, *daemon_policy(daemon)))],
                [make("bwrap", "bubblewrap --unshare-all ... via subprocess.run", bwrap)],
            ]
            for group in groups:
                # a CLI row and its @base twin alternate run by run: the same load for both
                await measure(group, runs, warmup, interleave=len(group) > 1)
                if group[0].name.startswith(("client", "nonoctl")):
                    nono.prune()  # the exited sessions' records, outside the timing
                gc.collect()
    return [c for group in groups for c in group]


def daemon_policy(daemon: Daemon) -> tuple[ResolvedPolicy, LaunchRequest]:
    """What the daemon gives the engine for the ``client`` contender's launch: the default
    profile with --allow-cwd --block-net, resolved as the daemon does, in its working
    directory and environment. The engine with it is the fair floor for ``client``."""
    launch = p.Launch(argv=("/bin/true",), cwd=str(daemon.work), env=daemon.env,
                      options=OPTIONS, detach=False, stdio="null")
    policies = ProfilePolicies(system=False, profile_dir=lambda: None)
    policy, _ = policies._resolve_launch(launch, Caller(uid=os.getuid(), gid=os.getgid(),
                                                        pid=os.getpid()), None)
    return policy, LaunchRequest(argv=launch.argv, cwd=launch.cwd,
                                 env=tuple(launch.env.items()))


def _adapt(c: Contender) -> Contender:
    """bench/launch.py's ``measure`` only catches its own BenchFailure: translate ours."""
    import launch

    inner = c.run

    async def run() -> None:
        try:
            await inner()
        except (BenchFailure, DaemonUnreachable) as exc:
            raise launch.BenchFailure(str(exc)) from None
    c.run = run
    return c


# --- driver --------------------------------------------------------------------------------


def _launch_fleet(daemon: Daemon, count: int, inflight: int, deadline: float
                  ) -> tuple[list[str], list[str], list[float]]:
    """``count`` detached sessions, ``inflight`` launches at a time: one thread and one kept
    connection (``Client``) each, taking the next launch as soon as its last one is answered.
    Returns the session ids, the failures and each launch's latency (ms) in launch order."""
    ids: list[str] = []
    failures: list[str] = []
    latencies: list[tuple[int, float]] = []
    lock = threading.Lock()
    issued = [0]

    def worker() -> None:
        with daemon.client() as nono:
            while True:
                with lock:
                    if issued[0] >= count or time.monotonic() > deadline or len(failures) > 10:
                        return
                    issued[0] += 1
                    index = issued[0]
                began = time.perf_counter()
                try:
                    sid = nono.launch(["sleep", "600"], cwd=str(daemon.work), env=daemon.env,
                                      stdio="null", options=FLEET_OPTIONS).id
                except RemoteError as exc:
                    with lock:
                        failures.append(f"{exc.remote_code}: {exc}")
                    continue
                except NonoError as exc:  # the connection lost: counted, not a dead thread
                    with lock:
                        failures.append(f"{exc.code}: {exc}")
                    return
                with lock:
                    ids.append(sid)
                    latencies.append((index, (time.perf_counter() - began) * 1000))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids, failures, [ms for _, ms in sorted(latencies)]


def dropped_connections(daemon: Daemon) -> list[str]:
    """Why the daemon dropped client connections (``control connection failed`` in its log:
    an exception other than a request's error): the last line of each traceback."""
    daemon.log.flush()
    lines = (daemon.base / "nonod.log").read_text(errors="replace").splitlines()
    out: list[str] = []
    for at, line in enumerate(lines):
        if "control connection failed" not in line:
            continue
        tail = [x for x in lines[at + 1:at + 200] if x and not x.startswith((" ", "Traceback"))]
        out.append(tail[0] if tail else line)
    return out


def stop_all(daemon: Daemon, ids: list[str]) -> None:
    """Stop the sessions ``ids`` (forced, 5 s each) and prune their records; one that ended
    by itself meanwhile is passed over."""
    with daemon.client() as nono:
        for sid in ids:
            try:
                nono.stop(sid, timeout=5, force=True)
            except RemoteError:
                pass
        nono.prune()


def failure_kinds(failures: list[str]) -> dict[str, int]:
    """How many failures of each kind: the error's dotted code and step (``launch.fork:
    ...``), its text's first words otherwise."""
    kinds: dict[str, int] = {}
    for why in failures:
        match = re.match(r"(stop \S+: )?([a-z_]+\.[a-z_.]+)", why)
        kind = match.group(2) if match else " ".join(why.split()[:6])
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def _stat_cpu_ms(pid: int) -> tuple[str, float, float]:
    """(comm, own user + system, reaped children's user + system) of ``pid``, in ms."""
    comm, _, own, reaped = _hostcpu.process_cpu(pid)
    return comm, own, reaped


def tree_cpu(daemon_pid: int) -> dict[str, float]:
    """CPU time (ms, user + system, all threads) used so far by the daemon's process tree, by
    kind: the daemon itself, its fork server, and below it by command name (launchers and
    sessions, with what each has reaped), plus ``reaped`` (what the daemon and the fork
    server reaped: finished launchers). Only live processes count: read it before the
    sessions are stopped."""
    kids = _children()
    out: dict[str, float] = {}
    for pid in _tree(daemon_pid, kids):
        try:
            comm, own, reaped = _stat_cpu_ms(pid)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        kind = ("daemon" if pid == daemon_pid else
                "fork server" if b"_forkserver" in cmdline else comm)
        out[kind] = out.get(kind, 0.0) + own
        if kind in ("daemon", "fork server"):
            out["reaped"] = out.get("reaped", 0.0) + reaped
        else:
            out[kind] += reaped
    return out


def init_kinds(daemon_pid: int) -> dict[str, int]:
    """How the live sessions' inits were made, read from their command lines: ``warm C``
    (``nono-reaper --init``: a warm launcher's C init, ``_cinit``), ``warm Python`` (a warm
    direct init that exec'd the reaper, no outer launcher: its hand-over argument -1) and
    ``cold or outer`` (the reaper exec'd with an outer launcher's hand-over socket: a launch
    that found no warm launcher ready, or a warm launcher with an outer process)."""
    kids = _children()
    servers = [pid for pid in kids.get(daemon_pid, ())
               if b"_forkserver" in _cmdline(pid)]
    out = {"warm C": 0, "warm Python": 0, "cold or outer": 0}
    for server in servers:
        for pid in kids.get(server, ()):
            argv = _cmdline(pid).split(b"\0")
            if not argv[0].endswith(b"nono-reaper"):
                continue
            if argv[1:2] in ([b"--init"], [b"--spawner"]):
                out["warm C"] += 1
            elif len(argv) > 6 and argv[6].isdigit():
                out["cold or outer"] += 1
            elif len(argv) > 6:
                out["warm Python"] += 1
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _busy_ms() -> float:
    """The host's CPU time spent not idle (all CPUs, every process and the kernel), ms."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) * 1000 / os.sysconf("SC_CLK_TCK")


def fleet(daemon: Daemon, count: int, timeout: float, bin_dir: Path,
          inflight: int = 1, base_bin: Path | None = None) -> dict[str, Any]:
    """``count`` sessions with netns + proxy from one client process (``inflight`` launches
    at a time), then all stopped and pruned."""
    ids: list[str] = []
    failures: list[str] = []
    latencies: list[float] = []
    with daemon.client() as nono:
        try:
            _hostcpu.perf_control("enable")
            host0 = _hostcpu.snapshot()
            cpu0, busy0, client0 = tree_cpu(daemon.proc.pid), _busy_ms(), time.process_time()
            t0 = time.perf_counter()
            ids, failures, latencies = _launch_fleet(daemon, count, inflight,
                                                     time.monotonic() + timeout)
            wall = time.perf_counter() - t0
            cpu1, busy1, client1 = tree_cpu(daemon.proc.pid), _busy_ms(), time.process_time()
            _hostcpu.perf_control("disable")
            host = _hostcpu.split(host0, _hostcpu.snapshot(),
                                  {os.getpid(), *_tree(daemon.proc.pid, _children())})
            cpu = {k: (v - cpu0.get(k, 0.0)) / max(1, len(ids)) for k, v in cpu1.items()}
            cpu["client"] = (client1 - client0) * 1000 / max(1, len(ids))
            cpu["host (all)"] = (busy1 - busy0) / max(1, len(ids))
            time.sleep(1.0)
            running = sum(1 for s in nono.sessions() if s.state == "running")
            inits = init_kinds(daemon.proc.pid)
            loaded = snapshot(daemon.proc.pid)
            settled_s = _settle(daemon.proc.pid)
            ps = _ps_times(daemon, bin_dir, base_bin)
        finally:
            t1 = time.perf_counter()
            for sid in ids:
                try:
                    nono.stop(sid, timeout=5, force=True)
                except RemoteError as exc:
                    failures.append(f"stop {sid}: {exc.remote_code}: {exc}")
            nono.prune()
            stop_s = time.perf_counter() - t1
    dropped = dropped_connections(daemon) if any("connection_lost" in why
                                                 for why in failures) else []
    blocks = [latencies[i:i + 100] for i in range(0, len(latencies), 100)]
    return {"requested": count, "inflight": inflight, "launched": len(ids), "running": running,
            "failed": len(failures) + (len(ids) - running), "failures": failures[:5],
            "failure_kinds": failure_kinds(failures), "dropped": dropped[:5],
            "launch_s": wall, "stop_s": stop_s, "total": loaded["total"],
            "p50_per_100_ms": [percentile(b, 0.5) for b in blocks], "ps_settle_s": settled_s,
            "cpu_ms_per_session": cpu, "host_cpu": host, "init_kinds": inits, **ps}


#: ``nonoctl ps`` with the fleet live: untimed runs, then timed runs (of each install).
PS_WARMUP: Final = 2
PS_RUNS: Final = 21


def _settle(daemon_pid: int, quiet: float = 0.05, window: float = 0.5,
            limit: float = 30.0) -> float:
    """Wait (at most ``limit`` s) until the daemon and everything below it used under
    ``quiet`` of a CPU over ``window`` s: the fleet's last launches answered is not the end
    of their work (the fork server reaps, the launchers settle), and a ``ps`` timed in the
    middle of it measures that work. Returns the seconds waited."""
    def cpu() -> float:
        ticks = 0
        for pid in _tree(daemon_pid, _children()):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    began = time.monotonic()
    before = cpu()
    while time.monotonic() - began < limit:
        time.sleep(window)
        now = cpu()
        if now - before < quiet * window:
            break
        before = now
    return time.monotonic() - began


def _ps_times(daemon: Daemon, bin_dir: Path, base_bin: Path | None) -> dict[str, float | None]:
    """``nonoctl ps`` with the fleet live: p50 of the wall time and of the nonoctl
    process's CPU time, this install's and (``base_bin``) the base's alternately."""
    sides = [("", bin_dir)] + ([("base_", base_bin)] if base_bin is not None else [])
    wall: dict[str, list[float]] = {key: [] for key, _ in sides}
    cpu: dict[str, list[float]] = {key: [] for key, _ in sides}
    runs = {key: cli(daemon, [str(where / "nonoctl"), "ps"], cpu[key]) for key, where in sides}
    for _ in range(PS_WARMUP + PS_RUNS):
        for key, run in runs.items():
            t = time.perf_counter()
            trio.run(run)
            wall[key].append((time.perf_counter() - t) * 1000)
    out: dict[str, float | None] = {"base_ps_p50_ms": None, "base_ps_cpu_p50_ms": None}
    for key, _ in sides:
        out[f"{key}ps_p50_ms"] = percentile(wall[key][PS_WARMUP:], 0.5)
        out[f"{key}ps_cpu_p50_ms"] = percentile(cpu[key][PS_WARMUP:], 0.5)
    return out


def _raise_nofile() -> None:
    """The daemon inherits this: 1000 sessions hold several descriptors each."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    _raise_nofile()
    with ExitStack() as stack:
        bin_dir = VENV_BIN if args.editable else stack.enter_context(installed_cli())
        base_bin = None
        if args.cli_base:
            from daemon_ab import exported  # (it imports this module)

            base_bin = stack.enter_context(installed_cli(stack.enter_context(
                exported(args.cli_base))))
        return _bench(args, bin_dir, base_bin)


def _bench(args: argparse.Namespace, bin_dir: Path, base_bin: Path | None) -> dict[str, Any]:
    fleet_data: dict[str, Any] | None = None
    with running_daemon() as daemon:
        memory_data = (None if args.fleet_only or args.cli_only
                       else memory(daemon, args.sessions))
        contenders = [] if args.fleet_only else trio.run(latency, daemon, args.runs,
                                                          args.warmup, bin_dir, base_bin,
                                                          args.cli_only)
        with daemon.client() as nono:
            status = nono.status()
            nono.prune()
        if contenders and not args.cli_only:  # settled after the launches, as at idle
            time.sleep(_warm_idle() + 1.5)
        worked = snapshot(daemon.proc.pid)
        after_fleet = None
        if args.fleet:
            fleet_data = fleet(daemon, args.fleet, args.fleet_timeout, bin_dir,
                               args.fleet_inflight, base_bin)
            time.sleep(_warm_idle() + 1.5)
            after_fleet = snapshot(daemon.proc.pid)
    results, skipped = [], []
    for c in contenders:
        if c.error:
            skipped.append({"name": c.name, "reason": c.error})
            continue
        results.append({"name": c.name, "what": c.what, "n": len(c.samples),
                        **summarize(c.samples), "samples_ms": [round(s, 4) for s in c.samples]})
        cpu = CLI_CPU.get(c.name, [])[args.warmup:]
        if cpu:
            results[-1]["cpu_p50"] = summarize(cpu)["p50"]
    engine = next((r["p50"] for r in results if r["name"] == "engine-prof"), None)
    for r in results:
        r["p50_vs_engine"] = r["p50"] / engine if engine else None
    return {
        "machine": {**machine(), **versions()},
        "daemon_version": getattr(status, "version", "?"),
        "runs": args.runs, "warmup": args.warmup,
        "results": results, "skipped": skipped,
        "memory": memory_data, "after_latency": worked, "after_fleet": after_fleet,
        "fleet": fleet_data,
        "cli_install": "editable (this venv)" if args.editable else "wheel in a temporary venv",
        "cli_base": args.cli_base,
    }


def _row(name: str, m: dict[str, float]) -> str:
    return f"{name:<28} {m['processes']:>5} {m['rss_mib']:>9.1f} {m['pss_mib']:>9.1f}"


def print_table(data: dict[str, Any]) -> None:
    m = data["machine"]
    print(f"# nonod launch latency and memory -- {m['date']}")
    print(f"# kernel {m['kernel']}, nproc {m['nproc']} (usable {m['nproc_usable']}), "
          f"{m['cpu']}, Python {m['python']}, uid {m['uid']}, load {m['loadavg_1m']:.2f}")
    print(f"# engine {m['engine']}, landlock ABI {m['landlock_abi']}, {m['bwrap']}")
    print(f"# nonoctl: {data['cli_install']}"
          + (f"; @base: a wheel of {data['cli_base']}" if data.get("cli_base") else ""))
    if data["memory"] is None and not data["results"]:  # --fleet-only
        _print_fleet(data["fleet"])
        return
    if data["memory"] is not None:
        print(f"# the daemon's sessions: {data['memory']['enforcement']}")
    print(f"# /bin/true to exit, {data['runs']} runs per contender after {data['warmup']} "
          "warm-up runs, back to back")
    print()
    print(f"{'contender':<16} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'min ms':>8} "
          f"{'max ms':>8} {'p50/engine-prof':>16}")
    for r in data["results"]:
        ratio = f"{r['p50_vs_engine']:.2f}x" if r["p50_vs_engine"] else "-"
        print(f"{r['name']:<16} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['mean']:>8.2f} "
              f"{r['min']:>8.2f} {r['max']:>8.2f} {ratio:>16}")
    for s in data["skipped"]:
        print(f"{s['name']:<16} SKIPPED: {s['reason']}")
    p50 = {r["name"]: r["p50"] for r in data["results"]}
    cpu = {r["name"]: r["cpu_p50"] for r in data["results"] if "cpu_p50" in r}
    print()
    print(f"{'CLI process':<16} {'cpu p50':>8}  (user + system time of the nonoctl process)")
    for name, ms in cpu.items():
        print(f"{name:<16} {ms:>8.2f}")
    for name, _, _ in CLI_ROWS:
        if f"{name}@base" in p50 and name in p50:
            print(f"{name:<16} {p50[name] / p50[name + '@base']:>8.2f}x the @base p50, "
                  f"{cpu[name] / cpu[name + '@base']:.2f}x its CPU time")
    for name in [n for n, _, _ in CLI_ROWS] + [f"{n}@base" for n, _, _ in CLI_ROWS]:
        if name in p50 and p50.get("python"):
            print(f"{name:<16} {p50[name] / p50['python']:>8.2f}x python -c pass's p50"
                  + (f", {cpu[name] / cpu['python']:.2f}x its CPU time"
                     if name in cpu and cpu.get("python") else ""))
    print()
    for r in data["results"]:
        print(f"  {r['name']:<16} {r['what']}")
    mm = data["memory"]
    if mm is None:  # --cli-only
        return
    n = mm["sessions"]
    print()
    print(f"{'memory':<28} {'procs':>5} {'RSS MiB':>9} {'PSS MiB':>9}")
    print(_row("fresh (no launch yet): total", mm["fresh"]["total"]))
    for label, key in (("idle", "idle"), ("settled", "settled"),
                       (f"{n} sleeps", "loaded")):
        if key not in mm:
            continue
        print(_row(f"{label}: daemon", mm[key]["daemon"]))
        print(_row(f"{label}: fork server", mm[key]["fork_server"]))
        below = "warm + sessions" if key == "loaded" else "warm launchers"
        print(_row(f"{label}: {below}", mm[key]["below"]))
        print(_row(f"{label}: total", mm[key]["total"]))
    print(_row("stopped + pruned: total", mm["after_stop"]["total"]))
    for part, name in (("daemon", "daemon"), ("fork_server", "fork server"),
                       ("below", "warm launchers"), ("total", "total")):
        print(_row(f"worked: {name}", data["after_latency"][part]))
    if data.get("after_fleet"):
        print(_row("after the fleet: total", data["after_fleet"]["total"]))
    per = mm["per_session_kib"]
    print(f"per session (total - idle) / {n}: RSS {per['rss']:.0f} KiB, PSS {per['pss']:.0f} KiB,"
          f" {mm['session_processes'] / n:.0f} processes (the program included)")
    _print_fleet(data["fleet"])


def _print_fleet(fl: dict[str, Any] | None) -> None:
    if not fl:
        return
    print()
    print(f"fleet: {fl['launched']} of {fl['requested']} sessions (netns + proxy) launched in "
          f"{fl['launch_s']:.1f} s, {fl['inflight']} in flight, {fl['running']} running, "
          f"{fl['failed']} failed; PSS {fl['total']['pss_mib']:.0f} MiB "
          f"({fl['total']['processes']} processes); nonoctl ps p50 {fl['ps_p50_ms']:.1f} ms"
          + (f", CPU {fl['ps_cpu_p50_ms']:.1f} ms" if fl.get("ps_cpu_p50_ms") else "")
          + (f" (@base {fl['base_ps_p50_ms']:.1f} ms, CPU {fl['base_ps_cpu_p50_ms']:.1f} ms)"
             if fl.get("base_ps_p50_ms") else "")
          + (f" {fl['ps_settle_s']:.1f} s after the launches settled" if "ps_settle_s" in fl
             else "")
          + f"; stopped + pruned in {fl['stop_s']:.1f} s")
    if fl.get("init_kinds"):
        print("  the live sessions' inits: " + ", ".join(
            f"{kind} {n}" for kind, n in fl["init_kinds"].items()))
    print("  launch p50 per 100 sessions, ms: "
          + " ".join(f"{ms:.1f}" for ms in fl["p50_per_100_ms"]))
    if fl.get("cpu_ms_per_session"):
        parts = sorted(fl["cpu_ms_per_session"].items(), key=lambda kv: -kv[1])
        print("  CPU ms per session (user + system, during the launches): "
              + ", ".join(f"{k} {v:.2f}" for k, v in parts if v >= 0.005))
    if fl.get("host_cpu"):
        for line in _hostcpu.describe(fl["host_cpu"], fl["launched"]):
            print("  " + line)
    for why in fl["failures"]:
        print(f"  failure: {why}")
    for kind, n in fl.get("failure_kinds", {}).items():
        print(f"  failures by code: {n} x {kind}")
    for why in fl.get("dropped", ()):
        print(f"  the daemon dropped a connection on: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100, help="timed runs per contender")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs per contender first")
    parser.add_argument("--sessions", type=int, default=100, help="idle sessions for memory")
    parser.add_argument("--fleet", type=int, default=0, metavar="N",
                        help="also launch N sessions with netns + proxy from one client")
    parser.add_argument("--fleet-timeout", type=float, default=120.0, metavar="S",
                        help="stop launching the fleet after this many seconds")
    parser.add_argument("--fleet-inflight", type=int, default=FLEET_INFLIGHT, metavar="K",
                        help="launches in flight in the fleet (K connections of one client "
                        f"process; default {FLEET_INFLIGHT})")
    parser.add_argument("--fleet-only", action="store_true",
                        help="only the fleet (no memory or latency steps)")
    parser.add_argument("--cli-only", action="store_true",
                        help="only the nonoctl rows (and their @base twins) and python -c pass")
    parser.add_argument("--editable", action="store_true",
                        help="time this venv's (editable) nonoctl instead of a wheel install")
    parser.add_argument("--cli-base", metavar="REV",
                        help="also time the nonoctl of this git revision (a wheel of it), "
                        "interleaved with this tree's")
    parser.add_argument("--json", action="store_true", help="print JSON (with every sample)")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.sessions < 1 or args.fleet < 0 \
            or args.fleet_inflight < 1 or (args.fleet_only and not args.fleet) \
            or (args.cli_only and (args.fleet_only or args.fleet)):
        parser.error("--runs must be >= 1, --warmup >= 0, --sessions >= 1, "
                     "--fleet-inflight >= 1; --fleet-only needs --fleet; --cli-only takes no "
                     "fleet")
    emit(bench(args), as_json=args.json, table=print_table)


if __name__ == "__main__":
    main()
