"""Resource limits through the daemon, against the real kernel's cgroups (v1 on the project's
test host): a session is killed at its memory limit, stopped at its pid cap, and accounted."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonoctl.client import Client
from nonod.cgroups import open_backend
from nonod.control import protocol as p

from .conftest import DaemonThread

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


def test_a_session_past_its_memory_limit_is_killed_with_reason_oom(
        client: Client, profile: Path, short_tmp: Path) -> None:
    (short_tmp / "alloc.py").write_text(ALLOCATE)
    neighbour = launch(client, profile, short_tmp, [PY, "-S", "-c", "import time; time.sleep(60)"],
                       memory=32 << 20)
    hog = launch(client, profile, short_tmp, [PY, "-S", "alloc.py"], memory=32 << 20)
    layer = {lay.name: lay for lay in (hog.enforcement.layers if hog.enforcement else ())}
    assert layer["limits"].state == "applied", layer["limits"]
    ended = wait_ended(client, hog.id)
    assert ended.reason == "oom"
    assert ended.usage is not None and ended.usage.oom_kills >= 1
    assert ended.usage.memory_peak_bytes <= 32 << 20
    assert ended.limits is not None and ended.limits.memory == 32 << 20
    # The neighbour and the daemon are untouched, and answer at once.
    started = time.monotonic()
    live = {s.id: s for s in client.sessions()}
    assert time.monotonic() - started < 1.0
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
    # The first launch of a kind is cold; the next ones find warm launchers made for it,
    # which the fork server moves into the session's groups before handing over the plan.
    sessions = [launch(client, profile, short_tmp, [PY, "-S", "-c", "import time; time.sleep(60)"])
                for _ in range(3)]
    for session in sessions:
        assert session.pid is not None
        lines = Path(f"/proc/{session.pid}/cgroup").read_text().splitlines()
        for controller in ("memory", "pids", "cpuacct"):
            path = next(line.split(":")[2] for line in lines
                        if controller in line.split(":")[1].split(","))
            assert path.endswith(f"/{session.id}"), (controller, path)
        assert client.inspect(session.id).usage.pids >= 3  # type: ignore[union-attr]
        client.stop(session.id, force=True)
