"""Red team, two homes: the system daemon expands ``~`` in a caller's grants with the home of
its password entry, but the engine placed the view's protections of a home (shell and tool
start-up files, caches) by the caller's ``HOME`` variable. A caller whose ``HOME`` named
another directory and who granted its real home writable left that home's ``.gdbinit``
writable to the session: code for the next debugger run. Now the engine places them by the
home the grants were resolved with."""

from __future__ import annotations

import json
import os

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]


def test_the_home_the_grants_name_keeps_its_start_up_files(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (user, _) = two_users
    work = workdir(user)
    rc = user.home / ".gdbinit"  # a start-up file of the home, not of every writable tree
    rc.write_text("# the user's\n")
    os.chown(rc, user.uid, user.gid)
    env = session_env(work)  # HOME is another directory than the password entry's
    assert env["HOME"] != str(user.home)
    launch = {"type": "launch", "argv": ["/bin/sh", "-c", f"echo evil >> {rc}; echo ok > "
                                         f"{user.home}/notes.txt"],
              "cwd": str(work), "env": env, "detach": True, "stdio": "null", "name": "rc",
              "options": {"allow_cwd": True, "block_net": True, "allow": [str(user.home)]}}
    lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": "rc"}],
                       prefix=user.prefix())
    assert json.loads(lines[1])["type"] == "launched", lines
    assert json.loads(lines[-1])["type"] == "exited", lines
    assert (user.home / "notes.txt").read_text() == "ok\n"  # the home itself is writable
    assert rc.read_text() == "# the user's\n"  # before: "# the user's\nevil\n"
