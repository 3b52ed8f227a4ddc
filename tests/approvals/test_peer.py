"""Which process asked: the lookup a program's question makes the daemon do (real /proc).

A session's processes may hold millions of descriptors (thousands of processes, 20,000 each
here); finding the holder of the asking socket reads one link per descriptor, in the daemon,
for every question the program asks. The lookup is bounded whatever the session holds
(red team, twelfth pass).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nonod.approvals._peer import MAX_DESCRIPTORS, find_client

HOARD = """
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(min(hard, 20000) - 64)]
print(len(fds), flush=True)
sys.stdin.read()
"""

HOLD = """
import socket, sys
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1)]
print(" ".join(str(s.getsockname()[1]) for s in held), flush=True)
sys.stdin.read()
"""


def test_a_question_looks_at_a_bounded_number_of_descriptors() -> None:
    """Four processes holding about 80,000 descriptors come before the one that asked (in
    /proc's order): the lookup gives up after 4,096 of them (``MAX_DESCRIPTORS``) (the approval then
    names the session's program) instead of reading them all (before: about 0.5 s of the
    daemon's CPU per question here, and no bound at all). Counted in links read, and in the
    asking thread's CPU time (wall time grows with whatever else the host runs)."""
    server = socket.create_server(("127.0.0.1", 0))
    hoarders = [subprocess.Popen([sys.executable, "-S", "-c", HOARD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(4)]
    holder = None
    try:
        held = sum(int(h.stdout.readline()) for h in hoarders if h.stdout is not None)
        assert held > 70000
        holder = subprocess.Popen([sys.executable, "-S", "-c", HOLD,
                                   str(server.getsockname()[1])],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        links = 0
        readlink = os.readlink

        def counted(path: str) -> str:  # the real readlink, counted
            nonlocal links
            links += 1
            return readlink(path)

        start = time.thread_time()  # this thread's CPU: what other loads on the host
        with pytest.MonkeyPatch.context() as patch:  # do not make longer
            patch.setattr(os, "readlink", counted)
            found = find_client(os.getpid(), port)
        took = time.thread_time() - start
        print(f"{held} descriptors held before the asker; the lookup read {links} links in "
              f"{took * 1000:.0f} ms of CPU and found {found}")
        assert found is None or found[0] == holder.pid
        assert links <= MAX_DESCRIPTORS
        assert took < 0.25
    finally:
        for process in [*hoarders, *([holder] if holder else [])]:
            process.kill()
            process.wait()
        server.close()


PIDS = Path("/sys/fs/cgroup/pids")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not PIDS.is_dir(),
                    reason="needs root and the v1 pids hierarchy (a session's own group)")
def test_the_asker_is_found_among_few_descriptors() -> None:
    """The ordinary case still names the process: a session's few descriptors are within
    the bound, wherever its group is on the host (here v1's ``pids``, whose group the
    daemon gives each session on a hybrid host: the whole host's descriptors, which a busy
    host has more of than the bound, are not looked at)."""
    _asker_in_its_own_group_is_named(hoarders=0)


async def test_one_sessions_questions_leave_the_daemons_worker_threads_to_the_others(
        ) -> None:
    """16 questions of one session at once, each lookup slowed by descriptors its processes
    hold: they run in that session's own two threads, and none of the daemon's shared worker
    threads (trio's default pool, which every session's file reads and launches draw from)
    is taken (before: one for each question, up to the pool's 40 for three sessions)."""
    import trio

    from nonod.approvals import ApprovalQueue, Pending, SessionAsker, SessionFacts
    from nonod.policy import ApprovalBackend, ApprovalPolicy
    from nonod.proxy import ApprovalAsk, Verdict

    async def deny(backend: ApprovalBackend, pending: Pending, deadline: float
                   ) -> tuple[Verdict, str]:
        return "deny", "webhook:w"

    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    hoarders = [subprocess.Popen([sys.executable, "-S", "-c", HOARD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    holder = None
    try:
        for h in hoarders:
            assert h.stdout is not None and int(h.stdout.readline()) > 0
        holder = subprocess.Popen([sys.executable, "-S", "-c", HOLD,
                                   str(server.getsockname()[1]), "16"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        ports = [int(p) for p in holder.stdout.readline().split()]
        policy = ApprovalPolicy(backend="w", timeout_secs=30, backends=(
            ApprovalBackend(name="w", type="webhook", url="https://h.example", key="k"),))
        asker = SessionAsker(queue=ApprovalQueue(), policy=policy, timeout=30,
                             facts=SessionFacts(session_id="s1", name="a", owner_uid=0,
                                                pid=os.getpid(), command=("a",),
                                                profile=None),
                             record=lambda _r: None, webhook=deny)
        shared = trio.to_thread.current_default_thread_limiter()
        taken = [0]
        verdicts: list[Verdict] = []

        async def one(port: int) -> None:
            verdicts.append(await asker(ApprovalAsk(mode="connect", host=f"h{port}.example",
                                                    port=443, client_port=port)))

        async with trio.open_nursery() as nursery:
            for port in ports:
                nursery.start_soon(one, port)
            while len(verdicts) < len(ports):
                taken[0] = max(taken[0], shared.borrowed_tokens)
                await trio.sleep(0.001)
        print(f"shared worker threads taken at most: {taken[0]}")
        assert verdicts == ["deny"] * 16
        assert taken[0] == 0
    finally:
        for process in [*hoarders, *([holder] if holder else [])]:
            process.kill()
            process.wait()
        server.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not PIDS.is_dir(),
                    reason="needs root and the v1 pids hierarchy (a session's own group)")
def test_the_asker_in_its_sessions_group_is_found_past_the_hosts_descriptors() -> None:
    """A session in a v1 group of its own (hybrid hosts: the v2 tree holds no session groups)
    is looked for there: its asker is named however many descriptors the host's other
    processes hold. Before: the v2 group alone was read, every process on the host was
    looked at, and the bound ran out first (no name)."""
    _asker_in_its_own_group_is_named(hoarders=2)


def _asker_in_its_own_group_is_named(*, hoarders: int) -> None:
    """``hoarders`` processes holding about 20,000 descriptors each start first; then the
    asker, in a v1 ``pids`` group of its own, as a session's program is: it is named."""
    server = socket.create_server(("127.0.0.1", 0))
    hoarding = [subprocess.Popen([sys.executable, "-S", "-c", HOARD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(hoarders)]
    holder = None
    group = PIDS / f"nono-test-peer-{os.getpid()}"
    group.mkdir()
    try:
        held = sum(int(h.stdout.readline()) for h in hoarding if h.stdout is not None)
        assert held >= 4096 * hoarders  # past the lookup's bound, with any hoarder
        holder = subprocess.Popen([sys.executable, "-S", "-c", HOLD,
                                   str(server.getsockname()[1])],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        (group / "cgroup.procs").write_text(str(holder.pid))
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        found = find_client(holder.pid, port)
        assert found is not None and found[0] == holder.pid
    finally:
        for process in [*hoarding, *([holder] if holder else [])]:
            process.kill()
            process.wait()
        server.close()
        group.rmdir()


def _entries_without_a_socket(port: int) -> int:
    """Entries of this namespace's TCP table on local ``port`` with no socket inode."""
    count = 0
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        count += int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] == "0"
    return count


#: An asker that connects from a given local port (``argv[2]``), as a second connection may.
HOLD_FROM = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[2])))
s.connect(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not PIDS.is_dir(),
                    reason="needs root and the v1 pids hierarchy (a session's own group)")
def test_connections_past_on_the_askers_port_do_not_hide_it() -> None:
    """Another connection's TIME_WAIT entry on the same local port (a busy host reuses its
    ephemeral ports; a closed connection's entry stays a minute) has no socket inode: the
    lookup went no further than the first entry it met for the port, and when that was one of
    these, named no one (seen under load: 848 such entries on this host). Here 30 of them
    share the port of an asker in a group of its own (as a session's program is: the host's
    other processes, whose descriptors would spend the lookup's bound, are not looked at):
    the asker is still named."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(31)]
    holder = None
    group = PIDS / f"nono-test-peer-ports-{os.getpid()}"
    group.mkdir()
    try:
        with socket.socket() as first:  # a port of its own, then its TIME_WAITs
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
        for listener in listeners[:30]:
            past = socket.socket()
            past.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            past.bind(("127.0.0.1", port))
            past.connect(listener.getsockname())
            accepted = listener.accept()[0]
            past.close()  # closed first: TIME_WAIT on its side once the peer closes too
            accepted.close()
        holder = subprocess.Popen([sys.executable, "-S", "-c", HOLD_FROM,
                                   str(listeners[30].getsockname()[1]), str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        (group / "cgroup.procs").write_text(str(holder.pid))
        assert holder.stdout is not None and int(holder.stdout.readline()) == port
        assert _entries_without_a_socket(port) >= 30
        found = find_client(holder.pid, port)
        assert found is not None and found[0] == holder.pid
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        for listener in listeners:
            listener.close()
        group.rmdir()
