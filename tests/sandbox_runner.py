"""Run one sandboxed program for the tests: policy and request as JSON on stdin.

Prints nothing of its own on stdout (the program's output passes through); on a refused launch
it prints the error code and message on stderr and exits 125; otherwise it exits with the
program's shell status. Used both as root and, under setpriv, as an unprivileged user.

With ``NONO_TEST_WARM_INIT`` set in its environment the launch is a warm one (the same view
launched once before with ``/bin/true``, the launch sent once an init waits for it): the C
init where ``_cinit.covers`` the view, the Python one with ``NONO_PYTHON_INIT`` set, so that
a test module runs down either path. ``NONO_TEST_INIT_LOG``: a file each launch appends its
init's first two words to, as they were right after the launch (``nono-reaper --init``, or
``nono-reaper --spawner`` for one the C spawner cloned: the C init), to check which path the
launches took. Not its executable: a Python init that outlives ``REAPER_AFTER`` replaces
itself with ``nono-reaper`` too (``/memfd:nono-reaper``, but with the program's descriptors
for words), so what the executable says depends on when it is read.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import msgspec
import trio

from nonod.errors import NonoError
from nonod.policy import ResolvedPolicy
from nonod.sandbox import LaunchRequest, launch_and_wait
from nonod.sandbox._api import open_launcher
from nonod.sandbox._types import EnforcementReport, ExitStatus

WARM = "NONO_TEST_WARM_INIT"
INIT_LOG = "NONO_TEST_INIT_LOG"


class _Input(msgspec.Struct):
    policy: ResolvedPolicy
    request: LaunchRequest


def _inits(server: int) -> list[int]:
    """The fork server's children that are pid 1 of a pid namespace: warm inits."""
    out = []
    for task in Path(f"/proc/{server}/task").iterdir():
        for kid in (task / "children").read_text().split():
            try:
                status = Path(f"/proc/{kid}/status").read_text()
            except OSError:
                continue
            nspid = next((line.split()[1:] for line in status.splitlines()
                          if line.startswith("NSpid:")), [])
            if len(nspid) > 1 and nspid[-1] == "1":
                out.append(int(kid))
    return out


def _argv_of(pid: int) -> str:
    """The first two words of ``pid``'s command line (anyone's to read): ``nono-reaper
    --init`` for the C init (``nono-reaper --spawner`` for one the spawner cloned); "?" if
    it has gone."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
    except OSError:
        return "?"
    return b" ".join(words).decode(errors="replace") or "?"


async def warm_launch_and_wait(policy: ResolvedPolicy, request: LaunchRequest
                               ) -> tuple[ExitStatus, EnforcementReport]:
    async with open_launcher() as launcher:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            first = await launcher.launch(
                policy, msgspec.structs.replace(request, argv=("/bin/true",)),
                stdio=(null, null, 2))
        finally:
            os.close(null)
        await first.wait_exited()
        deadline = time.monotonic() + 20
        while not _inits(launcher.pid) and time.monotonic() < deadline:
            await trio.sleep(0.01)
        proc = await launcher.launch(policy, request)
        if os.environ.get(INIT_LOG):
            with open(os.environ[INIT_LOG], "a") as log:
                log.write(_argv_of(proc.pid) + "\n")
        return await proc.wait_exited(), proc.enforcement


def main() -> int:
    line = b""
    while not line.endswith(b"\n"):  # byte by byte: the rest of stdin is the program's
        chunk = os.read(0, 1)
        if not chunk:
            break
        line += chunk
    data = msgspec.json.decode(line, type=_Input)
    policy, request = data.policy, data.request
    try:
        launch = warm_launch_and_wait if os.environ.get(WARM) else launch_and_wait
        status, report = trio.run(launch, policy, request)
    except NonoError as exc:
        print(f"{exc.code} {getattr(exc, 'step', '')}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 125
    print(f"ENFORCEMENT {report.summary()}", file=sys.stderr)
    return status.shell_code


if __name__ == "__main__":
    sys.exit(main())
