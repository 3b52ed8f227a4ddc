"""``nonoctl trust``: the seed walkthrough through the CLI. Keys live in the daemon (a
``file://`` key ref here, to stay off the keychain); the CLI writes policies and bundles."""

from __future__ import annotations

from pathlib import Path

from nonod import trust

from .conftest import DaemonThread
from .test_cli import CLI, cli_env


def test_trust_walkthrough(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work = short_tmp / "proj"
    work.mkdir()
    config = short_tmp / "cfg"
    (config / "nono").mkdir(parents=True)
    keyref = f"file://{config}/nono/default.key"
    env = cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config))
    run = CLI(env, work)

    def ok(*words: str) -> str:
        result = run(*words)
        assert result.returncode == 0, (words, result.stdout, result.stderr)
        return result.stdout

    out = ok("trust", "keygen", "--keyref", keyref)
    assert f"key id:      {keyref}" in out
    assert (config / "nono" / "default.key").stat().st_mode & 0o777 == 0o600
    again = run("trust", "keygen", "--keyref", keyref)
    assert again.returncode != 0 and "already exists" in again.stderr
    public = ok("trust", "export-key", "--key", keyref).strip()
    assert public in out
    assert trust.PublicKey.from_b64(public).fingerprint in out
    assert "BEGIN PUBLIC KEY" in ok("trust", "export-key", "--key", keyref, "--pem")

    ok("trust", "init", "--user", "--key", keyref)
    user_policy = trust.parse_policy((config / "nono" / "trust-policy.json").read_bytes())
    assert user_policy.publishers[0].public_key == public
    ok("trust", "sign-policy", "--user", "--key", keyref)
    assert (config / "nono" / "trust-policy.json.bundle").exists()

    (work / "GEMINI.md").write_text("# rules\n")
    ok("trust", "init", "--include", "GEMINI.md", "--key", keyref)
    assert run("trust", "init", "--key", keyref).returncode != 0  # exists, no --force
    ok("trust", "sign-policy", "--key", keyref)
    ok("trust", "sign", "GEMINI.md", "--key", keyref)
    assert (work / "GEMINI.md.bundle").exists()
    assert "OK   GEMINI.md" in ok("trust", "verify", "GEMINI.md")

    launched = ok("launch", "--allow-cwd", "--", "cat", "GEMINI.md")
    assert "# rules" in launched

    with open(work / "GEMINI.md", "a") as f:
        f.write("## INJECTED\n")
    bad = run("trust", "verify", "GEMINI.md")
    assert bad.returncode == 1 and "FAIL GEMINI.md" in bad.stdout
    refused = run("launch", "--allow-cwd", "--", "cat", "GEMINI.md")
    assert refused.returncode == 124, refused.stderr
    assert "GEMINI.md" in refused.stderr
    assert "INJECTED" not in refused.stdout

    ok("trust", "sign", "GEMINI.md", "--key", keyref)
    assert "INJECTED" in ok("launch", "--allow-cwd", "--", "cat", "GEMINI.md")


def test_keygen_creates_a_missing_key_directory_0700(daemon_thread: DaemonThread,
                                                     short_tmp: Path) -> None:
    """docs/trust.md: `trust keygen --keyref file:///new/dir/k` makes new/dir (0700)."""
    run = CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)
    keyref = f"file://{short_tmp}/new/dir/k"
    done = run("trust", "keygen", "--keyref", keyref)
    assert done.returncode == 0, done.stderr
    for directory in (short_tmp / "new", short_tmp / "new" / "dir"):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert (short_tmp / "new" / "dir" / "k").stat().st_mode & 0o777 == 0o600
    public = run("trust", "export-key", "--key", keyref)
    assert public.returncode == 0 and public.stdout.strip() in done.stdout
    # docs/trust.md's order: options before the files (one parser per verb).
    (short_tmp / "GEMINI.md").write_text("be helpful\n")
    signed = run("trust", "sign", "--key", keyref, "GEMINI.md")
    assert signed.returncode == 0, signed.stderr
    assert (short_tmp / "GEMINI.md.bundle").is_file()


def test_trust_usage_errors(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    env = cli_env(daemon_thread.socket, short_tmp)
    run = CLI(env, short_tmp)
    assert run("trust", "sign").returncode == 2
    assert run("trust", "keygen", "x").returncode == 2
    missing = run("trust", "export-key", "--key", f"file://{short_tmp}/none.key")
    assert missing.returncode == 1 and "not found" in missing.stderr
