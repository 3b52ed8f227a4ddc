"""Red team, the program's path looked up with the system daemon's rights: the engine found a
launch's ``argv[0]`` (an absolute path, or a name searched in the launch's ``PATH``) as root.
A member of the socket group named a path in another user's 0700 home: one that exists was
found (and the launch failed later, at ``exec``), one that does not was "no such
executable", so one refused launch after another told which files another user keeps
where they may not look. Now the system daemon resolves the program as the caller, and the
engine runs what it found."""

from __future__ import annotations

import json
import os

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


def test_a_launch_tells_nothing_of_another_users_programs(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (victim, attacker) = two_users
    tools = victim.home / "bin"  # victim.home is 0700
    tools.mkdir()
    (tools / "tool").write_text("#!/bin/sh\n")
    (tools / "tool").chmod(0o755)
    work = workdir(attacker)

    def launch(argv0: str, path: str | None = None) -> dict[str, object]:
        env = session_env(work) | ({"PATH": path} if path else {})
        return {"type": "launch", "argv": [argv0], "cwd": str(work), "env": env,
                "options": {"allow_cwd": True, "block_net": True}, "detach": True,
                "stdio": "null"}

    lines = raw_client(handle.socket, [
        hello(), launch(str(tools / "tool")), launch(str(tools / "missing")),
        launch("tool", str(tools)), launch("missing", str(tools)),
        launch("true", f"{tools}:/usr/bin:/bin"),
    ], prefix=attacker.prefix())
    replies = [json.loads(line) for line in lines[1:]]
    there, absent, found, not_found, true = replies

    def shape(reply: dict[str, object], name: str) -> str:
        return json.dumps(reply).replace(name, "NAME")

    # before: "launch refused at step 'exec'..." for the files that exist
    assert shape(there, "tool") == shape(absent, "missing"), (there, absent)
    assert shape(found, "tool") == shape(not_found, "missing"), (found, not_found)
    assert there["type"] == "error" and "no such executable" in str(there["message"])
    # A PATH that names the other user's directory first still finds the caller's programs.
    assert true["type"] == "launched", true
