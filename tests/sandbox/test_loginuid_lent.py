"""Audit-tagged sessions without an outer process (``_loginuid``): the fork server lends its
own loginuid for the ``clone`` of a direct launcher's init and takes it back. The sessions
must carry the tag and the audit session id the daemon watches (their filesystem denials
reach that session's watch, through the kernel's audit records), and the fork server's own
loginuid and session id must be what they were."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from nonod.audit._events import FsDenied
from nonod.audit._kernel import Watch, open_fs_denied_monitor
from nonod.sandbox import LaunchRequest, Sandboxed, open_launcher

from .test_warm_direct import run_gated

pytestmark = [
    pytest.mark.userns,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="kernel audit and loginuids need root"),
]

UNSET = "4294967295"
#: Waits for its stdin to close, prints its audit session (its loginuid, unmapped in its
#: user namespace, reads as unset there), then is refused a write to /etc/passwd (EACCES:
#: one of the daemon's audited failures).
PROBE = (
    "import sys; sys.stdin.read()\n"
    "print(open('/proc/self/sessionid').read())\n"
    "try: open('/etc/passwd', 'a')\n"
    "except OSError as e: print(e.errno)\n"
)


def _ids(pid: int) -> tuple[str, str]:
    return (Path(f"/proc/{pid}/loginuid").read_text(),
            Path(f"/proc/{pid}/sessionid").read_text())


async def _tagged_sessions(n: int) -> tuple[int, int, tuple[str, str], tuple[str, str],
                                             list[tuple[int, int, str, list[FsDenied]]]]:
    """``n`` tagged sessions back to back: the fork server's pid, the tag, its (loginuid,
    session) before the first and after the last, and per session its init's parent, its
    audit session as the launch reported it, its loginuid (read from here) and what it
    printed, and the denials its watch got."""
    seen: list[tuple[int, int, str, list[FsDenied]]] = []
    async with open_fs_denied_monitor("auto") as monitor:
        if not monitor.active:
            pytest.fail(f"kernel audit should work as root here: {monitor.status}")
        assert await monitor.admit(os.geteuid())  # the sessions' user (the daemon's launch)
        request = LaunchRequest(argv=("/usr/bin/python3", "-S", "-c", PROBE), cwd="/",
                                audit_tag=monitor.tag)
        async with open_launcher("namespaces") as launcher:
            before = _ids(launcher.pid)
            for _ in range(n):
                denials: list[FsDenied] = []

                def waiting(proc: Sandboxed, denials: list[FsDenied] = denials
                            ) -> tuple[str, Watch]:  # its program's loginuid, from the host
                    return (_ids(proc.pid)[0],
                            monitor.watch(proc.audit_session, denials.append))

                proc, parent, printed, (loginuid, watch) = await run_gated(launcher, request,
                                                                           waiting)
                assert await monitor.release(watch, timeout=30)
                seen.append((parent, proc.audit_session, f"{loginuid} {printed}", denials))
            after = _ids(launcher.pid)
        return launcher.pid, monitor.tag, before, after, seen


def test_a_tagged_session_needs_no_outer_and_keeps_its_tag_and_session() -> None:
    server, tag, before, after, seen = trio.run(_tagged_sessions, 4)
    sessions = [ses for _, ses, _, _ in seen]
    assert all(sessions) and len(set(sessions)) == len(sessions), sessions
    for i, (parent, ses, printed, denials) in enumerate(seen):
        loginuid, sessionid, err = printed.split()
        assert int(loginuid) == tag and sessionid == str(ses), printed
        assert err == "13", printed
        assert [(d.path, d.errno) for d in denials] == [("/etc/passwd", "EACCES")], (
            i, denials)
        if i:  # the first launch is cold: its outer launcher stays its parent
            assert parent == server, (i, parent, server)
    # The fork server's own ids, as before: unset (the test runs with none set).
    assert before == (UNSET, UNSET)
    assert after == before


#: Three tagged sessions from a fork server that must not lend its loginuid: for each, whether
#: its init's parent is the fork server, its audit session and loginuid (read from the host),
#: then the fork server's loginuid if unchanged. ``argv[2]``: the loginuid to set first.
NOT_LENT = r"""
import os, sys, trio
sys.path.insert(0, sys.argv[1])
from tests.sandbox.test_loginuid_lent import PROBE, _ids
from tests.sandbox.test_warm_direct import POLICY
from nonod.sandbox import LaunchRequest, Sandboxed, open_launcher
if sys.argv[2] != "-":
    with open("/proc/self/loginuid", "w") as f:
        f.write(sys.argv[2])
async def main():
    request = LaunchRequest(argv=("/usr/bin/python3", "-S", "-c", PROBE), cwd="/",
                            audit_tag=0x80000123)
    async with open_launcher("namespaces") as launcher:
        before = _ids(launcher.pid)
        for _ in range(3):
            r, w = os.pipe()
            p = await launcher.launch(POLICY, request, stdio=(r, 1, 2))
            os.close(r)
            parent = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[1]
            print("parent", int(parent) == launcher.pid, p.audit_session, _ids(p.pid)[0],
                  flush=True)
            os.close(w)
            await p.wait_exited()
        print("server", before == _ids(launcher.pid), before[0], flush=True)
trio.run(main)
"""


@pytest.mark.parametrize(("prefix", "own"), [
    # A loginuid of its own: written back, it would come with a new session id.
    ((), "4242"),
    # Without CAP_AUDIT_CONTROL the kernel would not let it unset the tag again (the probe
    # finds out in a child); an outer launcher sets a tag from unset without it.
    (("setpriv", "--bounding-set", "-audit_control"), "-"),
])
def test_the_outer_tags_the_session_where_the_fork_server_cannot_lend(
        prefix: tuple[str, ...], own: str) -> None:
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([*prefix, sys.executable, "-c", NOT_LENT, root, own],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    parents = [line.split() for line in lines if line.startswith("parent")]
    printed = [line for line in lines if line.isdigit() and line != "13"]  # the sessions'
    assert [p[1] for p in parents] == ["False"] * 3, done.stdout
    assert all(int(p[2]) > 0 and p[3] == str(0x80000123) for p in parents), done.stdout
    assert printed == [p[2] for p in parents], done.stdout
    assert f"server True {UNSET if own == '-' else own}" in done.stdout, done.stdout


#: A fork server's lender whose probe passed, after which the kernel stopped letting it
#: unset its loginuid (here: no CAP_AUDIT_CONTROL; on a host, loginuids made immutable).
REFUSED_BACK = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from nonod.sandbox._loginuid import Lender
lender = Lender()
lender._fd = os.open("/proc/self/loginuid", os.O_RDWR | os.O_CLOEXEC)
lender._usable = True  # as if probed before the change
pid = lender.fork(0x80000123, os.fork)
if pid == 0:
    os._exit(0)
print("went on", open("/proc/self/loginuid").read(), flush=True)
"""


def test_a_fork_server_that_cannot_take_its_loginuid_back_ends() -> None:
    """Fail closed: it would carry the session's tag and audit session into every process it
    made afterwards."""
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(["setpriv", "--bounding-set", "-audit_control", sys.executable,
                           "-c", REFUSED_BACK, root],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 70, (done.returncode, done.stdout, done.stderr)
    assert "went on" not in done.stdout
    assert "loginuid not taken back" in done.stderr
