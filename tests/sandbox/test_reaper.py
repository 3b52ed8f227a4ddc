"""The session's init after the launch is ``nono-reaper`` (``nonod/sandbox/_reaper``): each
test launches a real session, checks from the host that its init is the reaper, then what the
reaper must do: forward signals, report how the program ended, answer connections into the
namespace, and end what the program left behind. (Its creation-guard half is tested by
tests/sandbox/test_createguard.py, whose sessions it serves, and its view-guard half, the
outer launcher, by tests/sandbox/test_viewguard.py.)"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Denial, Grant, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest, _reaper, open_launcher
from nonod.sandbox._api import GuardReport, Sandboxed
from nonod.sandbox._forkserver import WARM_IDLE

pytestmark = [pytest.mark.userns, pytest.mark.root]

PY = sys.executable if sys.executable.startswith("/usr") else "/usr/bin/python3"
MODES = ("namespaces", "landlock-only")


def _policy(work: Path, network: NetworkPolicy | None = None) -> ResolvedPolicy:
    return ResolvedPolicy(
        name="reaper",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(work), access=Access.READ)),
        denials=(),
        allow_degraded=("host_proc", "host_metadata"),  # landlock-only: /proc/keys; uid 0
        **({"network": network} if network is not None else {}),  # type: ignore[arg-type]
    )


async def _named(pid: int, name: str) -> None:
    """Wait (bounded) until ``pid`` calls itself ``name``: the init and the outer launcher
    become the reaper once the session has run a while, and it names itself first thing."""
    with trio.fail_after(10):
        while Path(f"/proc/{pid}/comm").read_text().strip() != name:
            await trio.sleep(0.005)


@asynccontextmanager
async def _session(world_tmp: Path, code: str, mode: str = "namespaces",
                   policy: ResolvedPolicy | None = None, warm_idle: float = WARM_IDLE
                   ) -> AsyncIterator[tuple[Sandboxed, trio.lowlevel.FdStream, int]]:
    """``code`` in a session whose init has become the reaper: the session, the program's
    stdout, and the write end of its stdin (closed on exit if still open)."""
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    async with open_launcher(mode, warm_idle=warm_idle) as launcher:  # type: ignore[arg-type]
        proc = await launcher.launch(policy or _policy(world_tmp), LaunchRequest(
            argv=(PY, "-S", "-c", code), cwd=str(world_tmp)), stdio=(in_r, out_w, 2))
        os.close(out_w)
        os.close(in_r)
        try:
            async with trio.lowlevel.FdStream(out_r) as out:
                await _named(proc.pid, "nono-reaper")
                yield proc, out, in_w
        finally:
            with contextlib.suppress(OSError):
                os.close(in_w)


async def _line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(100)
            assert chunk, data
            data += chunk
    return data


async def _exited(proc: Sandboxed) -> tuple[int | None, int | None]:
    with trio.fail_after(10):
        status = await proc.wait_exited()
    return status.code, status.signal


WAITS_FOR_TERM = (
    "import signal, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.parametrize("mode", MODES)
async def test_signal_forwarded_and_exit_code_reported(world_tmp: Path, mode: str) -> None:
    async with _session(world_tmp, WAITS_FOR_TERM, mode) as (proc, out, _):
        assert await _line(out) == b"ready\n"
        os.kill(proc.pid, signal.SIGTERM)  # to the init, which forwards it
        assert await _exited(proc) == (3, None)


@pytest.mark.parametrize("mode", MODES)
async def test_death_by_signal_reported(world_tmp: Path, mode: str) -> None:
    code = "import os, sys; sys.stdin.read(); os.kill(os.getpid(), 9)"
    async with _session(world_tmp, code, mode) as (proc, _, stdin):
        os.close(stdin)
        assert await _exited(proc) == (None, signal.SIGKILL)


LEAVES_A_DAEMON = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        print(os.getpid(), flush=True)\n"
    "        time.sleep(300)\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "sys.stdin.read()\n"
)


@pytest.mark.parametrize("mode", MODES)
async def test_what_the_program_leaves_ends_with_it(world_tmp: Path, mode: str) -> None:
    """The daemonized grandchild is reparented to the reaper (pid 1, or the child subreaper
    without namespaces), and ended with the session before the exit is reported."""
    async with _session(world_tmp, LEAVES_A_DAEMON, mode) as (proc, out, stdin):
        inner = int(await _line(out))
        os.close(stdin)
        assert await _exited(proc) == (0, None)
        # At once, as the exit is reported (not after the launcher's close, which gave the
        # init the time to exit: the assertion raced with it on a loaded host).
        if mode == "landlock-only":  # the same pid namespace: the pid is the host's
            assert not os.path.exists(f"/proc/{inner}"), \
                "a daemonized process outlived the session"
        else:
            # Nothing in the session's pid namespace is left: its init (the reaper) has
            # exited. It may still be a zombie until its parent reaps it, but the kernel ends
            # every other process of the namespace before pid 1 becomes one. (The init reports
            # the exit before it exits: wait_exited waits for that exit, its pidfd.)
            assert _state(proc.pid) in (None, "Z"), "the exit was reported before the init's"


def _state(pid: int) -> str | None:
    """The process's state letter, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while it is read
        return None


