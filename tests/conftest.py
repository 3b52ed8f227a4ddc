"""Shared fixtures: who runs the sandbox (root or an unprivileged uid) and how."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from hypothesis import settings

from nonod.policy import ResolvedPolicy
from nonod.sandbox import LaunchRequest, _cinit, _reaper

# How long one example takes is not a property of the code under test: on a shared 2-CPU
# machine it follows the load, and hypothesis's default 200 ms deadline then fails at random.
settings.register_profile("nono", deadline=None)
settings.load_profile("nono")

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "sandbox_runner.py"
NOBODY = 65534
#: An unprivileged uid of this run's own: no account, no other process on the host (this
#: process's pid is in it). For tests that use up what the kernel counts per user (inotify
#: instances), which every concurrent run's sessions as ``nobody`` share with them.
OWN_UID = 0x70000000 + os.getpid()


def _python_reachable_by(uid: int) -> list[str] | None:
    """argv prefix that runs our interpreter (with nonod importable) as ``uid``, or None."""
    probe = [sys.executable, "-c", "import nonod.sandbox, trio"]
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *probe]
    ok = subprocess.run(cmd, capture_output=True, cwd="/", check=False).returncode == 0
    return [sys.executable] if ok else None


@pytest.fixture(scope="session")
def staged_python() -> Iterator[tuple[list[str], dict[str, str]]]:
    """An interpreter and PYTHONPATH another uid can use (the checkout may be under /root)."""
    direct = _python_reachable_by(NOBODY)
    if direct is not None:
        yield direct, {}
        return
    base = Path(tempfile.mkdtemp(prefix="nono-unpriv-", dir="/tmp"))
    base.chmod(0o755)
    site = base / "site"
    import msgspec as _msgspec

    packages = Path(_msgspec.__file__).resolve().parent.parent
    shutil.copytree(packages, site, symlinks=True, ignore=shutil.ignore_patterns(
        "mypy", "mypyc", "pip", "ruff", "__pycache__", "__editable__*", "*.pth"))
    shutil.copytree(REPO / "nonod", site / "nonod", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests", site / "tests", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "profiles", base / "profiles")
    shutil.copy(RUNNER, base / RUNNER.name)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    interp = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    yield [interp], {"PYTHONPATH": str(site)}
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@dataclass
class SandboxUser:
    """Runs programs in a sandbox as ``uid`` (0 = root's own path)."""

    name: str
    uid: int
    python: list[str]
    env: dict[str, str]

    def chown(self, *paths: Path) -> None:
        for path in paths:
            os.chown(path, self.uid, self.uid)

    def run(self, policy: ResolvedPolicy, argv: Sequence[str], *, cwd: str,
            env: Sequence[tuple[str, str]] = (), stdin: bytes = b"",
            timeout: float = 60, umask: int = -1) -> Result:
        request = LaunchRequest(argv=tuple(argv), cwd=cwd, env=tuple(env))
        return self.run_request(policy, request, stdin=stdin, timeout=timeout, umask=umask)

    def run_with_pins(self, policy: ResolvedPolicy, argv: Sequence[str], *, cwd: str,
                      pins: tuple[tuple[str, bytes], ...], umask: int = -1) -> Result:
        request = LaunchRequest(argv=tuple(argv), cwd=cwd, pins=pins)
        return self.run_request(policy, request, umask=umask)

    def run_request(self, policy: ResolvedPolicy, request: LaunchRequest, *,
                    stdin: bytes = b"", timeout: float = 60, nouserns: bool = False,
                    umask: int = -1) -> Result:
        """``nouserns``: under ``tests/nouserns.py`` (the kernel refuses new namespaces).
        ``umask``: the runner's (and so its fork server's) umask; -1 leaves ours."""
        line = msgspec.json.encode({"policy": policy, "request": request}) + b"\n"
        runner = str(RUNNER)
        tests = RUNNER.parent
        if self.env.get("PYTHONPATH"):
            runner = str(Path(self.env["PYTHONPATH"]).parent / RUNNER.name)
            tests = Path(self.env["PYTHONPATH"]) / "tests"
        cmd = [*self.python, runner]
        if nouserns:
            cmd = [*self.python, str(tests / "nouserns.py"), *cmd]
        if self.uid != 0:
            cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                   *cmd]
        proc_env = {"PATH": "/usr/bin:/bin", **self.env}
        # a debug build of the reaper (make reaper-asan); warm launches (sandbox_runner)
        for name in (_reaper.OVERRIDE, _cinit.FORCE_PYTHON, "NONO_TEST_WARM_INIT",
                     "NONO_TEST_INIT_LOG"):
            if os.environ.get(name):
                proc_env[name] = os.environ[name]
        proc = subprocess.run(cmd, input=line + stdin, capture_output=True, timeout=timeout,
                              env=proc_env, cwd="/", check=False, umask=umask)
        return Result(proc.returncode, proc.stdout.decode(errors="replace"),
                      proc.stderr.decode(errors="replace"))


@pytest.fixture(params=["root", "unprivileged"])
def sandbox_user(request: pytest.FixtureRequest,
                 staged_python: tuple[list[str], dict[str, str]]) -> SandboxUser:
    if os.getuid() != 0:
        return SandboxUser("self", os.getuid(), [sys.executable], {})
    if request.param == "root":
        return SandboxUser("root", 0, [sys.executable], {})
    python, env = staged_python
    if request.param == "own":  # (parametrized indirectly, for the tests that ask for it)
        return SandboxUser("own", OWN_UID, python, env)
    return SandboxUser("unprivileged", NOBODY, python, env)


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temp dir any uid can enter (pytest's tmp_path is 0700 under /tmp/pytest-of-root)."""
    path = Path(tempfile.mkdtemp(prefix="nono-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
