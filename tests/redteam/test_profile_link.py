"""Red team, the launch's profile named through a symbolic link the session could re-point:
``--profile ./bot.json`` where ``bot.json -> conf/real.json``, both in the working directory
the session may write. Keeping the profile file read-only in the session (a mount over the
file) does not keep the link: the session renamed a file of its own over ``bot.json``, and
the user's next launch of the same command loaded the session's profile (a route for the
user's real credential to a host of its choosing, any grant). Such a launch is now refused
(``policy.profile_link``) with the real path as the hint; a link outside the session's
writable grants is followed as before."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env

PROFILE = {"meta": {"name": "bot"}, "extends": "default",
           "workdir": {"access": "readwrite"}, "network": {"block": True}}


def test_a_profile_named_through_a_link_the_session_could_repoint_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work = short_tmp / "proj"
    (work / "conf").mkdir(parents=True)
    real = work / "conf" / "real.json"
    real.write_text(json.dumps(PROFILE))
    (work / "bot.json").symlink_to("conf/real.json")
    (work / "linked").symlink_to("conf")  # a directory link on the way counts too
    (short_tmp / "outside.json").symlink_to(real)
    run = CLI(cli_env(daemon_thread.socket, short_tmp), work)
    for name in (work / "bot.json", work / "linked" / "real.json"):
        refused = run("launch", "--profile", str(name), "--", "/bin/echo", "ran")
        assert refused.returncode != 0 and "ran" not in refused.stdout
        assert "symbolic link" in refused.stderr, refused.stderr
        assert f"launch with the profile's real path, {real}" in refused.stderr
    for name in (real, short_tmp / "outside.json"):
        done = run("launch", "--profile", str(name), "--", "/bin/echo", "ran")
        assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
