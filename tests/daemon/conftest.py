"""Fixtures for the daemon tests: real sockets, a real daemon, the real sandbox engine.

Two ways to run a daemon:

- ``daemon`` (async tests): ``run_daemon`` started in the test's own trio nursery; the test
  talks to it with the async client or raw trio sockets.
- ``daemon_thread`` (sync tests): ``run_daemon`` in its own trio loop on a thread, so that
  blocking clients, subprocesses (``nonoctl``, other uids) and hypothesis can drive it.

Both use a short directory under /tmp (Unix socket paths are limited to 108 bytes).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from nonoctl.client import Connection
from nonod._config import Config, LoadedConfig, parse_config
from nonod._daemon import DaemonOptions, run_daemon
from nonod._profile_source import ProfilePolicies
from nonod.control import ControlServer
from nonod.sandbox import open_launcher

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
NOBODY = 65534


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nd-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(f"{path}-home", ignore_errors=True)  # session_env's home, beside it


def _loaded(config_text: str | None) -> LoadedConfig:
    if config_text is None:
        return LoadedConfig(config=Config(), path=None)
    return LoadedConfig(config=parse_config(config_text, source="test.toml"), path=None)


@dataclass
class DaemonHandle:
    socket: Path
    state_dir: Path
    server: ControlServer

    def connect(self) -> Connection:
        return Connection.open(self.socket)


@pytest.fixture
async def daemon(short_tmp: Path, nursery: trio.Nursery) -> AsyncIterator[DaemonHandle]:
    handle = await start_daemon(nursery, short_tmp)
    yield handle


async def start_daemon(
    nursery: trio.Nursery, base: Path, *, config: str | None = None, system: bool = False
) -> DaemonHandle:
    socket_path = base / "run" / "nonod.sock"
    options = DaemonOptions(system=system, socket=socket_path, state_dir=base / "state")
    server: ControlServer = await nursery.start(functools.partial(
        run_daemon, _loaded(config), options=options,
        policies=ProfilePolicies(system=system, profile_dir=lambda: None),
        launcher_factory=open_launcher, handle_signals=False,
    ))
    return DaemonHandle(socket=socket_path, state_dir=base / "state", server=server)


@dataclass
class DaemonThread:
    """A daemon on its own thread and trio loop."""

    base: Path
    config: str | None = None
    system: bool = False
    socket_path: Path | None = None
    server: ControlServer | None = None
    #: The daemon's profile source (its resolution cache's counters tell a test whether a
    #: launch's kept resolution held).
    policies: ProfilePolicies | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _token: trio.lowlevel.TrioToken | None = None
    _cancel: trio.CancelScope | None = None
    _error: BaseException | None = None

    @property
    def socket(self) -> Path:
        return self.socket_path or self.base / "run" / "nonod.sock"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def start(self) -> DaemonThread:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to the test thread, which re-raises it
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        options = DaemonOptions(system=self.system, socket=self.socket, state_dir=self.state_dir)
        self.policies = ProfilePolicies(system=self.system, profile_dir=lambda: None)
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                self.server = await nursery.start(functools.partial(
                    run_daemon, _loaded(self.config), options=options,
                    policies=self.policies,
                    launcher_factory=open_launcher, handle_signals=False,
                ))
                self._ready.set()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._thread.is_alive() and self._cancel is not None and self._token is not None:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self._thread.join(60)
        if self._error is not None:
            raise self._error

    def connect(self) -> Connection:
        return Connection.open(self.socket)


@pytest.fixture
def daemon_thread(short_tmp: Path) -> Iterator[DaemonThread]:
    handle = DaemonThread(short_tmp).start()
    yield handle
    handle.stop()


def raw_client(
    socket_path: Path,
    messages: Sequence[dict[str, object]] = (),
    *,
    prefix: Sequence[str] = (),
    timeout: float = 60,
) -> list[str]:
    """Run rawclient.py (as whoever ``prefix`` makes us) and return its output lines."""
    stdin = "".join(json.dumps(m) + "\n" for m in messages)
    done = subprocess.run(
        [*prefix, SYSTEM_PYTHON, str(reachable_script("rawclient.py")), str(socket_path)],
        input=stdin.encode(), capture_output=True, timeout=timeout, check=False, cwd="/",
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


@functools.cache
def reachable_script(name: str) -> Path:
    """A copy of a helper script of this directory (rawclient.py, fakeserver.py) that any uid
    can read: the checkout may sit under /root (0700), as CI's clone can."""
    directory = Path(tempfile.mkdtemp(prefix="nono-script-", dir="/tmp"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    directory.chmod(0o755)
    copy = directory / name
    shutil.copyfile(HERE / name, copy)
    copy.chmod(0o644)
    return copy


@dataclass
class UserDaemon:
    """A real ``nonod`` process run by an unprivileged user (``user_daemon``), and
    ``nonoctl`` run by the same user against it."""

    uid: int
    home: Path
    pid: int = 0

    @property
    def socket(self) -> Path:
        return self.home / "run" / "nonod.sock"

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.home),
                "PYTHONPATH": str(HERE.parents[1]), "NONO_NO_AUTOSTART": "1",
                "XDG_STATE_HOME": str(self.home / "state"),
                "XDG_CONFIG_HOME": str(self.home / "config")}

    def nonoctl(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_user(self.uid), sys.executable, "-m", "nonoctl", "--socket", str(self.socket),
             *args], env=self.env, cwd=cwd or self.home, capture_output=True, text=True,
            timeout=60, check=False)

    def directory(self, name: str) -> Path:
        """A new directory of this user's, under its home."""
        path = self.home / name
        path.mkdir(mode=0o700)
        os.chown(path, self.uid, self.uid)
        return path


@pytest.fixture
def user_daemon(short_tmp: Path) -> Iterator[UserDaemon]:
    """A detached ``nonod`` run by uid 65534 (needs root to switch uids)."""
    if os.geteuid() != 0:
        pytest.skip("running the daemon as another uid needs root")
    home = short_tmp / "user"
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    handle = UserDaemon(NOBODY, home)
    started = subprocess.run(
        [*as_user(NOBODY), sys.executable, "-m", "nonod", "--daemonize", "--socket",
         str(handle.socket)],
        env=handle.env, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert started.returncode == 0, started.stderr
    status = handle.nonoctl("daemon", "status", "--json")
    handle.pid = int(json.loads(status.stdout)["pid"])
    yield handle
    handle.nonoctl("daemon", "stop")
    if not wait_pid_gone(handle.pid, timeout=30):
        os.kill(handle.pid, 9)


def as_user(uid: int, gid: int | None = None) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid if gid is not None else uid}",
            "--clear-groups"]


def session_env(base: Path) -> dict[str, str]:
    """A caller environment that keeps sessions independent of the host's ``/run/user`` and
    ``$HOME`` (a home outside every grant: its denied paths are simply not in the view)."""
    return {"PATH": "/usr/bin:/bin", "HOME": f"{base}-home",
            "XDG_RUNTIME_DIR": f"{base}-home/run"}


def hello() -> dict[str, object]:
    return {"type": "hello", "protocol": 1}


def wait_pid_gone(pid: int, timeout: float = 30) -> bool:
    """True once process ``pid`` has exited (waits on a pidfd, no polling sleeps)."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)
