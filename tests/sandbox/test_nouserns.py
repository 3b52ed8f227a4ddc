"""Sessions where the kernel refuses new namespaces (Docker's default seccomp profile, Ubuntu's
AppArmor restriction): the engine runs them Landlock-only, says so, and refuses profiles that
need what only a mount namespace gives unless they accept it by name.

Every launch here runs under ``tests/nouserns.py``, a seccomp filter that refuses ``unshare``,
``setns`` and ``clone`` with namespace flags the way the container runtime's profile does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import trio

from nonod.policy import Access, Denial, Grant, NetworkPolicy, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from tests.conftest import Result, SandboxUser

# every launch here needs these (host_metadata: a root session's, the thirty-first pass)
ACCEPTED = ("persistence", "creation_guard", "host_proc", "host_metadata")
OPEN = NetworkPolicy()


def _policy(work: Path, *, grants: tuple[Grant, ...] = (), denials: tuple[Denial, ...] = (),
            accept: tuple[str, ...] = ACCEPTED,
            network: NetworkPolicy = OPEN) -> ResolvedPolicy:
    return ResolvedPolicy(
        name="nouserns",
        grants=(Grant(path="/usr", access=Access.READ), Grant(path="/etc", access=Access.READ),
                Grant(path=str(work), access=Access.READWRITE), *grants),
        denials=denials,
        allow_degraded=accept,
        network=network,
    )


def _run(user: SandboxUser, policy: ResolvedPolicy, code: str, cwd: Path,
         proxy_port: int | None = None) -> Result:
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    request = LaunchRequest(argv=(python, "-S", "-c", code), cwd=str(cwd),
                            proxy_port=proxy_port)
    return user.run_request(policy, request, nouserns=True)


def _layers(result: Result) -> str:
    line = next((x for x in result.stderr.splitlines() if x.startswith("ENFORCEMENT ")), "")
    assert line, result.stderr
    return line


@pytest.fixture
def listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two TCP listeners on the host's loopback: the 'proxy', and any other local service."""
    proxy, other = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    yield proxy, other
    proxy.close()
    other.close()


# Each attempt prints its name and OK or the errno's name.
ATTEMPT = r"""
import errno, os, socket, sys
def attempt(name, fn):
    try:
        fn()
        print(name, "OK")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
"""

PROBE = ATTEMPT + r"""
attempt("read_outside", lambda: open(sys.argv[1]).read())
attempt("write_outside", lambda: open(sys.argv[2], "w").write("x"))
attempt("write_inside", lambda: open("inside.txt", "w").write("x"))
def connect(port):
    s = socket.socket(); s.settimeout(3); s.connect(("127.0.0.1", port)); s.close()
attempt("connect_proxy", lambda: connect(int(sys.argv[3])))
attempt("connect_other", lambda: connect(int(sys.argv[4])))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
print("ppid_is_host", os.getppid() != 1)
"""


def test_profile_without_denials_runs_confined_by_landlock(
        sandbox_user: SandboxUser, world_tmp: Path,
        listeners: tuple[socket.socket, socket.socket]) -> None:
    work = world_tmp / "work"
    work.mkdir()
    outside = world_tmp / "outside.txt"
    outside.write_text("host secret")
    sandbox_user.chown(work, outside)
    proxy, other = listeners
    proxy_port, other_port = proxy.getsockname()[1], other.getsockname()[1]
    policy = _policy(work, network=NetworkPolicy(restricted=True, allow_domain=("example.com",)),
                     accept=(*ACCEPTED, "network_ports"))
    code = (PROBE.replace("sys.argv[1]", repr(str(outside)))
            .replace("sys.argv[2]", repr(str(world_tmp / "new.txt")))
            .replace("sys.argv[3]", str(proxy_port)).replace("sys.argv[4]", str(other_port)))

    result = _run(sandbox_user, policy, code, work, proxy_port=proxy_port)

    assert result.code == 0, result.stderr
    lines = set(result.stdout.splitlines())
    assert {"read_outside EACCES", "write_outside EACCES", "write_inside OK",
            "connect_proxy OK", "connect_other EACCES", "ppid_is_host True"} <= lines, lines
    assert any(x.startswith("udp E") for x in lines), lines  # refused by seccomp
    assert (work / "inside.txt").exists() and not (world_tmp / "new.txt").exists()
    report = _layers(result)
    assert report.startswith("ENFORCEMENT partially enforced")
    for layer in ("namespaces: partial (none (landlock-only mode)", "filesystem_view: partial",
                  "network: partial (Landlock fallback"):
        assert layer in report, report


