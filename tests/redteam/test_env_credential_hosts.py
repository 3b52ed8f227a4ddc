"""Red team, thirty-third pass: a bound secret handed to the program. A secret stays with the
upstreams its routes sent it to (docs/credentials.md, "Each secret stays with its hosts"),
but ``env_credentials`` (and ``--env-credential-map``) put the same secret, by the same
reference, into the program's environment, from where it goes anywhere the session's network
reaches: a repository's profile that guessed the token's name took it that way, under a
variable name of its choosing (the launch's note named only ``BUILD_CACHE_KEY``).

Now the program's environment is one more place a secret is sent, bound and refused as an
upstream is, spelled ``environment``: its first use binds it there (and says so), a bound
secret is put there only when its owner adds it (``nonoctl secret hosts REF --add
environment``), and a secret first handed to a program is refused to a route's upstream
until its owner adds that."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon.test_cli import CLI
from tests.redteam.conftest import RecordingUpstream
from tests.redteam.test_profile_hands_out import SECRET, SYSTEM_PYTHON, _launch, _token_file
from tests.redteam.test_secret_hosts import _bound, _mine, pinned, two_users

__all__ = ["pinned", "two_users"]  # the fixtures, used by name

#: The program: prints what its environment holds under the variable the profile chose.
SHOW = "import os; print('HOLDS', os.environ.get('BUILD_CACHE_KEY'))"


def _handing_out(directory: Path, key: str) -> Path:
    """The repository's profile: the secret into a variable of its choosing."""
    profile = directory / "repo.json"
    profile.write_text(json.dumps({
        "meta": {"name": "repo"}, "filesystem": {"read": ["/usr", "/etc"]},
        "workdir": {"access": "read"}, "network": {"allow_domain": ["cache.example"]},
        "env_credentials": {key: "BUILD_CACHE_KEY"}}))
    return profile


def test_a_secret_bound_to_its_hosts_is_not_handed_to_a_program(
        pinned: tuple[CLI, int]) -> None:
    cli, upstream = pinned
    key = _bound(cli, upstream)

    theirs = _handing_out(cli.cwd, key)
    refused = cli("launch", "--profile", str(theirs), "--", SYSTEM_PYTHON, "-c", SHOW)
    # before: HOLDS REAL-TOKEN-OF-THE-USER, the program had the user's bound token
    assert SECRET not in refused.stdout + refused.stderr, refused.stdout
    assert refused.returncode != 0 and "HOLDS" not in refused.stdout, refused.stdout
    assert "credential.secret_elsewhere" in refused.stderr or \
        f"has been sent only to http://localhost:{upstream}" in refused.stderr, refused.stderr
    assert f"nonoctl secret hosts {key} --add environment" in refused.stderr, refused.stderr

    # Its owner says programs may hold it: the same profile launches.
    added = cli("secret", "hosts", key, "--add", "environment")
    assert added.returncode == 0, added.stderr
    again = cli("launch", "--profile", str(theirs), "--", SYSTEM_PYTHON, "-c", SHOW)
    assert again.returncode == 0 and f"HOLDS {SECRET}" in again.stdout, again.stderr


def test_a_secret_first_handed_to_a_program_is_bound_there_and_said(
        pinned: tuple[CLI, int]) -> None:
    cli, upstream = pinned
    key = _token_file(cli.cwd)
    theirs = _handing_out(cli.cwd, key)
    done = cli("launch", "--profile", str(theirs), "--", SYSTEM_PYTHON, "-c", SHOW)
    assert done.returncode == 0 and f"HOLDS {SECRET}" in done.stdout, done.stderr
    assert f"secret {key} -> environment (its first route)" in done.stderr, done.stderr
    # A route of it to a host is then another place than the one it went to.
    seen = len(RecordingUpstream.seen)
    refused = _launch(cli, _mine(cli, upstream, key), "mine")
    assert refused.returncode != 0 and "STATUS" not in refused.stdout, refused.stdout
    assert "has been sent only to environment" in refused.stderr, refused.stderr
    assert len(RecordingUpstream.seen) == seen
    listed = cli("secret", "hosts", key, "--json")
    assert json.loads(listed.stdout)["hosts"] == ["environment"], listed.stdout


def test_the_command_lines_env_credential_map_is_bound_as_well(
        pinned: tuple[CLI, int]) -> None:
    cli, upstream = pinned
    key = _bound(cli, upstream, asked=False)
    refused = cli("launch", "--allow-cwd", "--env-credential-map", f"{key}=BUILD_CACHE_KEY", "--",
                  SYSTEM_PYTHON, "-c", SHOW)
    assert refused.returncode != 0 and SECRET not in refused.stdout, refused.stdout
    assert f"has been sent only to http://localhost:{upstream}" in refused.stderr, \
        refused.stderr
