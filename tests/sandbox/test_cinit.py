"""The warm direct init in C (``nono-reaper --init``, ``_cinit``): what the kernel shows of a
session must be the same down both paths (the Python init forced with
``NONO_PYTHON_INIT``), no Python process is forked for a warm launch it covers, its failures
are the Python init's, and the flat forms it reads are checked strictly."""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import trio

from nonod.errors import LaunchError
from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.sandbox import Launcher, LaunchRequest, _cinit, _libc, _reaper, open_launcher
from nonod.sandbox._launcher import (
    PENDING,
    REC_ERROR,
    REC_PID,
    RECORD,
    STEPS,
    LaunchPlan,
    View,
    map_ids,
    record,
)
from nonod.sandbox._mounts import MountOp, idmapped_trees
from nonod.sandbox._plan import build_plan

from ..proctree import launchers, wait_until

pytestmark = pytest.mark.userns

PY = "/usr/bin/python3"
SRC = Path(_reaper.__file__).with_name("reaper_init.c")
#: Two read-only grants: binds, the masks of the session's /proc, tmpfs, symbolic links, an
#: idmapped tree for root's /etc, the Landlock ruleset. (A mask on a host path leaves the
#: view guard work: the Python init's, ``_cinit.covers``.)
POLICY = ResolvedPolicy(
    name="cinit",
    grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ)),
    denials=(),
)
#: What a session shows of itself: its status fields, pid 1's name, its mounts without
#: their numbers (ids and devices differ between any two sessions), a denied write's errno
#: (read-only view: EROFS) and a denied read outside the view's binds but inside its root
#: (Landlock: EACCES), a masked file of /proc.
SHOW = r"""
import os, re
def err(f):
    try:
        f()
    except OSError as e:
        return e.errno
    return 0
st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())
print({k: st[k].strip() for k in ('NoNewPrivs', 'Seccomp', 'CapEff', 'CapBnd', 'CapPrm',
                                  'CapAmb', 'CapInh')})
print(open('/proc/1/comm').read().strip() == 'nono-reaper')
for line in open('/proc/self/mountinfo').read().splitlines():
    f = line.split()
    print(f[3], f[4], f[5], *f[f.index('-') + 1:f.index('-') + 2])
print(err(lambda: open('/usr/nono-cinit', 'w')), err(lambda: os.listdir('/dev/pts/../..')),
      err(lambda: os.listdir('/proc/1/root')), err(lambda: open('/.nono-empty')),
      err(lambda: open('/proc/kmsg')))
print(os.getcwd(), sorted(os.environ.items()))
import resource
print([resource.getrlimit(r) for r in (resource.RLIMIT_CORE, resource.RLIMIT_NOFILE,
                                       resource.RLIMIT_SIGPENDING, resource.RLIMIT_NPROC)])
print(sorted(os.listdir('/proc/self/fd')))
"""


def _request(*argv: str, cwd: str = "/usr",
             pins: tuple[tuple[str, bytes], ...] = ()) -> LaunchRequest:
    return LaunchRequest(argv=argv, env=(("PATH", "/usr/bin"), ("NONO_X", "1")), cwd=cwd,
                         pins=pins)


