"""A secret stays with the hosts it has been sent to. The seed stores its GitHub token as the
keychain account ``github_token``; a repository's profile that guesses the name (or any name:
``env://OPENAI_API_KEY``, a token file's path) and routes it to a host of its own was sent the
real value by the proxy. Now a reference's first route binds it to that upstream, the launch
says so, and a route of it elsewhere refuses the launch, before any secret is read, until its
owner adds the host (``nonoctl secret hosts NAME --add URL``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import RecordingUpstream, two_users
from tests.redteam.test_profile_hands_out import CLI, SECRET, _launch, _token_file, pinned

__all__ = ["pinned", "two_users"]  # the fixtures, used by name


def _profile(directory: Path, name: str, upstream: str, key: str) -> Path:
    profile = directory / f"{name}.json"
    profile.write_text(json.dumps({
        "meta": {"name": name},
        "filesystem": {"read": ["/usr", "/etc"]},
        "workdir": {"access": "read"},
        "network": {"credentials": [name], "custom_credentials": {name: {
            "upstream": upstream, "credential_key": key, "env_var": "TOKEN"}}},
    }))
    return profile


def _mine(cli: CLI, upstream: int, key: str) -> Path:
    """The user's own profile: its route ``mine`` sends ``key`` to ``localhost``."""
    return _profile(cli.cwd, "mine", f"http://localhost:{upstream}", key)


def _theirs(cli: CLI, upstream: int, key: str) -> Path:
    """The repository's profile: its route ``theirs`` sends ``key`` to the same upstream
    under another name, ``127.0.0.1``: another host."""
    return _profile(cli.cwd, "theirs", f"http://127.0.0.1:{upstream}", key)


def _bound(cli: CLI, upstream: int, *, asked: bool = True) -> str:
    """The user's token file, bound to ``localhost`` by a launch of its own profile
    (``_mine``) whose program asks the route (``asked``) or does nothing; its reference."""
    key = _token_file(cli.cwd)
    mine = _mine(cli, upstream, key)
    done = _launch(cli, mine, "mine") if asked else cli("launch", "--profile", str(mine),
                                                         "--", "/bin/true")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "STATUS 200" in done.stdout or not asked, done.stdout
    assert f"secret {key} -> http://localhost:{upstream} (its first route)" in done.stderr, \
        done.stderr
    return key


def test_a_secret_routed_to_another_host_than_before_refuses_the_launch(
        pinned: tuple[CLI, int]) -> None:
    cli, upstream = pinned
    key = _bound(cli, upstream)
    seen = len(RecordingUpstream.seen)

    # The repository's profile: the same secret, to another upstream.
    theirs = _theirs(cli, upstream, key)
    refused = _launch(cli, theirs, "theirs")
    # before: STATUS 200, the other upstream got the user's token
    assert refused.returncode != 0 and "STATUS" not in refused.stdout, refused.stdout
    assert f"would send the secret `{key}` to http://127.0.0.1:{upstream}" in refused.stderr
    assert f"has been sent only to http://localhost:{upstream}" in refused.stderr
    assert f"nonoctl secret hosts {key} --add http://127.0.0.1:{upstream}" in refused.stderr
    assert len(RecordingUpstream.seen) == seen
    assert SECRET not in refused.stdout + refused.stderr

    listed = cli("secret", "hosts", key, "--json")
    assert json.loads(listed.stdout)["hosts"] == [f"http://localhost:{upstream}"]

    # Its owner says that host may have it: the same profile launches.
    added = cli("secret", "hosts", key, "--add", f"http://127.0.0.1:{upstream}/any/path")
    assert added.returncode == 0, added.stderr
    assert f"http://localhost:{upstream}, http://127.0.0.1:{upstream}" in added.stdout
    again = cli("launch", "--profile", str(theirs), "--", "/bin/true")
    assert again.returncode == 0, again.stderr
    assert "its first route" not in again.stderr


def test_bindings_survive_a_restart_and_clear_forgets_them(
        pinned: tuple[CLI, int], short_tmp: Path) -> None:
    cli, upstream = pinned
    key = _bound(cli, upstream, asked=False)
    [saved] = list(short_tmp.rglob("secret-hosts.json"))
    assert saved.stat().st_mode & 0o777 == 0o600
    assert json.loads(saved.read_text())["bindings"] == [
        {"uid": None, "reference": key, "origins": [f"http://localhost:{upstream}"]}]
    theirs = _theirs(cli, upstream, key)
    assert cli("launch", "--profile", str(theirs), "--", "/bin/true").returncode != 0
    cleared = cli("secret", "hosts", key, "--clear")
    assert cleared.returncode == 0 and "bound to no upstream" in cleared.stdout, cleared.stdout
    # Its next route binds it again (here: the other one).
    done = cli("launch", "--profile", str(theirs), "--", "/bin/true")
    assert done.returncode == 0 and "its first route" in done.stderr, done.stderr


def test_bad_input_to_secret_hosts_is_refused_and_changes_nothing(
        pinned: tuple[CLI, int], short_tmp: Path) -> None:
    cli, _ = pinned
    for args in (("gh", "--add", "ftp://example.com"), ("gh", "--add", "https://u:p@h.example"),
                 ("keyring://nothing", "--add", "https://api.example.com"),
                 ("gh", "--add", "https://h.example:99999")):
        done = cli("secret", "hosts", *args)
        assert done.returncode != 0, (args, done.stdout)
        assert "Traceback" not in done.stderr, done.stderr
    assert not list(short_tmp.rglob("secret-hosts.json"))


