"""Red team, the policy ``profile show --resolved`` prints is not the launch's: the daemon
resolved it with no environment from the client (``{}``), where a launch resolves with the
client's. So ``~`` was the password database's home, not the ``HOME`` a user daemon honours
at launch, the ``XDG_*`` directories were their defaults, not the client's, and a profile
named without a path was looked for in another profile directory (``XDG_CONFIG_HOME``): the
reviewer was shown one set of grants, or another file, and the launch got the other. The
profile file's own protection (``protected_files``) was missing from the shown policy too.
``profile show`` now sends the client's environment as a launch does, and the daemon
resolves it by the launch's own steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env


def _paths(policy: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    return ({g["path"] for g in policy["grants"]}, {d["path"] for d in policy["denials"]},
            set(policy.get("protected_files", ())))


def test_profile_show_resolved_is_the_policy_the_launch_gets(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work = short_tmp / "proj"
    work.mkdir()
    config = short_tmp / "cfg"
    (config / "nono" / "profiles").mkdir(parents=True)
    profile = {"meta": {"name": "bot"}, "extends": "default",
               "filesystem": {"read": ["~/data", "$XDG_DATA_HOME/bot"]}}
    (config / "nono" / "profiles" / "bot.json").write_text(json.dumps(profile))
    path = work / "bot.json"
    path.write_text(json.dumps(profile))
    env = cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config),
                  XDG_DATA_HOME=str(short_tmp / "data"))
    home = Path(env["HOME"])  # not the password database's home of the test's uid
    (home / "data").mkdir(parents=True)
    (short_tmp / "data" / "bot").mkdir(parents=True)
    run = CLI(env, work)
    for name in (str(path), "bot"):
        launch = run("launch", "--json", "--dry-run", "--profile", name)
        assert launch.returncode == 0, launch.stderr
        launched = _paths(json.loads(launch.stdout)["policy"])
        assert {str(home / "data"), str(short_tmp / "data" / "bot")} <= launched[0]
        show = run("profile", "show", "--json", "--resolved", name)
        assert show.returncode == 0, show.stderr
        assert _paths(json.loads(show.stdout)) == launched
