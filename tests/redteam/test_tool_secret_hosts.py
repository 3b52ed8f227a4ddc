"""Red team, thirty-third pass: a tool's route and the secret hosts. A reference's first
route binds it to that route's upstream, and the launch says so: "the note at its launch,
and the refusal of your own profile afterwards, are how you see it" (docs/credentials.md).
A tool of ``command_policies`` runs in a child session the daemon starts when the agent
calls it, and that session's launch bound its routes: the user's ``nonoctl launch`` said
nothing of them (its note is the agent's), and the binding was made in the middle of the
run, by whatever the agent's view held then. A repository's profile whose tool sends the
token file to its own host was sent the real value with no word at launch; and a tool route
naming a file through a directory link of the repository (``keys -> decoy``) was bound, at
the agent's launch if anywhere, to the decoy, then resolved again at the call, after the
agent had pointed the link at the user's own token directory: a new first route, bound and
sent in the tool's session, said to no one.

Now the agent's launch admits its tools' routes as its own (bound, said, refused there), and
a tool's session binds nothing new: a reference its route names that the agent's launch did
not bind refuses the call (``credential.secret_hosts``) before any secret is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox._fakes import tool_dirs
from tests.toolsandbox.test_daemon_tools import FAKE_GH, PY, Upstream
from tests.toolsandbox.test_daemon_tools import github as github  # the fixture

pytestmark = [pytest.mark.root, pytest.mark.userns]

REAL = "ghp_REAL_users_own_token_0123456789"
DECOY = "decoy_value_the_repository_shipped"

#: The agent: points the repository's ``keys`` link at the user's token directory (argv[1]),
#: or leaves it, then runs the tool once.
AGENT = r'''
import json, os, subprocess, sys
if len(sys.argv) > 1:
    os.remove("keys")
    os.symlink(sys.argv[1], "keys")
done = subprocess.run(["gh", "issue", "list"], capture_output=True, text=True, timeout=60)
print(json.dumps([done.returncode, done.stdout, done.stderr]))
'''


def _private(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    path.chmod(0o600)


def _setup(base: Path, upstream: Upstream, key: str) -> tuple[Path, Path, DaemonThread]:
    """The agent's working directory, a profile whose only route is its tool ``gh``'s
    (``key`` to api.github.com, the fake), and a daemon pinning that host to the fake."""
    work, gh = tool_dirs(base, "gh", FAKE_GH)
    (work / "agent.py").write_text(AGENT)
    profile = base / "repo-profile.json"
    profile.write_text(json.dumps({
        "meta": {"name": "repo"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", str(gh.parent)]},
        "network": {"allow_domain": ["example.invalid"]},
        "command_policies": {
            "credentials": {"github": {"type": "proxy", "upstream": "https://api.github.com",
                                       "credential_key": key, "env_var": "GH_TOKEN"}},
            "commands": {"gh": {"executable": str(gh), "sandbox": {
                "fs_read": ["."], "network": {"allow_domain": ["api.github.com"]},
                "credentials": ["github"]}}},
        },
    }))
    config = (f'[network]\nresolve = {{"api.github.com" = "127.0.0.1:{upstream.port}"}}\n'
              f'extra_ca_file = "{upstream.ca_file}"\n')
    return work, profile, DaemonThread(base, config=config).start()


def _bindings(daemon: DaemonThread) -> list[dict[str, object]]:
    path = daemon.state_dir / "secret-hosts.json"
    return json.loads(path.read_text())["bindings"] if path.exists() else []


def test_a_tools_first_route_is_said_at_the_agents_launch(
        github: Upstream, short_tmp: Path) -> None:
    token = short_tmp / "token"
    _private(token, REAL)
    key = f"file://{token}"
    work, profile, daemon = _setup(short_tmp, github, key)
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "agent.py")
        assert done.returncode == 0, done.stderr
        code, _, _ = json.loads(done.stdout.strip().splitlines()[-1])
        bindings = _bindings(daemon)
    finally:
        daemon.stop()
    assert code == 3  # the tool ran and used its route
    assert github.seen and github.seen[0]["authorization"] == f"Bearer {REAL}"
    assert bindings == [{"uid": None, "reference": key, "origins": ["https://api.github.com"]}]
    # before: nothing on the launch's standard error; the binding was made at the call
    assert f"secret {key} -> https://api.github.com (its first route)" in done.stderr, \
        done.stderr


def test_a_link_the_agent_repoints_before_the_call_binds_and_sends_nothing(
        github: Upstream, short_tmp: Path) -> None:
    decoy = short_tmp / "decoy"
    mine = short_tmp / "secrets"
    for d in (decoy, mine):
        d.mkdir(mode=0o700)
    _private(decoy / "token", DECOY)
    _private(mine / "token", REAL)
    work, profile, daemon = _setup(short_tmp, github, f"file://{short_tmp}/work/keys/token")
    (work / "keys").symlink_to(decoy)
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "agent.py", str(mine))
        assert done.returncode == 0, done.stderr
        code, stdout, stderr = json.loads(done.stdout.strip().splitlines()[-1])
        bindings = _bindings(daemon)
    finally:
        daemon.stop()
    # before: the tool's session bound the user's token to the tool's host (a first route,
    # said to no one) and the upstream got it
    assert all(REAL not in seen.get("authorization", "") for seen in github.seen), github.seen
    assert REAL not in stdout + stderr
    assert code != 0 and "secret" in stderr, (code, stdout, stderr)
    assert [b["reference"] for b in bindings] == [f"file://{decoy}/token"], bindings


#: The agent: reads its tool's token file (argv[1]) before any call, and again after one.
READS = r'''
import json, subprocess, sys
def read():
    try:
        return open(sys.argv[1]).read().strip()
    except OSError as exc:
        return exc.errno
first = read()
subprocess.run(["gh", "issue", "list"], capture_output=True, timeout=60)
print(json.dumps([first, read()]))
'''


def test_the_agent_cannot_read_its_tools_token_file(github: Upstream, short_tmp: Path) -> None:
    """Every ``file://`` source a launch makes the daemon read is masked in its session
    (``_secretfiles``), but a launch's were its own routes' and ``env_credentials``': its
    tools' token files were masked only in the tools' sessions. An agent whose grants held
    its tool's token file (a token kept in the repository, or under a home it may read) read
    the real value its tool's session was there to keep from it."""
    work = short_tmp / "work"
    key = f"file://{work}/.gh-token"
    _, profile, daemon = _setup(short_tmp, github, key)
    _private(work / ".gh-token", REAL)
    (work / "reads.py").write_text(READS)
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "reads.py", str(work / ".gh-token"))
        assert done.returncode == 0, done.stderr
        before, after = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        daemon.stop()
    assert github.seen and github.seen[0]["authorization"] == f"Bearer {REAL}"  # the tool's
    # before: the agent read REAL, before the call and after it
    assert before != REAL and after != REAL, (before, after)
    assert isinstance(before, int) and isinstance(after, int), (before, after)
