"""Red team, host runtime state: ``/run`` (and ``/var/run``) hold what services and containers
keep at run time: Kubernetes service-account tokens and container secrets under
``/run/secrets``, systemd credentials under ``/run/credentials``, podman's
``/run/containers/0/auth.json``, service sockets. The base group ``system_read_linux``
granted all of ``/run`` to every session, read-only: a session read any such file (a root
daemon's session also the root-owned 0600 ones). Now no session sees ``/run`` beyond
``/run/systemd/resolve``, whatever is planted there later."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.test_cli import CLI
from tests.redteam._programs import READ

pytestmark = pytest.mark.root

@pytest.fixture
def planted() -> Iterator[tuple[Path, str]]:
    """A token as a Kubernetes pod would hold it, world-readable, in a fresh /run directory."""
    top = Path("/run") / f"nono-redteam-{secrets.token_hex(4)}"
    token = top / "secrets" / "kubernetes.io" / "serviceaccount" / "token"
    token.parent.mkdir(parents=True)
    value = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_hex(16)
    token.write_text(value)
    token.chmod(0o644)
    try:
        yield token, value
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("network", [["--block-net"], ["--allow-domain", "example.com"], []])
def test_no_session_reads_host_runtime_state(run: CLI, short_tmp: Path,
                                             planted: tuple[Path, str],
                                             network: list[str]) -> None:
    token, value = planted
    (short_tmp / "read.py").write_text(READ)
    done = run("launch", "--allow-cwd", *network, "--", "/usr/bin/python3", "-S", "read.py",
               str(token), "/var" + str(token), "/run/systemd")
    assert done.returncode == 0, done.stderr
    assert value not in done.stdout
    assert done.stdout.splitlines() == [f"{token} FileNotFoundError",
                                        f"/var{token} FileNotFoundError",
                                        "/run/systemd FileNotFoundError"]
