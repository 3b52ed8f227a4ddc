"""Red team, the system daemon's audit disk, one user at a time: ``[audit]
session_max_bytes`` bounded one session's audit file (1 GiB), but not a user's: one member of
the socket group could run session after session (up to ``max_live_per_uid`` at once), each
writing its gigabyte, and the sealed files stay until retention. ``[audit] user_max_bytes``
bounds all of one uid's audit files, live and sealed, across prunes and restarts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod._config import Config
from tests.daemon.conftest import DaemonThread, as_user, hello, raw_client, session_env
from tests.redteam.test_audit_flood import FLOOD
from tests.redteam.test_other_users import INTRUDER, OWNER, _group

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

BUDGET = 1 << 20


def _daemon(base: Path, group: str) -> DaemonThread:
    return DaemonThread(base, system=True, config=(
        f'[daemon]\nsocket_group = "{group}"\n[audit]\nuser_max_bytes = {BUDGET}\n')).start()


@pytest.fixture
def place() -> Iterator[tuple[Path, str, int]]:
    base = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    base.chmod(0o755)
    name, gid = _group()
    work = base / "work"
    work.mkdir(mode=0o777)
    (work / "flood.py").write_text(FLOOD)
    try:
        yield base, name, gid
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _ask(handle: DaemonThread, uid: int, gid: int,
         *messages: dict[str, object]) -> list[dict[str, object]]:
    lines = raw_client(handle.socket, [hello(), *messages], prefix=as_user(uid, gid))
    return [json.loads(line) for line in lines[1:]]


def _launch(handle: DaemonThread, base: Path, uid: int, gid: int,
            argv: list[str], stdio: str = "null") -> dict[str, object]:
    work = base / "work"
    launch = {"type": "launch", "argv": argv, "cwd": str(work), "env": session_env(work),
              "options": {"allow_cwd": True, "allow_domain": ["example.com"]},
              "detach": True, "stdio": stdio}
    return _ask(handle, uid, gid, launch)[0]


def _sid(reply: dict[str, object]) -> str:
    assert reply["type"] == "launched", reply
    return str(reply["session"]["id"])  # type: ignore[index]


def _refused(reply: dict[str, object]) -> None:
    assert reply["type"] == "error", reply
    assert reply["code"] == "session.limit"
    assert "user_max_bytes" in str(reply["message"])


def test_one_user_cannot_fill_the_audit_disk_with_many_sessions(
        place: tuple[Path, str, int]) -> None:
    base, group, gid = place
    handle = _daemon(base, group)
    try:
        flood = _sid(_launch(handle, base, INTRUDER, gid, ["/usr/bin/python3", "-S", "flood.py"]))
        ended = _ask(handle, INTRUDER, gid, {"type": "wait", "session": flood})[0]
        assert ended["reason"] == "audit_limit", ended  # under session_max_bytes (1 GiB)
        _refused(_launch(handle, base, INTRUDER, gid, ["/bin/true"]))
        other = _sid(_launch(handle, base, OWNER, gid, ["/bin/true"]))  # others still launch
        _ask(handle, OWNER, gid, {"type": "wait", "session": other})
        # forgetting the session's record does not give its audit bytes back
        assert _ask(handle, INTRUDER, gid, {"type": "prune"})[0]["type"] != "error"
        _refused(_launch(handle, base, INTRUDER, gid, ["/bin/true"]))
    finally:
        handle.stop()
    handle = _daemon(base, group)  # nor does a restart (the files are counted from the disk)
    try:
        _refused(_launch(handle, base, INTRUDER, gid, ["/bin/true"]))
        other = _sid(_launch(handle, base, OWNER, gid, ["/bin/true"]))
        _ask(handle, OWNER, gid, {"type": "wait", "session": other})
    finally:
        handle.stop()
    files = list((base / "state").rglob("audit.ndjson"))
    assert sum(f.stat().st_size for f in files) < BUDGET + (512 << 10)


# 4 MiB in paced pieces: a pty session's output that waits on a busy daemon beyond 256 KiB
# is dropped from its log (a `log_gap`), so a burst at once may log less than the budget.
PACED_OUTPUT = ("import os, time\n"
                "for _ in range(64):\n"
                "    os.write(1, b'x' * (64 << 10)); time.sleep(0.01)\n")


def test_output_logs_count_and_prune_gives_them_back(place: tuple[Path, str, int]) -> None:
    # [sessions] log_max_bytes (64 MiB) bounds one session's output.log, and ended sessions
    # keep theirs until pruned: session after session filled the disk the same way.
    base, group, gid = place
    handle = _daemon(base, group)
    try:
        loud = _sid(_launch(handle, base, INTRUDER, gid, [
            "/usr/bin/python3", "-S", "-c", PACED_OUTPUT],
            stdio="pty"))
        assert _ask(handle, INTRUDER, gid, {"type": "wait", "session": loud})[0]["exit_code"] == 0
        logs = list((base / "state").rglob("output.log"))
        assert logs and logs[0].stat().st_size > BUDGET  # kept on the disk
        _refused(_launch(handle, base, INTRUDER, gid, ["/bin/true"]))
        _ask(handle, INTRUDER, gid, {"type": "prune"})
        assert not list((base / "state").rglob("output.log"))
        quiet = _sid(_launch(handle, base, INTRUDER, gid, ["/bin/true"]))  # room again
        _ask(handle, INTRUDER, gid, {"type": "wait", "session": quiet})
    finally:
        handle.stop()


def test_the_per_user_budget_defaults_to_8_gib() -> None:
    assert Config().audit.user_max_bytes == 8 << 30


def test_a_short_sessions_directory_is_charged_what_it_takes_on_disk(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    # Sizes undercount small files by a block each (and their directory by one more): the
    # files of a short session take several times their size, so a user's budget in sizes
    # let it fill that much more of the disk.
    import subprocess

    from nonod.sessions._audit_budget import kept_bytes
    from tests.daemon.test_cli import CLI, cli_env

    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    launched = run("launch", "--detach", "--json", "--allow-cwd", "--block-net", "--", "true")
    assert launched.returncode == 0, launched.stderr
    session = str(json.loads(launched.stdout)["id"])
    assert run("wait", session).returncode == 0
    directory = daemon_thread.state_dir / "sessions" / session
    on_disk = int(subprocess.run(["du", "-s", "-B1", str(directory)], capture_output=True,
                                 text=True, check=True).stdout.split()[0])
    sizes = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    assert sizes < on_disk <= kept_bytes(directory), (sizes, on_disk)
