"""``nonoctl`` as a user runs it: a subprocess against a real daemon and real sessions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from .conftest import DaemonThread, session_env, wait_pid_gone

REPO = Path(__file__).resolve().parents[2]
GITBOT = REPO / "profiles" / "gitbot.json"
COMMANDS = ("launch", "run", "ps", "inspect", "stop", "wait", "logs", "attach", "prune",
            "daemon", "profile", "doctor", "completion", "secret", "events", "approvals",
            "approve", "deny")


def cli_env(daemon_socket: Path, base: Path, **extra: str) -> dict[str, str]:
    env = session_env(base)
    env.update({"NONO_SOCKET": str(daemon_socket), "NONO_NO_AUTOSTART": "1",
                "PYTHONPATH": str(REPO), **extra})
    return env


def nonoctl(
    args: Sequence[str], *, env: dict[str, str], cwd: Path, stdin: bytes = b"",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nonoctl", *args], input=stdin.decode(), capture_output=True,
        text=True, env=env, cwd=cwd, timeout=timeout, check=False,
    )


class CLI:
    """Runs ``nonoctl`` against one daemon, from one working directory."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        return nonoctl(args, env=self.env, cwd=self.cwd, stdin=stdin)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "nonoctl", *args], env=self.env,
                                cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


def test_help_lists_every_command(short_tmp: Path) -> None:
    done = nonoctl(["--help"], env=cli_env(short_tmp / "none.sock", short_tmp), cwd=short_tmp)
    assert done.returncode == 0
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ")}
    assert set(COMMANDS) - {"run"} <= listed
    assert "launch (run)" in done.stdout


@pytest.mark.parametrize(
    ("command", "status"),
    [
        (["sh", "-c", "exit 7"], 7),
        (["sh", "-c", "kill -9 $$"], 137),
        (["sh", "-c", "kill -TERM $$"], 143),
        (["true"], 0),
        (["/no/such/program"], 127),
    ],
)
def test_attached_launch_exits_like_the_program(run: CLI, command: list[str], status: int) -> None:
    done = run("launch", "--allow-cwd", "--", *command)
    assert done.returncode == status, done.stderr


@pytest.mark.parametrize("how", ["path", "in-PATH", "directory"])
def test_a_command_that_exists_but_cannot_run_exits_126(run: CLI, how: str) -> None:
    """As a shell: 126 for a file without execute permission (or a directory), 127 only for
    a command that is not there (docs/cli.md)."""
    bin_dir = run.cwd / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tool"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    env = {**run.env, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    target = {"path": str(script), "in-PATH": "tool", "directory": str(bin_dir)}[how]
    done = nonoctl(["launch", "--allow-cwd", "--", target], env=env, cwd=run.cwd)
    assert done.returncode == 126, done.stderr
    assert "not an executable file" in done.stderr and "ran" not in done.stdout


