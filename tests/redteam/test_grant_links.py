"""Red team, tenth pass: a grant or a denial named through a symbolic link that a session
could re-point.

Resolution makes every path canonical (links followed) again at each launch. A link on the
way to a granted or denied path, lying in a directory the session may write, is the
session's to replace by a link of its own: the user's next launch of the same profile then
granted what the session chose (a directory it was never given: another project, a key
store), and a denial named through such a link masked the session's choice while the secret
it stood for was left readable under another grant. Such a launch is now refused
(``policy.grant_link``), with the link's target as the hint; a link the session cannot write
is followed as before."""

from __future__ import annotations

import json
from pathlib import Path

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env

REPOINT = "ln -sfn {target} {link}.new && mv -T {link}.new {link} && echo re-pointed"


def _profile(home: Path, **filesystem: list[str]) -> Path:
    path = home / "bot.json"
    path.write_text(json.dumps({
        "meta": {"name": "bot"}, "extends": "default",
        "workdir": {"access": "readwrite"}, "network": {"block": True},
        "filesystem": filesystem}))
    return path


def _dirs(base: Path, *names: str) -> list[Path]:
    made = [base / name for name in names]
    for path in made:
        path.mkdir()
    return made


def test_a_grant_through_a_link_the_session_could_repoint_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, shared, other = _dirs(short_tmp, "proj", "shared", "other")
    (shared / "data.txt").write_text("shared\n")
    (other / "key.txt").write_text("another project's key\n")
    (work / "data").symlink_to(shared)
    profile = _profile(short_tmp, read=["$WORKDIR/data"])
    run = CLI(cli_env(daemon_thread.socket, short_tmp), work)
    first = run("launch", "--profile", str(profile), "--", "/bin/sh", "-c",
                REPOINT.format(target=other, link="data"))
    # Before: the session re-pointed the link, and the next launch granted `other`.
    assert "re-pointed" not in first.stdout and first.returncode != 0
    assert "symbolic link" in first.stderr and str(shared) in first.stderr, first.stderr
    assert (work / "data").readlink() == shared
    second = run("launch", "--profile", str(profile), "--", "/bin/cat", "data/data.txt")
    assert second.returncode != 0 and "shared" not in second.stdout
    # The same grant by the link's target, or through a link the session cannot write, runs.
    (short_tmp / "fixed").symlink_to(shared)
    for path in (shared, short_tmp / "fixed"):
        done = run("launch", "--profile", str(_profile(short_tmp, read=[str(path)])), "--",
                   "/bin/cat", f"{shared}/data.txt")
        assert (done.returncode, done.stdout) == (0, "shared\n"), done.stderr


def test_a_denial_through_a_link_the_session_could_repoint_is_refused(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, vault = _dirs(short_tmp, "proj", "vault")
    (vault / "keys").mkdir()
    (vault / "keys" / "id").write_text("private key\n")
    (vault / "notes.txt").write_text("notes\n")
    (work / "keys").symlink_to(vault / "keys")
    profile = _profile(short_tmp, read=[str(vault)], deny=["$WORKDIR/keys"])
    run = CLI(cli_env(daemon_thread.socket, short_tmp), work)
    # Before: the first session pointed `keys` at an empty directory of its own, and the
    # next launch masked that one, leaving vault/keys readable through the grant of vault.
    first = run("launch", "--profile", str(profile), "--", "/bin/sh", "-c",
                "mkdir -p decoy && " + REPOINT.format(target="decoy", link="keys"))
    assert "re-pointed" not in first.stdout and first.returncode != 0
    assert "symbolic link" in first.stderr, first.stderr
    second = run("launch", "--profile", str(profile), "--", "/bin/cat", f"{vault}/keys/id")
    assert second.returncode != 0 and "private key" not in second.stdout


def test_a_secret_store_named_through_a_link_in_a_writable_home_stays_denied(
        run: CLI) -> None:
    """The always-on deny groups name `~/.aws`; a dotfile manager makes it a link. Before,
    in a writable `$HOME` the first session could not read the credentials (masked at the
    link's target) but could remove the link (the creation guard refuses only replacing
    it), and the next launch, denying a `~/.aws` that no longer existed, let the session read
    them through the grant of `$HOME`."""
    home = Path(run.env["HOME"])
    (home / "dotfiles" / "aws").mkdir(parents=True)
    (home / "dotfiles" / "aws" / "credentials").write_text("aws secret\n")
    (home / ".aws").symlink_to("dotfiles/aws")
    launch = ("launch", "--allow-cwd", "-a", str(home), "--block-net", "--")
    first = run(*launch, "/bin/sh", "-c", f"rm {home}/.aws && echo removed")
    assert first.returncode != 0 and "removed" not in first.stdout
    assert "symbolic link" in first.stderr and "group:deny_credentials" in first.stderr
    assert (home / ".aws").is_symlink()
    second = run(*launch, "/bin/cat", f"{home}/dotfiles/aws/credentials")
    assert "aws secret" not in second.stdout