def test_another_spelling_of_the_same_file_is_the_same_secret(
        pinned: tuple[CLI, int]) -> None:
    """review23: the binding was keyed on the reference as written, so the same token file
    under another spelling (``file:////path``, ``//`` inside it, a directory link the
    repository ships) was a secret never routed: the repository's profile bound it to its
    own host and was sent the real value."""
    cli, upstream = pinned
    key = _bound(cli, upstream, asked=False)
    path = key.removeprefix("file://")
    (cli.cwd / "repo").mkdir()
    (cli.cwd / "repo" / "keys").symlink_to(cli.cwd)
    seen = len(RecordingUpstream.seen)
    for spelling in (f"file:///{path}", "file://" + path.replace("/", "//"),
                     f"file://{cli.cwd}/repo/keys/github-token"):
        theirs = _theirs(cli, upstream, spelling)
        refused = _launch(cli, theirs, "theirs")
        # before: STATUS 200, the other upstream got the user's token
        assert refused.returncode != 0 and "STATUS" not in refused.stdout, \
            (spelling, refused.stdout)
        assert "credential.secret_elsewhere" in refused.stderr or \
            f"has been sent only to http://localhost:{upstream}" in refused.stderr, \
            refused.stderr
        assert SECRET not in refused.stdout + refused.stderr
    assert len(RecordingUpstream.seen) == seen
    # The hint names the spelling `secret hosts` takes, and that spelling lists the host.
    listed = cli("secret", "hosts", f"file:///{path}", "--json")
    assert json.loads(listed.stdout)["hosts"] == [f"http://localhost:{upstream}"], listed


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")
def test_one_users_bindings_neither_bind_nor_show_for_another(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    """The system daemon: user A's launch binds A's token to an upstream; user B, asking
    `secret hosts` for the same reference, sees nothing of it, and B's own first route of a
    reference with the same spelling binds it for B alone."""
    handle, (a, b) = two_users

    def launch(user: LocalUser, upstream: str) -> dict[str, object]:
        token = user.home / "token"
        token.write_text(SECRET)
        token.chmod(0o600)
        os.chown(token, user.uid, user.gid)
        profile = user.home / "p.json"
        profile.write_text(json.dumps({
            "meta": {"name": "p"}, "filesystem": {"read": ["/usr", "/etc"]},
            "workdir": {"access": "read"},
            "network": {"credentials": ["svc"], "custom_credentials": {"svc": {
                "upstream": upstream, "credential_key": f"file://{token}",
                "env_var": "SVC_TOKEN"}}}}))
        os.chown(profile, user.uid, user.gid)
        return {"type": "launch", "argv": ["/bin/true"], "cwd": str(user.home),
                "env": session_env(user.home), "profile": str(profile), "name": "p",
                "detach": True, "stdio": "null"}

    for user in (a, b):
        user.home.chmod(0o755)
    a_ref = f"file://{a.home}/token"
    first = raw_client(handle.socket, [hello(), launch(a, "https://127.0.0.1:9/")],
                       prefix=a.prefix())
    assert json.loads(first[1])["type"] == "launched", first
    asked = raw_client(handle.socket, [hello(), {"type": "secret_bindings",
                                                 "reference": a_ref}], prefix=b.prefix())
    # B sees nothing of A's binding
    assert json.loads(asked[1]) == {"type": "secret_bound", "reference": a_ref, "hosts": []}
    mine = raw_client(handle.socket, [hello(), {"type": "secret_bindings",
                                                "reference": a_ref}], prefix=a.prefix())
    assert json.loads(mine[1])["hosts"] == ["https://127.0.0.1:9"], mine
    # B's own launch to another upstream is B's first route, not refused by A's binding.
    second = raw_client(handle.socket, [hello(), launch(b, "https://localhost:9/")],
                        prefix=b.prefix())
    assert json.loads(second[1])["type"] == "launched", second


def test_a_launch_refused_after_binding_leaves_no_binding(pinned: tuple[CLI, int]) -> None:
    """A launch binds its new references while it is prepared; the engine refuses it later
    (its program cannot be executed). It never ran: its binding goes, and the user's own
    profile that routes the secret to its real host launches and binds it (known1)."""
    cli, upstream = pinned
    key = _token_file(cli.cwd)
    not_executable = cli.cwd / "script"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    theirs = _theirs(cli, upstream, key)
    refused = cli("launch", "--profile", str(theirs), "--", str(not_executable))
    assert refused.returncode != 0, refused.stderr
    assert "its first route" not in refused.stderr, refused.stderr
    # before: bound to http://127.0.0.1:PORT by a launch that never ran
    listed = cli("secret", "hosts", key, "--json")
    assert json.loads(listed.stdout)["hosts"] == [], listed.stdout
    [saved] = list(cli.cwd.rglob("secret-hosts.json"))
    assert json.loads(saved.read_text())["bindings"] == []

    done = _launch(cli, _mine(cli, upstream, key), "mine")
    # before: refused, "has been sent only to http://127.0.0.1:PORT"
    assert done.returncode == 0 and "STATUS 200" in done.stdout, done.stdout + done.stderr
    assert f"secret {key} -> http://localhost:{upstream} (its first route)" in done.stderr
    # A launch that ran keeps its binding.
    again = cli("launch", "--profile", str(theirs), "--", "/bin/true")
    assert again.returncode != 0 and "has been sent only to http://localhost" in again.stderr
