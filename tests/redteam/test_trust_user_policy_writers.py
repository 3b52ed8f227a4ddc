"""Red team, the user-level trust policy, removed or rolled back by another local user. The
user-level policy is the anchor of everything a user trusts and is signed, so no one else can
forge it; but whoever may write its directory can remove it, or put an older signed version
back (one that still trusts a key since revoked, or lists fewer files). Without it, nothing
the user meant to check is verified, and a repository's own policy anchors itself (not
authoritative: a warning). Profiles and public keys were already refused when another user
could have written them (tenth pass); the trust policy was read whoever could. Shown with a
real second user (``useradd``) and a config directory every user may write: the removal let
an injected ``GEMINI.md`` launch. Now the policy, or where it would be when it is missing,
must be writable by no one but the reader and root (``nonod._writers``), or the launch is
refused with ``trust.policy``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.daemon.conftest import DaemonThread
from tests.daemon.localusers import local_users
from tests.daemon.test_cli import CLI, cli_env
from tests.daemon.test_trust_launch import _user_policy


def test_a_user_policy_another_user_could_remove_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    config = short_tmp / "cfg"
    _user_policy(config / "nono", short_tmp / "keys", ["GEMINI.md"])
    (config / "nono").chmod(0o777)  # a config directory every user may write
    work = short_tmp / "proj"
    work.mkdir()
    (work / "GEMINI.md").write_text("# INJECTED\n")  # unsigned
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    with local_users(short_tmp, 1) as (attacker,):
        short_tmp.chmod(0o755)  # the attacker may reach the config directory
        present = run("launch", "--allow-cwd", "--", "/bin/echo", "ran")
        assert "ran" not in present.stdout and present.returncode != 0
        assert "another user" in present.stderr, present.stderr
        subprocess.run([*attacker.prefix(), "rm", "-f", str(config / "nono" / "trust-policy.json"),
                        str(config / "nono" / "trust-policy.json.bundle")],
                       check=True, capture_output=True)
        removed = run("launch", "--allow-cwd", "--", "/bin/echo", "ran")
    assert "ran" not in removed.stdout, removed.stderr  # before: ran, nothing verified
    assert removed.returncode != 0 and "another user" in removed.stderr, removed.stderr
    # Where only its user may write, a missing policy is the user's: launches go on.
    (config / "nono").chmod(0o700)
    assert run("launch", "--allow-cwd", "--", "/bin/echo", "ran").stdout == "ran\n"
