"""``nonoctl trust sign --all``, ``verify --all`` and ``list``: the walkthrough's setup, then
every included file at once, client-side."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import DaemonThread
from .test_cli import CLI, cli_env


def test_trust_sign_verify_list_all(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work = short_tmp / "proj"
    (work / "docs").mkdir(parents=True)
    config = short_tmp / "cfg"
    (config / "nono").mkdir(parents=True)
    keyref = f"file://{config}/nono/default.key"
    env = cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config))
    run = CLI(env, work)

    def ok(*words: str) -> str:
        result = run(*words)
        assert result.returncode == 0, (words, result.stdout, result.stderr)
        return result.stdout

    ok("trust", "keygen", "--keyref", keyref)
    ok("trust", "init", "--user", "--key", keyref)
    ok("trust", "sign-policy", "--user", "--key", keyref)
    (work / "GEMINI.md").write_text("# rules\n")
    (work / "docs" / "AGENTS.md").write_text("# more rules\n")
    (work / "README.md").write_text("not included\n")
    ok("trust", "init", "--include", "GEMINI.md", "--include", "**/AGENTS.md", "--key", keyref)
    ok("trust", "sign-policy", "--key", keyref)

    unsigned = run("trust", "verify", "--all")
    assert unsigned.returncode == 1 and "FAIL GEMINI.md" in unsigned.stdout
    listed = json.loads(ok("trust", "list", "--json"))
    assert {f["path"]: f["status"] for f in listed["files"]} == {
        "GEMINI.md": "unsigned", "docs/AGENTS.md": "unsigned"}

    signed = ok("trust", "sign", "--all", "--key", keyref)
    assert "GEMINI.md" in signed and "docs/AGENTS.md" in signed
    assert (work / "GEMINI.md.bundle").exists()
    assert (work / "docs" / "AGENTS.md.bundle").exists()
    assert not (work / "README.md.bundle").exists()

    verified = ok("trust", "verify", "--all")
    assert "OK   GEMINI.md" in verified and "OK   docs/AGENTS.md" in verified
    listed = json.loads(ok("trust", "list", "--json"))
    assert {f["path"]: f["status"] for f in listed["files"]} == {
        "GEMINI.md": "verified", "docs/AGENTS.md": "verified"}
    assert listed["enforcement"] and listed["authoritative"] is True
    assert listed["publishers"] and listed["publishers"][0]["fingerprint"]
    text = ok("trust", "list")
    assert "GEMINI.md  verified" in text and "publishers:" in text

    with open(work / "GEMINI.md", "a") as f:
        f.write("## INJECTED\n")
    bad = run("trust", "verify", "--all")
    assert bad.returncode == 1, bad.stdout
    assert "FAIL GEMINI.md" in bad.stdout and "OK   docs/AGENTS.md" in bad.stdout
    listed = json.loads(ok("trust", "list", "--json"))
    gemini = next(f for f in listed["files"] if f["path"] == "GEMINI.md")
    assert gemini["status"] == "failed" and gemini["reason"]
    assert "GEMINI.md  failed:" in ok("trust", "list")


def test_trust_all_usage_errors(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    env = cli_env(daemon_thread.socket, short_tmp)
    run = CLI(env, short_tmp)
    assert run("trust", "sign", "--all", "x").returncode == 2
    assert run("trust", "keygen", "--all").returncode == 2
    assert run("trust", "list", "x").returncode == 2
    missing = run("trust", "sign", "--all")
    assert missing.returncode == 1 and "trust-policy.json" in missing.stderr