LISTENS = (
    "import socket\n"
    "srv = socket.socket(); srv.bind(('127.0.0.1', 5001)); srv.listen(5)\n"
    "print('ready', flush=True)\n"
    "conn, _ = srv.accept(); conn.sendall(b'pong:' + conn.recv(100)); conn.close()\n"
)


async def test_connections_into_the_namespace(world_tmp: Path) -> None:
    """``--listen-port``: the reaper opens the connection inside the session's network
    namespace and hands it to the daemon; a port nobody listens on is refused."""
    policy = _policy(world_tmp, NetworkPolicy(restricted=True, block=True))
    async with _session(world_tmp, LISTENS, policy=policy) as (proc, out, _):
        assert await _line(out) == b"ready\n"
        with trio.fail_after(10):
            with pytest.raises(ConnectionRefusedError):
                await proc.connect_inside(5002)
            inbound = await proc.connect_inside(5001)
            await inbound.send_all(b"ping")
            assert await inbound.receive_some(100) == b"pong:ping"
            await inbound.aclose()
        assert await _exited(proc) == (0, None)


def _masked(work: Path) -> ResolvedPolicy:
    """A policy with something for the view guard: a denied directory (masked)."""
    (work / "secret").mkdir(exist_ok=True)
    return ResolvedPolicy(
        name="reaper",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(work), access=Access.READ)),
        denials=(Denial(path=str(work / "secret")),),
        allow_degraded=("host_proc", "host_metadata"))  # landlock-only: /proc/keys; uid 0


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _is_fork_server(pid: int) -> bool:
    """The fork server, not one of its launchers (forked from it: the same command line)."""
    def server_like(p: int) -> bool:  # its code, not a file name (pytest's argv has some)
        try:
            return b"_forkserver import main" in Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:  # the outer launcher left between the two reads: not yet
            return False

    try:
        return server_like(pid) and not server_like(_ppid(pid))
    except OSError:  # (its parent left meanwhile)
        return False


async def _outer_left(init: int) -> None:
    """Wait (bounded) until the session's outer launcher has left: the init's parent is the
    fork server (``_launcher.hands_over``)."""
    with trio.fail_after(10):
        while not _is_fork_server(_ppid(init)):
            await trio.sleep(0.005)


def _session_processes(init: int) -> set[int]:
    """Every live process in the init's user namespace, seen from the host: the session's
    (the outer launcher, while there, is one of them; once it has exited it may stay a
    zombie for an instant, until the fork server reaps it, which runs nothing)."""
    userns = os.stat(f"/proc/{init}/ns/user").st_ino
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if (os.stat(f"/proc/{entry}/ns/user").st_ino == userns
                        and _state(int(entry)) not in (None, "Z")):
                    out.add(int(entry))
    return out


@pytest.mark.parametrize("guarded", [True, False], ids=["masked", "nothing-to-guard"])
async def test_an_idle_session_is_one_process_besides_its_program(world_tmp: Path,
                                                                  guarded: bool) -> None:
    """In a pid namespace, once the init runs ``nono-reaper`` the outer launcher leaves (the
    fork server's hub guards the view from then on): counted from the host, the session is
    its program and one more process, the reaper, which is not an interpreter."""
    policy = _masked(world_tmp) if guarded else _policy(world_tmp)
    async with _session(world_tmp, "import sys; sys.stdin.read()", "namespaces", policy) as (
            proc, _, stdin):
        await _outer_left(proc.pid)
        with trio.move_on_after(10):  # the outer's exit may still be under way: bounded
            while len(processes := _session_processes(proc.pid)) != 2:
                await trio.sleep(0.005)
        programs = {pid for pid in processes if _ppid(pid) == proc.pid}
        exe = os.readlink(f"/proc/{proc.pid}/exe")
        os.close(stdin)
        assert await _exited(proc) == (0, None)
    assert len(programs) == 1 and processes == {proc.pid, *programs}, processes
    assert exe.startswith("/memfd:nono-reaper"), exe


