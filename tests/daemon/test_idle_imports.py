"""What an idle daemon has loaded: the modules its idle paths use, and not the others.

Each module loaded at idle is memory the daemon holds for as long as it runs (issue 15's
"daemon at idle" row). The daemon runs here as ``nonod`` runs, through its entry point
(``nonod.__main__.main``), under a probe that only adds a SIGUSR2 handler writing the names
of the modules in ``sys.modules`` to a pipe; it serves one client that launches
``/bin/true``, then is asked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonoctl.client import Client
from nonod import protocol as p

from .conftest import session_env, wait_pid_gone

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import os, signal, sys
fd = int(sys.argv.pop(1))
def tell(*_):
    os.write(fd, " ".join(sorted(k for k, v in sys.modules.items() if v)).encode())
    os.close(fd)
signal.signal(signal.SIGUSR2, tell)
from nonod.__main__ import main
sys.exit(main(sys.argv[1:]))
"""

# Loaded by no idle path. Each of them was, before (docs/benchmarks.md, issue 15).
NOT_AT_IDLE = (
    "importlib.metadata", "email", "zipfile", "csv", "importlib.readers",  # trio-websocket's
    "difflib",  # suggestions for a mistaken profile key, the diff of a saved approval
    "rich", "cryptography",  # structlog's pretty tracebacks, the trust keys
    "typing_extensions",  # msgspec's type-hint introspection (nonod._lean)
    "asyncio",  # structlog's async logging methods, which need an asyncio loop (nonod._lean)
    "pickle",  # structlog's, for one exception class (nonod._lean)
    "ssl", "_ssl",  # trio's and trio-websocket's TLS streams, a webhook's client (nonod._lean)
    "_hashlib",  # OpenSSL's libcrypto, for trio's hmac: built-in digests instead (nonod._lean)
    "nonod.proxy._server", "nonod.proxy._reverse", "nonod.credentials._keychain",
    "nonod.credentials._session_ca",
    "nonod.trust._policy", "nonod.trust._verify",  # a launch that finds no trust policy
)


def _loaded(name: str, modules: set[str]) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.fixture
def idle_modules(short_tmp: Path) -> Iterator[set[str]]:
    """What the daemon has loaded once a client has launched /bin/true and gone."""
    socket_path = short_tmp / "run" / "nonod.sock"
    env = {**session_env(short_tmp), "PYTHONPATH": str(REPO),
           "XDG_STATE_HOME": str(short_tmp / "state"),
           "XDG_CONFIG_HOME": str(short_tmp / "config")}
    read_end, write_end = os.pipe()
    try:
        started = subprocess.run(
            [sys.executable, "-c", PROBE, str(write_end), "--daemonize",
             "--socket", str(socket_path)],
            pass_fds=(write_end,), env=env, capture_output=True, text=True, timeout=60,
            check=False)
    finally:
        os.close(write_end)
    assert started.returncode == 0, started.stderr
    pid = 0
    try:
        with Client(socket_path, autostart=False, timeout=30) as nono:
            status = nono.status()
            pid = status.pid
            launched = nono.launch(["/bin/true"], cwd=str(short_tmp), env=session_env(short_tmp),
                                   stdio="null", options=p.LaunchOptions(allow_cwd=True))
            assert nono.wait(launched.id).exit_code == 0
            nono.prune()
        os.kill(pid, signal.SIGUSR2)
        with os.fdopen(read_end, "rb") as pipe:
            yield set(pipe.read().decode().split())
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            assert wait_pid_gone(pid)


def test_an_idle_daemon_has_not_loaded_what_no_idle_path_uses(idle_modules: set[str]) -> None:
    assert {"nonod.sessions", "nonod.control._server", "trio_websocket"} <= idle_modules
    assert [name for name in NOT_AT_IDLE if _loaded(name, idle_modules)] == []


def test_structlog_still_reaches_asyncio_when_asked() -> None:
    """The stand-in structlog imported instead of asyncio loads the real module on first use:
    structlog's async methods fail as they always did outside an asyncio loop."""
    probe = ("import sys; from nonod import _lean; _lean.import_structlog(); "
             "print('asyncio' in sys.modules); import structlog.stdlib as s\n"
             "try:\n s.asyncio.get_running_loop()\nexcept RuntimeError as exc:\n print(exc)\n"
             "print(sys.modules['asyncio'].get_running_loop is s.asyncio.get_running_loop)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO)}).stdout.split("\n")
    assert out[:3] == ["False", "no running event loop", "True"]


HASH_PROBE = """
import sys
from nonod import _lean
_lean.import_hashlib()
_lean.import_trio_websocket()  # trio imports hmac: the stand-in's reason
import hashlib, hmac
maps = open("/proc/self/maps").read()
print("_hashlib" in sys.modules, "libcrypto" in maps)
ours = [hashlib.new(name, b"nono").hexdigest() for name in ("sha256", "sha1", "md5", "sha512",
        "blake2b", "sha3_256")]
mac = hmac.new(b"key", b"message", hashlib.sha256).hexdigest()
same = (hmac.compare_digest(b"abc", b"abc"), hmac.compare_digest(b"abc", b"abd"))
key = hashlib.scrypt(b"password", salt=b"salt", n=16, r=1, p=1)
import _hashlib  # loaded by scrypt: the real library, as ssl would load it
theirs = [_hashlib.new(name, b"nono").hexdigest() for name in ("sha256", "sha1", "md5",
          "sha512", "blake2b", "sha3_256")]
print(ours == theirs, mac == _hashlib.hmac_digest(b"key", b"message", "sha256").hex(), same,
      key == _hashlib.scrypt(b"password", salt=b"salt", n=16, r=1, p=1),
      hmac.compare_digest.__module__, "libcrypto" in open("/proc/self/maps").read())
"""


def test_hashlib_and_hmac_run_without_openssl_and_agree_with_it() -> None:
    out = subprocess.run([sys.executable, "-c", HASH_PROBE], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO)}).stdout.splitlines()
    assert out[0] == "False False"  # not loaded, not mapped
    # the same digests and HMAC as OpenSSL's; a constant-time comparison (CPython's own)
    assert out[1] == "True True (True, False) True _operator True"


TLS_PROBE = """
import sys
from nonod import _lean
_lean.import_trio_websocket()
print("ssl" in sys.modules)
import ssl, trio, trio.testing, trustme

async def handshake():
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("peer.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    left, right = trio.testing.memory_stream_pair()
    server = trio.SSLStream(left, server_ctx, server_side=True)
    client = trio.SSLStream(right, client_ctx, server_hostname="peer.test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    await client.send_all(b"ping")
    print((await server.receive_some(4)).decode())

trio.run(handshake)
print(trio._ssl._stdlib_ssl.SSLError is ssl.SSLError)
"""


def test_trio_still_reaches_ssl_when_asked() -> None:
    """trio and trio-websocket are imported with a stand-in for ssl (nonod._lean): a TLS
    stream made afterwards works as it always did, with the real module's classes."""
    out = subprocess.run([sys.executable, "-c", TLS_PROBE], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO)}).stdout.split("\n")
    assert out[:3] == ["False", "ping", "True"]