async def _show(python: bool, monkeypatch: pytest.MonkeyPatch,
                policy: ResolvedPolicy = POLICY,
                pins: tuple[tuple[str, bytes], ...] = (), extra: str = "") -> tuple[str, bool]:
    """What a warm (second) session prints, down the C path or the Python one; and whether
    its init's executable was the reaper's memfd right after the launch."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if python else "")
    outputs: list[str] = []
    memfd = False
    async with open_launcher("namespaces") as launcher:
        for _ in range(2):
            out_r, out_w = os.pipe()
            gate_r, gate_w = os.pipe()
            code = "import sys; sys.stdin.read()\n" + SHOW + "".join(
                f"print(open({path!r}).read())\n" for path, _ in pins) + extra
            try:
                proc = await launcher.launch(policy, _request(PY, "-c", code, pins=pins),
                                             stdio=(gate_r, out_w, 2))
            finally:
                os.close(out_w)
                os.close(gate_r)
            memfd = os.readlink(f"/proc/{proc.pid}/exe").startswith("/memfd:nono-reaper")
            os.close(gate_w)
            with os.fdopen(out_r) as out:
                status = await proc.wait_exited()
                outputs.append(out.read())
            assert status.code == 0, outputs[-1]
    return outputs[-1], memfd


def test_steps_match_the_launcher() -> None:
    """The C stage's step numbers are the indices of ``_launcher.STEPS``: the daemon names
    a failed step by them."""
    body = SRC.read_text()
    found = dict(re.findall(r"S_([A-Z_]+) = (\d+)", body))
    assert found, "no step numbers in reaper_init.c"
    for name, index in found.items():
        assert STEPS[int(index)] == name.lower(), name


@pytest.mark.parametrize("masked", [False, True, "pinned", "overlay"],
                         ids=["unguarded", "guarded", "pinned", "overlay"])
def test_same_session_down_both_paths(monkeypatch: pytest.MonkeyPatch, world_tmp: Path,
                                      masked: bool | str) -> None:
    """Status fields (no_new_privs, seccomp, capabilities), the session's mounts, a denied
    write, the Landlock domain (a denied read), limits, descriptors, environment and working
    directory: equal for the C init and the Python one. Only pid 1's name differs while
    the Python init has not become ``nono-reaper`` yet (50 ms after the launch). Guarded: a
    host file masked (the view guard handed to the hub by the init, in C too). Pinned: a
    verified file's bytes shown instead of the host's. Overlay: a writable cache, copy-on-write
    (the session's write stays its own)."""
    policy = POLICY
    pins: tuple[tuple[str, bytes], ...] = ()
    extra = ""
    if masked == "overlay":
        cache = world_tmp / "home" / ".cache"
        (cache / "go-build" / "ab").mkdir(parents=True)
        (cache / "go-build" / "ab" / "entry").write_text("HOST\n")
        build = cache / "go-build"
        # Denied paths absent in the cache: made in the upper layer (UPPER_*), then masked.
        policy = msgspec.structs.replace(ResolvedPolicy(name="cow", grants=(
            *POLICY.grants, Grant(path=str(build), access=Access.READWRITE)),
            denials=(Denial(path=str(build / "gone")),
                     Denial(path=str(build / "sub" / "gone.txt"), is_file=True))),
            cache_home=str(cache))
        entry = str(build / "ab" / "entry")
        extra = (f"print(sorted(os.listdir({str(build)!r})), sorted(os.listdir("
                 f"{str(build / 'sub')!r})), oct(os.stat({str(build / 'gone')!r}).st_mode))\n"
                 f"open({entry!r}, 'w').write('SESSION')\n"
                 f"print(open({entry!r}).read())\n")
    elif masked == "pinned":
        verified = world_tmp / "project" / "AGENTS.md"
        verified.parent.mkdir()
        verified.write_text("HOST\n")
        pins = ((str(verified), b"VERIFIED\n"),)
        policy = ResolvedPolicy(name="pinned", grants=(
            *POLICY.grants, Grant(path=str(verified.parent), access=Access.READ)), denials=())
    elif masked:
        secret = world_tmp / "project" / ".env"
        secret.parent.mkdir()
        secret.write_text("SECRET\n")
        policy = ResolvedPolicy(name="masked", grants=(
            *POLICY.grants, Grant(path=str(secret.parent), access=Access.READ)),
            denials=(Denial(path=str(secret), is_file=True),))
    c_out, c_memfd = trio.run(_show, False, monkeypatch, policy, pins, extra)
    py_out, py_memfd = trio.run(_show, True, monkeypatch, policy, pins, extra)
    if extra:
        assert c_out.splitlines()[-1] == "SESSION" and "overlay" in c_out
        assert c_out.splitlines()[-2] == "['ab', 'gone', 'sub'] ['gone.txt'] 0o40000", c_out
        assert (world_tmp / "home/.cache/go-build/ab/entry").read_text() == "HOST\n"
    if pins:
        assert c_out.splitlines()[-2:] == ["VERIFIED", ""] and "HOST" not in c_out
    assert c_memfd and not py_memfd  # the C path was taken, and the other was not
    c_lines, py_lines = c_out.splitlines(), py_out.splitlines()
    assert c_lines[1] == "True"
    del c_lines[1], py_lines[1]
    assert c_lines == py_lines
    status = eval(c_lines[0])  # noqa: S307 - our own program's repr of a dict of str
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert status["CapEff"] == status["CapBnd"] == "0000000000000000"
    errors = c_lines[-4 - 2 * len(pins) - 2 * bool(extra)].split()
    assert errors[0] == str(errno.EROFS)


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _pid_one(pid: int) -> bool:
    """Whether ``pid`` is pid 1 of a pid namespace of its own (an init, not an outer)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspid = next((line.split()[1:] for line in status.splitlines()
                  if line.startswith("NSpid:")), [])
    return len(nspid) > 1 and nspid[-1] == "1"


def _python_inits(server: int) -> set[int]:
    """The fork server's children that are Python interpreters and a session's init: the
    warm inits for a view, waiting or launched (the view-less launcher's outer process,
    made once and kept, is no init; its own init is not the server's child)."""
    return {pid for pid in launchers(server)
            if "python" in Path(_exe(pid)).name and _pid_one(pid)}


def _c_init_waiting(server: int) -> bool:
    return any(_exe(pid).startswith("/memfd:nono-reaper") for pid in launchers(server))


async def _gated(launcher: Launcher) -> tuple[int, str]:
    """A session whose program waits on its stdin: its init and that init's executable
    right after the launch; then it is let go and waited for."""
    gate_r, gate_w = os.pipe()
    try:
        proc = await launcher.launch(POLICY, _request(PY, "-c", "import sys; sys.stdin.read()"),
                                     stdio=(gate_r, 1, 2))
    finally:
        os.close(gate_r)
    exe = os.readlink(f"/proc/{proc.pid}/exe")
    os.close(gate_w)
    await proc.wait_exited()
    return proc.pid, exe


async def _c_launches(monkeypatch: pytest.MonkeyPatch) -> tuple[list[set[int]], list[str]]:
    """Four warm launches, each once a C init waits for it: the Python inits before each,
    and each session's init's executable."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "")
    seen: list[set[int]] = []
    inits: list[str] = []
    async with open_launcher("namespaces") as launcher:
        await (await launcher.launch(POLICY, _request("/bin/true"))).wait_exited()
        for _ in range(4):
            wait_until("a C init ready", lambda: _c_init_waiting(launcher.pid))
            seen.append(_python_inits(launcher.pid))
            inits.append((await _gated(launcher))[1])
    return seen, inits


async def _py_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python path, the same way: a Python init waits for the next launch."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1")
    async with open_launcher("namespaces") as launcher:
        await (await launcher.launch(POLICY, _request("/bin/true"))).wait_exited()
        await _gated(launcher)
        wait_until("a Python init made for the next launch",
                   lambda: bool(_python_inits(launcher.pid)))


def test_no_python_process_forked_for_a_warm_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Launch after launch, no init under the fork server is a Python interpreter, and each
    session's init is ``nono-reaper`` from its birth; the forced Python path forks one per launch,
    which this test sees."""
    seen, inits = trio.run(_c_launches, monkeypatch)
    assert seen == [set()] * 4, seen
    assert all(exe.startswith("/memfd:nono-reaper") for exe in inits), inits
    trio.run(_py_launches, monkeypatch)


async def _at_once(monkeypatch: pytest.MonkeyPatch, count: int) -> list[bytes]:
    """``count`` launches of a view launched once before, sent together while one launcher
    waits for it: each session's init's command line, read while its program runs."""
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "")
    seen: list[bytes] = []
    async with open_launcher("namespaces") as launcher:
        await (await launcher.launch(POLICY, _request("/bin/true"))).wait_exited()
        wait_until("a C init ready", lambda: _c_init_waiting(launcher.pid))
        gates = [os.pipe() for _ in range(count)]

        async def one(gate: int) -> None:
            proc = await launcher.launch(
                POLICY, _request(PY, "-c", "import sys; sys.stdin.read()"), stdio=(gate, 1, 2))
            seen.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
            os.close(gate)
            await proc.wait_exited()

        async with trio.open_nursery() as nursery:
            for gate_r, _ in gates:
                nursery.start_soon(one, gate_r)
            await trio.to_thread.run_sync(
                lambda: wait_until("every launch's init", lambda: len(seen) == count))
            for _, gate_w in gates:
                os.close(gate_w)
    return seen


def test_launches_that_find_no_launcher_ready_get_a_c_init_not_a_cold_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch of a view the fork server knows, finding no launcher ready (four at once,
    one waiting), gets a C init made for it there and then (``_Pool.make_now``), not the
    cold path's outer process and Python init (whose reaper, exec'd later, has the
    reaper's arguments on its command line; a C init keeps its helper's or spawner's):
    in a fleet at 4 in flight, the cold launches were 9-16% of them and cost about three
    times a C init's CPU (docs/benchmarks.md, ``fleet5``)."""
    seen = trio.run(_at_once, monkeypatch, 4)
    assert all(line.split(b"\0")[1] in (b"--init", b"--spawner") for line in seen), seen


async def _failure(monkeypatch: pytest.MonkeyPatch, python: bool, request: LaunchRequest
                   ) -> tuple[str | None, str]:
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if python else "")
    async with open_launcher("namespaces") as launcher:
        ok = await launcher.launch(POLICY, _request("/bin/true"))
        await ok.wait_exited()
        with pytest.raises(LaunchError) as caught:
            await launcher.launch(POLICY, request)
        return caught.value.step, str(caught.value)