HARMS_ITS_INIT = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def refused(f):\n"
    "    try:\n"
    "        r = f()\n"
    "    except OSError as e:\n"
    "        return e.errno\n"
    "    return ctypes.get_errno() if r == -1 else 0\n"
    "buf = ctypes.create_string_buffer(8)\n"
    "iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)\n"
    "errnos = [\n"
    "    refused(lambda: libc.ptrace(16, 1, 0, 0)),\n"  # PTRACE_ATTACH
    "    refused(lambda: libc.ptrace(0x4206, 1, 0, 0)),\n"  # PTRACE_SEIZE
    "    refused(lambda: libc.process_vm_readv(1, iov, 1, iov, 1, 0)),\n"
    "    refused(lambda: open('/proc/1/mem', 'rb').read(1)),\n"
    "    refused(lambda: os.readlink('/proc/1/fd/4')),\n"  # the exit pipe...
    "    refused(lambda: os.open('/proc/1/fd/4', os.O_WRONLY)),\n"  # ...to forge a status
    "    refused(lambda: os.readlink('/proc/1/exe')),\n"
    "]\n"
    "for sig in (signal.SIGKILL, signal.SIGSTOP):\n"
    "    os.kill(1, sig)\n"  # pid 1 of the namespace: dropped by the kernel
    "print(*errnos, flush=True)\n"
    "sys.stdin.read()\n"
)


async def test_the_program_cannot_touch_the_process_left_beside_it(world_tmp: Path) -> None:
    """The one process beside the program, its init, is as confined as the program and not
    dumpable: the program cannot trace it, read its memory or descriptors, or kill or stop
    it (pid 1 of the namespace); the session then still ends and reports as it should.
    (Listing ``/proc/1/fd`` shows the numbers only: the directory is the uid's.)"""
    async with _session(world_tmp, HARMS_ITS_INIT, "namespaces", _masked(world_tmp)) as (
            proc, out, stdin):
        await _outer_left(proc.pid)
        errnos = [int(n) for n in (await _line(out)).split()]
        assert _state(proc.pid) in ("S", "R"), _state(proc.pid)  # neither stopped nor gone
        os.close(stdin)
        assert await _exited(proc) == (0, None)
    assert all(errnos), errnos  # each refused, with an errno


async def test_the_session_ends_with_the_fork_server_once_the_outer_has_left(
        world_tmp: Path) -> None:
    """The outer launcher no longer ties the init to the fork server's life: its lifeline,
    the hub socket whose other end only the fork server holds, does. The fork server killed,
    the program goes with it."""
    out_r, out_w = os.pipe()
    async with open_launcher("namespaces") as launcher:
        proc = await launcher.launch(_masked(world_tmp), LaunchRequest(
            argv=(PY, "-S", "-c", "import os, time; print(os.getpid(), flush=True); "
                  "time.sleep(300)"), cwd=str(world_tmp)), stdio=(0, out_w, 2))
        os.close(out_w)
        async with trio.lowlevel.FdStream(out_r) as out:
            await _line(out)
            await _named(proc.pid, "nono-reaper")
            await _outer_left(proc.pid)
            program = next(p for p in _session_processes(proc.pid) if p != proc.pid)
            os.kill(launcher._proc.pid, signal.SIGKILL)
            assert await _exited(proc) == (None, signal.SIGKILL)
            # The exit pipe closes as the init exits, before the kernel has ended the rest of
            # its namespace: give that its (bounded) moment.
            with trio.fail_after(10):
                while _state(program) not in (None, "Z"):
                    await trio.sleep(0.005)
    assert _state(proc.pid) in (None, "Z")


