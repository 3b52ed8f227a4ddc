"""Red team, per-tool sandboxes: the agent's call names the directory its tool runs in, and
the daemon looked that directory up with its own rights (``os.path.isdir``, as root on a
system daemon) before using it, falling back to the agent's own directory when it was not
there. A path that exists but is not in the tool's view made the launch fail, one that does
not exist ran the tool: the agent learnt which of the host's directories exist, its own view
and the tool's notwithstanding (``/root/.ssh``, another user's projects). Only a directory
inside the tool's grants is used now; every other one is the agent's own."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox._fakes import HAND_CALL
from tests.toolsandbox.test_daemon_tools import PY, Upstream, _setup
from tests.toolsandbox.test_daemon_tools import github as github  # the fixture

# The agent calls gh by hand (what the shim does) in three directories, and prints what
# each call answered.
PROBE = HAND_CALL + r'''
import sys
def outcome(cwd):
    answer, printed = call("gh", ["issue", "list"], cwd, {})
    return [answer, bool(printed)]
print(json.dumps({name: outcome(path) for name, path in
                  zip(("hidden", "missing", "own"), sys.argv[1:])}))
'''


def test_the_tools_directory_is_no_oracle_for_the_hosts(
        github: Upstream, short_tmp: Path) -> None:
    work, profile, daemon = _setup(short_tmp, github)
    (work / "probe.py").write_text(PROBE)
    hidden = daemon.state_dir  # exists, in neither the agent's view nor the tool's
    missing = short_tmp / f"missing-{secrets.token_hex(4)}"
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "probe.py", str(hidden), str(missing), str(work))
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["own"][0]["exit"] == 3 and out["own"][1]  # the tool ran and printed
    assert out["hidden"] == out["missing"] == out["own"], out  # before: hidden failed