@pytest.mark.parametrize("request_", [
    _request("/usr/bin/nono-no-such-program"),
    _request("/bin/true", cwd="/usr/nono-no-such-dir"),
    _request("/etc/hostname"),
], ids=["exec", "chdir", "exec-not-executable"])
def test_failures_are_the_python_inits(monkeypatch: pytest.MonkeyPatch,
                                      request_: LaunchRequest) -> None:
    """A step the C init cannot take fails the launch with the Python init's record: same
    step, same errno, same detail."""
    c = trio.run(_failure, monkeypatch, False, request_)
    py = trio.run(_failure, monkeypatch, True, request_)
    assert c == py


# --- the flat forms, strictly read -------------------------------------------------------

def _plan() -> LaunchPlan:
    plan, _ = build_plan(POLICY, _request("/bin/true"))
    return plan


class _Init:
    """``nono-reaper --init`` driven as the fork server drives it (``_Warm._c_direct``)."""

    def __init__(self, config: bytes, ops: tuple[MountOp, ...] = ()) -> None:
        self.reaper = _reaper.load()
        assert self.reaper >= 0, "make did not build nonod/sandbox/nono-reaper"
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        go, theirs_go = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = os.memfd_create("cfg", os.MFD_CLOEXEC)
        os.write(fd, config)
        flags = _libc.CLONE_NEWUSER | _libc.CLONE_NEWNS | _libc.CLONE_NEWPID
        trees = idmapped_trees(ops)
        helper = _cinit.spawn(self.reaper, flags, theirs.fileno(), theirs_go.fileno(), fd,
                              trees)
        for tree in trees:
            os.close(tree)
        theirs.close()
        theirs_go.close()
        os.close(fd)
        words = [go.recv(8), go.recv(8)]
        assert os.waitpid(helper, 0)[1] == 0
        self.pid = next(p for p in map(_cinit.init_pid, words) if p is not None)
        assert b"r" in words
        map_ids(self.pid, os.getuid(), os.getgid())
        go.send(b"g")
        go.close()

    def ready(self) -> bytes:
        return self.sock.recv(8)

    def close(self) -> int:
        self.sock.close()
        os.close(self.reaper)
        return os.waitpid(self.pid, 0)[1]


