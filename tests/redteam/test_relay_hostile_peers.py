"""Hostile peers against the pump's loop in ``relay.c``, built as shipped and with ASan and
UBSan (``tests/redteam/_relay_hostile.py``: hundreds of tunnels at once, messages around
64 KiB, half-closes, resets in the middle of a message, stalled readers under small
buffers, high and reused descriptor numbers; every byte checked in order, every tunnel's end
and counts).

Found and closed (thirty-sixth pass): the pump served a wait's records one by one and routed
a tunnel back to ``relay.c`` as soon as its record was served; a later record of the same wait
could be of the same tunnel (its other socket: after one tunnel's spill, every other event of
that wait comes back to Python, each tunnel unrouted with its first record). Python then served
a tunnel ``relay.c`` relayed: bytes it held were passed by (reordered), or waited on a socket
``relay.c`` had taken out of the epoll at a half-close (64 KiB lost, the tunnel stuck until its
idle timeout). The spill can be another session's tunnel (the pump is the daemon's, every
session's): one session's slow reader corrupted or stalled the tunnels of others. Before the
fix each of these runs failed (bytes missing or out of order, a tunnel stuck routed while
Python held 64 KiB of it); now every tunnel is routed again only after the whole wait is
served.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nonod.proxy import _pump

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "nonod" / "proxy" / "relay.c"


def runtime(name: str) -> str:
    found = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                           check=True).stdout.strip()
    if not os.path.isabs(found):
        pytest.fail(f"{name} (the sanitizer runtime) is not installed")
    return found


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """relay.c as proxy7 reviewed it: ASan and UBSan, every report fatal."""
    library = tmp_path_factory.mktemp("relay") / "libnonorelay-asan.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-Wall",
                    "-Wextra", "-Werror", "-o", str(library), str(SOURCE)], check=True)
    return library


def hostile_run(library: Path, seed: int, tunnels: int, *, sanitizers: bool) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if sanitizers:
        env.update(LD_PRELOAD=f"{runtime('libasan.so')}:{runtime('libubsan.so')}",
                   ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    done = subprocess.run(
        [sys.executable, "-m", "tests.redteam._relay_hostile", str(library), str(seed),
         str(tunnels)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = done.stdout[-4000:] + done.stderr[-4000:]
    assert "AddressSanitizer" not in done.stderr and "runtime error" not in done.stderr, report
    assert done.returncode == 0 and done.stdout.strip() == f"ok {tunnels}", report


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_peers_through_relay_c_as_shipped(seed: int) -> None:
    library = Path(_pump.__file__).with_name("libnonorelay.so")
    if not library.is_file():
        pytest.fail("libnonorelay.so is not built: run make")
    hostile_run(library, seed, 300, sanitizers=False)


def test_hostile_peers_through_relay_c_with_sanitizers(sanitized: Path) -> None:
    hostile_run(sanitized, 3, 300, sanitizers=True)
