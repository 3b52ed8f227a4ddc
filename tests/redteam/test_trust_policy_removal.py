"""Red team, trust verification undone from inside: the project's ``trust-policy.json``
lists the instruction files to verify (a user-level policy usually lists none), and it lay
in the session's writable working directory. The pinned ``GEMINI.md`` could not be changed,
but the policy could be deleted: the next launch then verified nothing, its program rewrote
``GEMINI.md``, and the launch after that ran with the injected instructions, no refusal.
Now the project policy and its signature are read-only in the session (and cannot be
created), wherever the working directory lies in a writable grant."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonod import trust
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env
from tests.daemon.test_trust_launch import _user_policy

REMOVE = ("for f in trust-policy.json trust-policy.json.bundle; do "
          "rm -f $f 2>/dev/null || echo kept $f; mv $f x 2>/dev/null || echo fixed $f; done")


@pytest.mark.parametrize("grant", ["workdir", "parent"])
def test_a_session_cannot_remove_the_project_trust_policy(
        daemon_thread: DaemonThread, short_tmp: Path, grant: str) -> None:
    work = short_tmp / "proj"
    work.mkdir()
    config = short_tmp / "cfg"
    keyref = f"file://{short_tmp}/keys/anchor.key"
    _user_policy(config / "nono", short_tmp / "keys", [])  # no includes, as usual
    key = trust.FileKeyStore().load_signing_key(keyref)
    policy = trust.init_policy(includes=["GEMINI.md"], key=key, key_id=keyref)
    (work / "trust-policy.json").write_bytes(policy)
    (work / "trust-policy.json.bundle").write_bytes(trust.sign_policy(policy, key))
    (work / "GEMINI.md").write_text("# rules\n")
    (work / "GEMINI.md.bundle").write_bytes(trust.sign_file(b"# rules\n", "GEMINI.md", key))
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    where = ["--allow-cwd"] if grant == "workdir" else ["--allow", str(short_tmp)]
    first = run("launch", *where, "--", "/bin/sh", "-c", REMOVE)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split("\n")[:-1] == [
        "kept trust-policy.json", "fixed trust-policy.json",
        "kept trust-policy.json.bundle", "fixed trust-policy.json.bundle"]
    assert (work / "trust-policy.json").read_bytes() == policy
    second = run("launch", *where, "--", "/bin/sh", "-c", "echo '# INJECTED' > GEMINI.md")
    assert second.returncode != 0  # still pinned: the policy still lists it
    assert (work / "GEMINI.md").read_text() == "# rules\n"