def _launch(init: _Init, message: bytes, pending: bytes = b"") -> bytes:
    """Hand ``message`` over with six descriptors; what the launch pipe got."""
    launch_r, launch_w = os.pipe()
    exit_r, exit_w = os.pipe()
    control, theirs = socket.socketpair()
    fds = [0, 1, 2, launch_w, exit_w, theirs.fileno()]
    socket.send_fds(init.sock, [PENDING.pack(len(pending)), pending, message], fds)
    for fd in (launch_w, exit_w):
        os.close(fd)
    theirs.close()
    with os.fdopen(launch_r, "rb") as got:
        data = got.read()
    os.close(exit_r)
    control.close()
    return data


def _error(data: bytes) -> tuple[str, int, bytes]:
    kind, step, err, size = RECORD.unpack_from(data)
    assert kind == REC_ERROR
    return STEPS[step], err, data[RECORD.size:RECORD.size + size]


@pytest.mark.parametrize("mangle", [
    lambda c: c[:-1],  # short
    lambda c: c + b"\0",  # trailing bytes
    lambda c: b"NGV2" + c[4:],  # another version
    lambda c: c[:4] + struct.pack("<I", 1 << 30) + c[8:],  # a count past the limit
], ids=["short", "trailing", "magic", "count"])
def test_malformed_view_config_ends_before_ready(mangle: object) -> None:
    """A config the C init cannot read whole makes it exit before READY (the fork server
    then launches elsewhere): nothing is half applied to a launch."""
    plan = _plan()
    view = View(mounts=plan.mounts, pinned=(), landlock=plan.landlock,
                       creation_refused=())
    config = _cinit.view_config(view)
    init = _Init(mangle(config), view.mounts)  # type: ignore[operator]
    assert init.ready() == b""
    assert init.close() != 0