def test_writable_directory_and_host_tmp_need_accepting(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)

    tmp = (Grant(path="/tmp", access=Access.READWRITE),)

    result = _run(sandbox_user, _policy(work, grants=tmp, accept=()), "print('ran')", work)

    assert result.code == 125 and "ran" not in result.stdout
    assert "launch.enforcement" in result.stderr and "landlock-only" in result.stderr
    layers = ["creation_guard", *(["host_metadata"] if sandbox_user.uid == 0 else []),
              "host_proc", "persistence", "private_tmp"]
    for layer in layers:
        assert f"{layer}:" in result.stderr, result.stderr
    quoted = ", ".join(f'"{layer}"' for layer in layers)
    assert f'"allow_degraded": [{quoted}]' in result.stderr


def test_a_writable_cache_needs_accepting_and_is_then_the_hosts(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """Without a mount namespace no overlay can be made: a writable grant in the cache home
    is refused unless the profile accepts ``private_caches``; accepted, the session writes
    the host's cache, and the report says so."""
    work = world_tmp / "work"
    cache = world_tmp / "home" / ".cache" / "go-build"
    for d in (work, cache):
        d.mkdir(parents=True)
        sandbox_user.chown(d)
    grants = (Grant(path=str(cache), access=Access.READWRITE),)
    policy = msgspec.structs.replace(_policy(work, grants=grants),
                                     cache_home=str(cache.parent))
    code = f"open({str(cache / 'obj')!r}, 'w').write('x'); print('ran')"

    refused = _run(sandbox_user, policy, code, work)
    assert refused.code == 125 and "ran" not in refused.stdout
    assert "private_caches: 1 writable cache grants" in refused.stderr, refused.stderr
    assert '"private_caches"' in refused.stderr
    assert not (cache / "obj").exists()

    accepted = msgspec.structs.replace(policy, allow_degraded=(*ACCEPTED, "private_caches"))
    result = _run(sandbox_user, accepted, code, work)
    assert result.code == 0 and "ran" in result.stdout, result.stderr
    assert "private_caches (1 writable cache grants" in _layers(result)
    assert (cache / "obj").read_text() == "x"


def test_denial_inside_a_granted_home_kept_out_by_splitting_the_grant(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    home, work = world_tmp / "home", world_tmp / "work"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    (home / ".config").mkdir()
    (home / ".config" / "tool.toml").write_text("setting = 1")
    work.mkdir()
    sandbox_user.chown(home, home / ".ssh", home / ".ssh" / "id_ed25519", home / ".config",
                       home / ".config" / "tool.toml", work)
    code = PROBE_HOME.replace("HOME", repr(str(home)))
    policy = _policy(work, grants=(Grant(path=str(home), access=Access.READWRITE),),
                     denials=(Denial(path=str(home / ".ssh")),))

    result = _run(sandbox_user, policy, code, work)

    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "key EACCES", "new_key EACCES", "config OK", "config_write OK", "list_home EACCES",
        "new_in_home EACCES"], result.stdout
    assert "PRIVATE KEY" not in result.stdout
    assert not (home / ".ssh" / "new").exists() and not (home / "new").exists()
    if sandbox_user.uid:
        assert f"1 granted directories ({home})" in _layers(result)
    else:  # a root session's /etc is split around what only root may read there, too
        assert "granted directories (/etc" in _layers(result)


PROBE_HOME = ATTEMPT + r"""
home = HOME
attempt("key", lambda: open(home + "/.ssh/id_ed25519").read())
attempt("new_key", lambda: open(home + "/.ssh/new", "w"))
attempt("config", lambda: open(home + "/.config/tool.toml").read())
attempt("config_write", lambda: open(home + "/.config/tool.toml", "a").write("# ok"))
attempt("list_home", lambda: os.listdir(home))
attempt("new_in_home", lambda: open(home + "/new", "w"))
"""


DAEMONIZE = r"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open("orphan.pid", "w").write(str(os.getpid()))
        time.sleep(300)
    os._exit(0)
while not os.path.exists("orphan.pid") or not open("orphan.pid").read():
    time.sleep(0.01)
"""


def test_processes_left_behind_end_with_the_session(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)

    result = _run(sandbox_user, _policy(work), DAEMONIZE, work)

    assert result.code == 0, result.stderr
    orphan = int((work / "orphan.pid").read_text())
    # Killed and reaped by the session's init before it reported the exit status.
    assert not os.path.exists(f"/proc/{orphan}"), "a daemonized process outlived the session"


IPC = r"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
print("shmget", errno.errorcode.get(ctypes.get_errno(), 0)
      if libc.shmget(0, 4096, 0o1600) == -1 else "OK")
print("msgget", errno.errorcode.get(ctypes.get_errno(), 0)
      if libc.msgget(0, 0o1600) == -1 else "OK")
print("mq_open", errno.errorcode.get(ctypes.get_errno(), 0)
      if libc.mq_open(b"/nono-test", 0o100 | 2, 0o600, None) == -1 else "OK")
"""


def test_host_ipc_refused(sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """No IPC namespace of its own: the host's System V IPC and message queues, named by keys
    Landlock never sees, are refused by seccomp."""
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)

    result = _run(sandbox_user, _policy(work), IPC, work)

    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["shmget EPERM", "msgget EPERM", "mq_open EPERM"]
    assert "POSIX message queues and inotify are refused by seccomp instead" in _layers(result)


async def test_explicit_mode_and_warm_launchers(world_tmp: Path) -> None:
    """``landlock-only`` asked for explicitly (this host allows namespaces): every launch of
    one launcher (the first cold, the next normally through warm launchers) runs without
    namespaces and confined."""
    work = world_tmp / "work"
    work.mkdir()
    outside = world_tmp / "outside.txt"
    outside.write_text("host secret")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    code = (f"import os\ntry: open({str(outside)!r}).read(); print('READ')\n"
            "except OSError as e: print(e.errno)\n"
            "print(os.readlink('/proc/self/ns/pid'))")
    async with open_launcher("landlock-only") as launcher:
        assert launcher.mode == "landlock-only"
        for n in range(3):
            out = work / f"out{n}.txt"
            with open(out, "wb") as sink:
                proc = await launcher.launch(
                    _policy(work), LaunchRequest(argv=(python, "-S", "-c", code), cwd=str(work)),
                    stdio=(0, sink.fileno(), sink.fileno()))
                with trio.fail_after(30):
                    status = await proc.wait_exited()
            assert status.code == 0, out.read_text()
            host_pidns = os.readlink("/proc/self/ns/pid")
            assert out.read_text().splitlines() == ["13", host_pidns], (n, out.read_text())
            assert not proc.enforcement.fully_enforced


def test_trust_pins_refused_unless_accepted(sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """A verified instruction file is pinned by a mount: without one, the session would read
    the host's file as it is then, so the launch is refused unless the profile accepts it."""
    work = world_tmp / "work"
    work.mkdir()
    (work / "AGENTS.md").write_text("verified\n")
    sandbox_user.chown(work, work / "AGENTS.md")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    request = LaunchRequest(argv=(python, "-S", "-c", "print(open('AGENTS.md').read())"),
                            cwd=str(work), pins=((str(work / "AGENTS.md"), b"verified\n"),))

    refused = sandbox_user.run_request(_policy(work), request, nouserns=True)
    accepted = sandbox_user.run_request(_policy(work, accept=(*ACCEPTED, "trust_pins")),
                                        request, nouserns=True)

    assert refused.code == 125 and "trust_pins: 1 pinned files" in refused.stderr
    assert accepted.code == 0 and accepted.stdout == "verified\n\n", accepted.stderr
    assert "trust_pins (1 pinned files" in _layers(accepted)


SIGNAL = r"""
import os, sys
try:
    os.kill(int(sys.argv[1]), 0)
    print("signal OK")
except OSError as e:
    print("signal", e.errno)
"""


def test_signals_to_host_processes_refused_even_with_allow_all(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    """``signal_mode = allow_all`` means the session's own processes (all a pid namespace
    shows); without one, Landlock's signal scope keeps it to them."""
    work = world_tmp / "work"
    work.mkdir()
    sandbox_user.chown(work)
    # A host process of the session's own uid, so that only the sandbox can refuse.
    target = subprocess.Popen(["setpriv", f"--reuid={sandbox_user.uid}",
                               f"--regid={sandbox_user.uid}", "--clear-groups", "sleep", "60"])
    try:
        policy = msgspec.structs.replace(_policy(work), signal_mode="allow_all")
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        request = LaunchRequest(argv=(python, "-S", "-c", SIGNAL, str(target.pid)),
                                cwd=str(work))
        result = sandbox_user.run_request(policy, request, nouserns=True)
    finally:
        target.kill()
        target.wait()

    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["signal 1"]  # EPERM