async def test_the_outer_launcher_is_not_an_interpreter_without_namespaces(
        world_tmp: Path) -> None:
    """Without a pid namespace (landlock-only) the outer launcher stays (it ends what the
    program leaves when the init is gone), as ``nono-reaper --outer``, which only waits:
    there is nothing to guard without mounts."""
    code = "import sys; sys.stdin.read()"
    async with _session(world_tmp, code, "landlock-only", _masked(world_tmp)) as (
            proc, _, stdin):
        outer = _ppid(proc.pid)
        await _named(outer, "nono-outer")
        argv = Path(f"/proc/{outer}/cmdline").read_bytes().split(b"\0")
        os.close(stdin)
        assert await _exited(proc) == (0, None)
    assert argv[1:3] == [b"--outer", str(proc.pid).encode()]
    assert int(argv[3]) < 0  # no hub: nothing to guard


def test_load_refuses_what_is_not_a_program(tmp_path: Path) -> None:
    """No binary (a wheel installed without ``make``), or not an ELF file: -1, and the init
    stays the Python loop."""
    assert _reaper.load(tmp_path / "missing") == -1
    (tmp_path / "text").write_text("#!/bin/sh\n")
    assert _reaper.load(tmp_path / "text") == -1


def test_loaded_reaper_is_sealed_and_execute_only() -> None:
    fd = _reaper.load()
    assert fd >= 0, "make did not build nonod/sandbox/nono-reaper"
    try:
        assert os.fstat(fd).st_mode & 0o777 == 0o111
        with pytest.raises(PermissionError):
            os.write(fd, b"x")  # F_SEAL_WRITE
    finally:
        os.close(fd)


async def test_a_lost_guard_is_reported_whole_however_long_its_path(world_tmp: Path) -> None:
    """A repair (``nono-reaper --repair``) reports a pin it cannot cover again with its whole
    path and reason, then ends the session; a path over 1 KiB once made the record read past
    its buffer."""
    deep = world_tmp
    for c in "abcde":
        deep /= c * 200
    deep.mkdir(parents=True)
    rules = deep / "RULES.md"
    rules.write_text("# verified\n")
    (deep / "other.md").write_text("# injected\n")
    reports: list[GuardReport] = []
    in_r, in_w = os.pipe()
    try:
        async with open_launcher("namespaces") as launcher:
            proc = await launcher.launch(_policy(world_tmp), LaunchRequest(
                argv=(PY, "-S", "-c", "import sys; sys.stdin.read()"), cwd=str(world_tmp),
                pins=((str(rules), b"# verified\n"),)), stdio=(in_r, 1, 2))
            proc.on_guard = reports.append
            await _named(proc.pid, "nono-reaper")
            await _outer_left(proc.pid)  # the fork server's repairs guard it now
            os.symlink("other.md", deep / "link")
            os.replace(deep / "link", rules)
            assert await _exited(proc) == (None, signal.SIGKILL)
    finally:
        os.close(in_r)
        os.close(in_w)
    assert reports == [GuardReport("lost", str(rules), detail="became a symbolic link")]


async def test_sessions_keep_the_descriptor_limit_the_fork_server_was_given(
        world_tmp: Path) -> None:
    """The fork server takes the hard descriptor limit for itself (its hub holds a few
    descriptors per session it guards); a session's program gets the soft one it inherited
    (``_launcher.program_nofile``)."""
    import resource

    from nonod.sandbox._launcher import program_nofile

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        out_r, out_w = os.pipe()
        async with open_launcher("namespaces") as launcher:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            proc = await launcher.launch(_policy(world_tmp), LaunchRequest(
                argv=(PY, "-S", "-c", "import resource; "
                      "print(*resource.getrlimit(resource.RLIMIT_NOFILE))"),
                cwd=str(world_tmp)), stdio=(0, out_w, 2))
            os.close(out_w)
            async with trio.lowlevel.FdStream(out_r) as out:
                got = program_nofile((512, hard))  # the hard one less the launchers' reserve
                assert await _line(out) == f"{got[0]} {got[1]}\n".encode()
            server = Path(f"/proc/{launcher._proc.pid}/limits").read_text()
            assert await _exited(proc) == (0, None)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert f"Max open files            {hard}" in server, server