def _messages() -> Iterator[tuple[str, bytes]]:
    good = _cinit.launch_message(_plan())
    assert good is not None
    yield "short", good[:-1]
    yield "trailing", good + b"x"
    yield "magic", b"NGLX" + good[4:]
    yield "flags", good[:4] + struct.pack("<I", 0x80) + good[8:]
    yield "port", good[:8] + struct.pack("<I", 70000) + good[12:]


@pytest.mark.parametrize("name,message", list(_messages()), ids=[n for n, _ in _messages()])
def test_malformed_launch_message_is_a_failed_launch(name: str, message: bytes) -> None:
    """A launch message the C init cannot read whole is a failed launch at step ``fork``
    (after the fork server's pending records), as a plan the Python init cannot take."""
    plan = _plan()
    view = View(mounts=plan.mounts, pinned=(), landlock=plan.landlock,
                       creation_refused=())
    init = _Init(_cinit.view_config(view), view.mounts)
    assert init.ready() == b"R"
    pending = record(REC_PID, 1234, 0)
    data = _launch(init, message, pending)
    assert data.startswith(pending)
    step, err, _ = _error(data[len(pending):])
    assert (step, err) == ("fork", errno.EINVAL), name
    assert os.WEXITSTATUS(init.close()) == 126


def test_launch_message_refuses_what_it_cannot_describe() -> None:
    """Plans the flat form does not carry go the Python way (None): never half in C."""
    plan = _plan()
    assert _cinit.launch_message(plan) is not None
    for changed in (
        {"argv": ()},
        {"argv": ("/bin/true", "a\0b")},
        {"env": ("=x",)},
        {"switch_user": True},
    ):
        fields = {f: getattr(plan, f) for f in plan.__struct_fields__}
        fields.update(changed)
        assert _cinit.launch_message(LaunchPlan(**fields)) is None, changed


def test_the_binary_refuses_bad_arguments() -> None:
    reaper = Path(_reaper.__file__).with_name("nono-reaper")
    for argv in (["--init"], ["--init", "x", "3", "4", "5"], ["--init", "1", "3", "4", "5"],
                 ["--init", str(1 << 40), "3", "4", "5"]):
        assert subprocess.run([str(reaper), *argv], check=False).returncode == 126, argv


