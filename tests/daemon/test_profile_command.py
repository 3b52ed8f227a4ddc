"""A profile's ``binary`` and ``command_args`` through the daemon: ``command_args`` follow
the program's own arguments whether the launch or the profile names the program (as nono
appends them), so the key is never parsed and then dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nonod import protocol as p

from .conftest import DaemonThread


@pytest.mark.parametrize(("argv", "expected"), [
    ((), ("/bin/echo", "--from-profile", "in", "WORK")),
    (("printf", "%s"), ("printf", "%s", "--from-profile", "in", "WORK")),
])
def test_command_args_follow_the_command(
    daemon_thread: DaemonThread, short_tmp: Path, argv: tuple[str, ...],
    expected: tuple[str, ...],
) -> None:
    profile = short_tmp / "args.json"
    profile.write_text(json.dumps({
        "meta": {"name": "args"}, "binary": "/bin/echo",
        "command_args": ["--from-profile", "in", "$WORKDIR"],
    }))
    with daemon_thread.connect() as conn:
        reply = conn.request(p.Launch(argv=argv, cwd=str(short_tmp), profile=str(profile),
                                      options=p.LaunchOptions(allow_cwd=True), dry_run=True))
    assert isinstance(reply, p.DryRun)
    assert reply.argv == tuple(str(short_tmp) if a == "WORK" else a for a in expected)