async def test_the_repair_server_holds_nothing_but_its_job_socket(world_tmp: Path) -> None:
    """The fork server keeps one ``nono-reaper --repair --serve`` spawned ahead of need once it
    guards a session. Its children will enter some session's namespaces with their owner's
    capabilities, so it holds nothing of the fork server's (no other session's pipes, sockets
    or pidfds): its standard descriptors, the socket its jobs come on and the signalfd its
    children's ends come on, and it is not dumpable."""
    async with _session(world_tmp, "import sys; sys.stdin.read()", "namespaces",
                        _masked(world_tmp)) as (proc, _, stdin):
        await _outer_left(proc.pid)
        server = _ppid(proc.pid)
        with trio.fail_after(10):
            while not (spares := _children_named(server, "nono-repair")):
                await trio.sleep(0.005)
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{spares[0]}/fd"))
        fourth = os.readlink(f"/proc/{spares[0]}/fd/4")
        owner = os.stat(f"/proc/{spares[0]}").st_uid  # root's, not its uid's: not dumpable
        os.close(stdin)
        assert await _exited(proc) == (0, None)
    assert fds == [0, 1, 2, 3, 4], fds
    assert fourth == "anon_inode:[signalfd]"
    assert owner == 0


def _children_named(parent: int, name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if (entry.isdigit() and _state(int(entry)) not in (None, "Z")
                    and _ppid(int(entry)) == parent
                    and Path(f"/proc/{entry}/comm").read_text().strip() == name):
                out.append(int(entry))
    return out


async def test_the_repair_server_ends_with_the_last_guarded_session(world_tmp: Path) -> None:
    """The repair server is there for the sessions the fork server guards: once none is
    left, it ends (the fork server's children are its launchers again). A warm launcher made
    for the same view meanwhile guards its view at the hub ahead of its launch (a direct one)
    and keeps the server until it is dropped, ``warm_idle`` after the last launch: short
    here."""
    async with _session(world_tmp, "import sys; sys.stdin.read()", "namespaces",
                        _masked(world_tmp), warm_idle=0.5) as (proc, _, stdin):
        await _outer_left(proc.pid)
        server = _ppid(proc.pid)
        with trio.fail_after(10):
            while not _children_named(server, "nono-repair"):
                await trio.sleep(0.005)
        os.close(stdin)
        assert await _exited(proc) == (0, None)
        with trio.fail_after(10):
            while _children_named(server, "nono-repair"):
                await trio.sleep(0.005)


def test_a_repair_that_cannot_enter_the_session_ends_it_with_the_reason() -> None:
    """A repair server's job that names a mount namespace it cannot enter (here no namespace
    at all) for a session still running does not leave it unguarded: its repair reports the
    guard lost with why, kills the init through its pidfd and exits ``REPAIR_LOST``, which
    the server answers, as for a path it cannot cover again."""
    import random
    import socket
    import struct
    import subprocess

    from nonod.sandbox._guardhub import REPAIR_LOST
    from nonod.sandbox._launcher import GUARD_LOST, REC_GUARD, RECORD

    from .test_reaper_fuzz import _memfd, _spawn, outer_config

    init = subprocess.Popen(["sleep", "60"])
    pidfd = os.pidfd_open(init.pid)
    ours, job = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours_hub, hub = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe()
    memfd = _memfd(outer_config(random.Random(0)))
    not_a_namespace = os.open("/dev/null", os.O_RDONLY)
    try:
        pid = _spawn(["nono-repair", "--repair", str(os.getpid()), "--serve"],
                     {job.fileno(): 3})
        job.close()
        socket.send_fds(ours, [b"J" + struct.pack("<I", 5)],
                        [pidfd, hub.fileno(), report_w, memfd, not_a_namespace])
        ours.settimeout(10)
        tag, number, status = struct.unpack("<cIi", ours.recv(64))
        assert (tag, number) == (b"R", 5)
        assert os.waitstatus_to_exitcode(status) == REPAIR_LOST
        ours.shutdown(socket.SHUT_WR)
        assert os.waitpid(pid, 0)[1] == 0  # the server ends with its hub's end
        assert init.wait(timeout=10) == -signal.SIGKILL
        os.close(report_w)
        with os.fdopen(report_r, "rb") as f:
            data = f.read()
    finally:
        init.kill()
        for end in (ours, ours_hub, hub):
            end.close()
        for fd in (pidfd, memfd, not_a_namespace):
            os.close(fd)
    kind, _, b, n = RECORD.unpack_from(data)
    assert (kind, b) == (REC_GUARD, GUARD_LOST)
    assert data[RECORD.size:RECORD.size + n].startswith(
        b"\0the view guard's repair cannot enter the session: "), data
