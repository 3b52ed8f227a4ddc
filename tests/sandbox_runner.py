"""Run one sandboxed program for the tests: policy and request as JSON on stdin.

Prints nothing of its own on stdout (the program's output passes through); on a refused launch
it prints the error code and message on stderr and exits 125; otherwise it exits with the
program's shell status. Used both as root and, under setpriv, as an unprivileged user.
"""

from __future__ import annotations

import os
import sys

import msgspec
import trio

from nonod.errors import NonoError
from nonod.policy import ResolvedPolicy
from nonod.sandbox import LaunchRequest, launch_and_wait


class _Input(msgspec.Struct):
    policy: ResolvedPolicy
    request: LaunchRequest


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
        status, report = trio.run(launch_and_wait, policy, request)
    except NonoError as exc:
        print(f"{exc.code} {getattr(exc, 'step', '')}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 125
    print(f"ENFORCEMENT {report.summary()}", file=sys.stderr)
    return status.shell_code


if __name__ == "__main__":
    sys.exit(main())