def test_attached_launch_reads_the_callers_stdin_and_writes_its_stdout(run: CLI) -> None:
    done = run("run", "--allow-cwd", "--", "/usr/bin/python3", "-c",
               "import sys; print('got', input()); print('to stderr', file=sys.stderr)",
               stdin=b"hello there\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "got hello there\n"
    assert "to stderr" in done.stderr


def test_a_refused_launch_has_its_own_status_and_one_line_reason(run: CLI) -> None:
    done = run("launch", "no-such-profile", "--", "true")
    assert done.returncode == 125
    assert done.stderr.startswith("nonoctl: no profile named `no-such-profile`")
    done = run("launch", "--allow-cwd")
    assert done.returncode == 2
    assert "give one after `--`" in done.stderr


def test_signals_are_forwarded_to_the_program(run: CLI) -> None:
    program = ("import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(5)); "
               "print('ready', flush=True); time.sleep(600)")
    proc = run.popen("launch", "--allow-cwd", "--", "/usr/bin/python3", "-c", program)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 5


def test_detached_session_commands(run: CLI, short_tmp: Path) -> None:
    started = run("launch", "-d", "--name", "web", "--allow-cwd", "--", "sh", "-c",
                  "echo out-line; exec sleep 600")
    assert started.returncode == 0, started.stderr
    session_id = started.stdout.strip()
    assert len(session_id) == 8

    listed = run("ps", "--json")
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [session_id]
    assert set(rows[0]) >= {"id", "name", "state", "pid", "profile", "argv", "started_at",
                            "ended_at", "exit_code", "signal", "enforcement"}
    assert rows[0]["name"] == "web" and rows[0]["state"] == "running"
    human = run("ps")
    assert "web" in human.stdout and "running" in human.stdout

    detail = json.loads(run("inspect", "web", "--json").stdout)
    assert detail["cwd"] == str(short_tmp)
    assert detail["enforcement"]["layers"]

    follow = run.popen("logs", "--output", "-f", "web")
    assert follow.stdout is not None
    assert follow.stdout.readline() == b"out-line\r\n"

    assert run("stop", "web", "--timeout", "5").returncode == 0
    assert follow.wait(60) == 0
    waited = run("wait", "web")
    assert waited.returncode == 128 + 15
    logs = run("logs", "--output", "web")
    assert logs.stdout == "out-line\n"  # (text mode turns the terminal's \r\n into \n)
    first = run("logs", "--output", "web", "--json").stdout.splitlines()[0]
    assert json.loads(first)["data"] == "out-line\r\n"
    assert run("ps", "--json").stdout.strip() == "[]"
    ended = json.loads(run("ps", "--all", "--json").stdout)
    assert (ended[0]["state"], ended[0]["signal"]) == ("exited", 15)
    audit_files = list(short_tmp.rglob("audit.ndjson"))
    assert run("prune").returncode == 0
    assert json.loads(run("ps", "-a", "--json").stdout) == []
    # The audit trail outlives prune (only [audit] keep_* retention removes it).
    assert audit_files and all(path.exists() for path in audit_files)
    assert not [p for p in audit_files if (p.parent / "session.json").exists()]
    missing = run("inspect", "web")
    assert missing.returncode == 1
    assert "no session 'web'" in missing.stderr


def test_dry_run_shows_the_policy_and_runs_nothing(run: CLI, short_tmp: Path) -> None:
    done = run("launch", "--allow-cwd", "--read", "/etc", "--dry-run", "--json", "--",
               "touch", "marker")
    assert done.returncode == 0, done.stderr
    policy = json.loads(done.stdout)["policy"]
    assert {"path": str(short_tmp), "access": "readwrite"}.items() <= next(
        g for g in policy["grants"] if g["path"] == str(short_tmp)).items()
    assert not (short_tmp / "marker").exists()


def test_profiles(run: CLI, short_tmp: Path) -> None:
    listed = run("profile", "list", "--json")
    names = {entry["name"] for entry in json.loads(listed.stdout)}
    assert {"default", "gitbot"} <= names
    shown = run("profile", "show", "gitbot", "--resolved", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "api.github.com" in json.loads(shown.stdout)["network"]["allow_domain"]
    assert run("profile", "validate", str(GITBOT)).returncode == 0
    bad = short_tmp / "bad.json"
    bad.write_text('{"filesystem": {"raed": ["/etc"]}}')
    invalid = run("profile", "validate", "bad.json")
    assert invalid.returncode == 1
    assert "raed" in invalid.stderr


def test_daemon_status_and_unreachable_daemon(run: CLI, short_tmp: Path) -> None:
    status = run("daemon", "status", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["pid"] == os.getpid()
    env = cli_env(short_tmp / "nobody-home.sock", short_tmp)
    assert nonoctl(["ps"], env=env, cwd=short_tmp).returncode == 122
    down = nonoctl(["daemon", "status"], env=env, cwd=short_tmp)
    assert (down.returncode, down.stdout) == (3, "nonod is not running\n")


def test_autostart_starts_a_user_daemon_and_daemon_stop_stops_it(short_tmp: Path) -> None:
    socket_path = short_tmp / "auto" / "nonod.sock"
    env = cli_env(socket_path, short_tmp, XDG_STATE_HOME=str(short_tmp / "state"),
                  XDG_CONFIG_HOME=str(short_tmp / "config"))
    del env["NONO_NO_AUTOSTART"]
    first = nonoctl(["ps"], env=env, cwd=short_tmp)
    assert first.returncode == 0, first.stderr
    status = json.loads(nonoctl(["daemon", "status", "--json"], env=env, cwd=short_tmp).stdout)
    pid = status["pid"]
    assert pid != os.getpid()
    assert nonoctl(["daemon", "stop"], env=env, cwd=short_tmp).returncode == 0
    assert wait_pid_gone(pid)
    assert not socket_path.exists()


def test_completion_scripts(short_tmp: Path) -> None:
    env = cli_env(short_tmp / "x.sock", short_tmp)
    for shell in ("bash", "zsh", "fish"):
        done = nonoctl(["completion", shell], env=env, cwd=short_tmp)
        assert done.returncode == 0
        assert "nonoctl" in done.stdout and "launch" in done.stdout and "allow-cwd" in done.stdout
        assert "events" in done.stdout and "fs_denied" in done.stdout  # audit event kinds
        binary = shutil.which(shell)
        if binary is not None:
            script = short_tmp / f"completion.{shell}"
            script.write_text(done.stdout)
            check = [binary, "-n", str(script)] if shell != "fish" else [
                binary, "--no-execute", str(script)]
            assert subprocess.run(check, check=False).returncode == 0, shell


def test_session_pid_dies_with_a_stopped_session(run: CLI) -> None:
    started = run("launch", "-d", "--allow-cwd", "--", "sleep", "600")
    detail = json.loads(run("inspect", started.stdout.strip(), "--json").stdout)
    assert run("stop", "--force", started.stdout.strip()).returncode == 0
    assert wait_pid_gone(detail["pid"])


def _read_until(fd: int, needle: bytes, limit: int = 1 << 20) -> bytes:
    seen = b""
    while needle not in seen and len(seen) < limit:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        seen += chunk
    return seen


def test_attach_through_a_terminal_and_detach_with_ctrl_bracket_d(run: CLI) -> None:
    import pty

    started = run("launch", "-d", "--allow-cwd", "--", "cat")
    session_id = started.stdout.strip()
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "nonoctl", "attach", session_id],
                            stdin=slave, stdout=slave, stderr=slave, env=run.env, cwd=run.cwd,
                            start_new_session=True)
    os.close(slave)
    try:
        assert b"detach with Ctrl-] d" in _read_until(master, b"Ctrl-] d")
        os.write(master, b"ping\r")
        assert b"ping" in _read_until(master, b"ping")
        os.write(master, b"\x1d")  # Ctrl-] alone is held back...
        os.write(master, b"d")  # ...and with `d` it detaches
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    state = json.loads(run("inspect", session_id, "--json").stdout)
    assert state["state"] == "running" and state["attached"] is False
    assert "ping" in run("logs", "--output", session_id).stdout
    run("stop", "--force", session_id)


def test_doctor_reports_every_probe(run: CLI) -> None:
    done = run("doctor", "--json")
    findings = json.loads(done.stdout)
    checks = {f["check"] for f in findings}
    assert {"landlock", "user namespaces", "seccomp", "cgroup v2", "TIOCSTI", "keychain",
            "daemon"} <= checks
    assert all(f["status"] in ("ok", "warn", "fail", "info") for f in findings)
    daemon = next(f for f in findings if f["check"] == "daemon")
    assert daemon["status"] == "ok"
    assert done.returncode == (1 if any(f["status"] == "fail" for f in findings) else 0)
