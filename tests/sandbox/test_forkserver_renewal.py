"""The fork server's fresh start once work is over (``nonod.sandbox._renewal``).

The rule runs in a fresh interpreter against the real process state it reads (its children,
its memory, the files of its modules); the renewal itself on a real fork server, whose
``prelude`` (code its command line runs first, at each start) counts its starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher

from ..proctree import launchers, wait_until

RULE = """
import os, signal, sys
from nonod.sandbox import _renewal

renewal = _renewal.Renewal(growth=2048)
litter = [bytes(1000) for _ in range(8000)]  # 8 MiB: grown past the limit
pid = os.fork()
if pid == 0:
    signal.pause()
print("child", renewal.due(True))
os.kill(pid, signal.SIGKILL)
print("ended, not reaped", renewal.due(True))
os.waitpid(pid, 0)
print("holding something", renewal.due(False))
print("nothing held", renewal.due(True))
del litter
renewal = _renewal.Renewal(growth=2048)
print("not grown", renewal.due(True))
"""


def _run(code: str, cwd: Path | None = None) -> list[str]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True,
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return done.stdout.splitlines()


def test_it_is_due_once_grown_and_without_a_child_or_anything_held() -> None:
    assert _run(RULE) == ["child False", "ended, not reaped False", "holding something False",
                          "nothing held True", "not grown False"]


def test_a_module_replaced_on_disk_stops_it_for_good(tmp_path: Path) -> None:
    # An upgrade in place: a fresh start would run code the daemon was not started with.
    (tmp_path / "loaded_here.py").write_text("VALUE = 1\n")
    out = _run("""
import os, sys
sys.path.insert(0, os.getcwd())
import loaded_here
from nonod.sandbox import _renewal

renewal = _renewal.Renewal(growth=2048)
litter = [bytes(1000) for _ in range(8000)]
os.replace("loaded_here.py", "old.py")
with open("loaded_here.py", "w") as new:
    new.write("VALUE = 2\\n")
print(renewal.due(True))
os.replace("old.py", "loaded_here.py")  # back as it was: still never
print(renewal.due(True))
""", cwd=tmp_path)
    assert out == ["False", "False"]


def test_a_binary_it_would_load_again_replaced_stops_it(tmp_path: Path) -> None:
    # The reaper's binary, which a fresh start reads into its memfd again.
    (tmp_path / "nono-reaper").write_bytes(b"\x7fELF old")
    out = _run("""
import os
from nonod.sandbox import _renewal

renewal = _renewal.Renewal(growth=2048, files=(os.path.abspath("nono-reaper"),))
litter = [bytes(1000) for _ in range(8000)]
print(renewal.due(True))
with open("nono-reaper.new", "wb") as new:
    new.write(b"\\x7fELF new")
os.replace("nono-reaper.new", "nono-reaper")
print(renewal.due(True))
""", cwd=tmp_path)
    assert out == ["True", "False"]


@pytest.mark.userns
async def test_a_server_that_grew_starts_afresh_once_idle_and_serves_on(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    starts.touch()
    # Every start of the server's program appends a line; any growth counts (0 KiB).
    prelude = (f"open({str(starts)!r}, 'a').write('start\\n'); "
               "import nonod.sandbox._renewal as renewal; renewal.GROWTH = 0; ")
    policy = ResolvedPolicy(name="renew", grants=(Grant(path="/usr", access=Access.READ),),
                            denials=())
    async with open_launcher("namespaces", warm_idle=0.5, prelude=prelude) as launcher:
        server = launcher.pid

        async def run(*argv: str) -> int | None:
            proc = await launcher.launch(policy, LaunchRequest(argv=argv, cwd="/"),
                                         stdio=(0, 1, 2))
            with trio.fail_after(30):
                return (await proc.wait_exited()).code

        def started(count: int) -> None:
            wait_until(f"{count} starts", lambda: starts.read_text().count("start") == count)

        await trio.to_thread.run_sync(started, 1)
        live = await launcher.launch(policy, LaunchRequest(argv=("/usr/bin/sleep", "600"),
                                                           cwd="/"), stdio=(0, 1, 2))
        # Its warm launchers go after warm_idle; the session's init stays its child.
        await trio.to_thread.run_sync(
            wait_until, "only the session left", lambda: len(launchers(server)) == 1)
        assert starts.read_text().count("start") == 1
        live.kill()
        with trio.fail_after(30):
            await live.wait_exited()
        await trio.to_thread.run_sync(started, 2)  # nothing held: a fresh start
        assert launcher._proc.poll() is None and launcher.pid == server  # the same process
        assert await run("/usr/bin/true") == 0  # on the same socket
        assert await run("/usr/bin/false") == 1