def test_a_failed_step_follows_the_pending_records() -> None:
    """A step that fails at launch is reported after the fork server's records (the init's
    pid, its group's name...), which the daemon needs for a failed launch too: as the
    Python init's ``_fail(launch_w, exc, pending)``."""
    plan = _plan()
    view = View(mounts=plan.mounts, pinned=(), landlock=plan.landlock, creation_refused=())
    init = _Init(_cinit.view_config(view), view.mounts)
    assert init.ready() == b"R"
    fields = {f: getattr(plan, f) for f in plan.__struct_fields__}
    message = _cinit.launch_message(LaunchPlan(**{**fields, "cwd": "/nono-no-such-dir"}))
    assert message is not None
    pending = record(REC_PID, 1234, 0)
    data = _launch(init, message, pending)
    assert data.startswith(pending), data
    assert _error(data[len(pending):]) == ("chdir", errno.ENOENT, b"/nono-no-such-dir")
    assert os.WEXITSTATUS(init.close()) == 126


async def _tagged(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int, str]]:
    from nonod.audit._kernel import open_fs_denied_monitor

    monkeypatch.setenv(_cinit.FORCE_PYTHON, "")
    seen: list[tuple[str, str, int, str]] = []
    async with open_fs_denied_monitor("auto") as monitor:
        if not monitor.active:
            pytest.skip(f"no kernel audit here: {monitor.status}")
        request = LaunchRequest(argv=(PY, "-S", "-c", "import sys; sys.stdin.read()"),
                                cwd="/", audit_tag=monitor.tag)
        async with open_launcher("namespaces") as launcher:
            for _ in range(3):
                gate_r, gate_w = os.pipe()
                try:
                    proc = await launcher.launch(POLICY, request, stdio=(gate_r, 1, 2))
                finally:
                    os.close(gate_r)
                seen.append((os.readlink(f"/proc/{proc.pid}/exe"),
                             Path(f"/proc/{proc.pid}/loginuid").read_text(), monitor.tag,
                             Path(f"/proc/{proc.pid}/sessionid").read_text()
                             + f" {proc.audit_session}"))
                os.close(gate_w)
                await proc.wait_exited()
    return seen


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="kernel audit and loginuids need root")
def test_an_audit_tag_is_lent_to_the_c_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an audit tag a loginuid is lent for the init's clone (by the spawner, or the
    fork server for a helper's spawn): the C init (warm launches after the first) carries
    the tag and the audit session the launch reports, a fresh one for each session (the
    daemon watches each session's denials by it)."""
    seen = trio.run(_tagged, monkeypatch)
    for exe, loginuid, tag, sessions in seen[1:]:
        assert exe.startswith("/memfd:nono-reaper"), seen
        assert int(loginuid) == tag
        ours, reported = sessions.split()
        assert ours == reported and int(ours) not in (0, 4294967295)
    assert len({sessions for *_, sessions in seen}) == len(seen), seen


TTY = (
    "import os\n"
    "print(os.getsid(0) == os.getpid(), os.tcgetpgrp(0) == os.getpgrp(), os.isatty(0))\n"
)


async def _on_a_terminal(monkeypatch: pytest.MonkeyPatch, python: bool) -> list[str]:
    monkeypatch.setenv(_cinit.FORCE_PYTHON, "1" if python else "")
    seen: list[str] = []
    async with open_launcher("namespaces") as launcher:
        for _ in range(2):
            main, tty = os.openpty()
            out_r, out_w = os.pipe()
            try:
                proc = await launcher.launch(POLICY, _request(PY, "-S", "-c", TTY),
                                             stdio=(tty, out_w, 2), controlling_tty=True)
            finally:
                os.close(out_w)
                os.close(tty)
            status = await proc.wait_exited()
            with os.fdopen(out_r) as out:
                seen.append(f"{status.code} {out.read().strip()}")
            os.close(main)
    return seen


def test_a_controlling_terminal_as_down_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session on a terminal (``controlling_tty``): the program leads its own session with
    the terminal as its controlling one, as the Python init makes it (the C init forks it
    for that instead of ``posix_spawn``)."""
    c = trio.run(_on_a_terminal, monkeypatch, False)
    assert c == trio.run(_on_a_terminal, monkeypatch, True)
    assert c[-1] == "0 True True True", c
