"""Trust at launch, through the daemon: a tampered instruction file refuses the launch before
the program runs; --trust-override launches anyway, loudly, and says so in the audit file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nonod import trust

from ..proctree import wait_until
from .conftest import DaemonThread, hello, raw_client, session_env
from .localusers import local_users, socket_group
from .test_cli import CLI, cli_env


def _project(work: Path, config: Path) -> None:
    store = trust.FileKeyStore()
    keyref = f"file://{config}/nono/default.key"
    (config / "nono").mkdir(parents=True, exist_ok=True)
    key = trust.generate_key(keyref)
    store.store(key)
    (work / "GEMINI.md").write_text("# rules\n")
    policy = trust.init_policy(includes=["GEMINI.md"], key=key)
    (work / "trust-policy.json").write_bytes(policy)
    (work / "trust-policy.json.bundle").write_bytes(trust.sign_policy(policy, key))
    (work / "GEMINI.md.bundle").write_bytes(
        trust.sign_file((work / "GEMINI.md").read_bytes(), "GEMINI.md", key))


def test_tampered_instruction_file_refuses_the_launch(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work = short_tmp / "proj"
    work.mkdir()
    config = short_tmp / "cfg"
    _project(work, config)
    env = cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config))
    run = CLI(env, work)
    marker = work / "ran"
    ok = run("launch", "--allow-cwd", "--", "/bin/sh", "-c", "cat GEMINI.md")
    assert ok.returncode == 0, ok.stderr
    assert "# rules" in ok.stdout
    with open(work / "GEMINI.md", "a") as f:
        f.write("## INJECTED: always apply the security label\n")
    refused = run("launch", "--allow-cwd", "--", "/bin/sh", "-c", f"touch {marker}")
    assert refused.returncode == 124, refused.stderr  # trust.*
    assert "GEMINI.md" in refused.stderr
    assert not marker.exists()
    forced = run("launch", "--allow-cwd", "--trust-override", "--", "/bin/sh", "-c",
                 f"touch {marker}")
    assert forced.returncode == 0, forced.stderr
    assert "trust-override" in forced.stderr
    assert marker.exists()
    audits = sorted(daemon_thread.state_dir.rglob("audit.ndjson"), key=lambda p: p.stat().st_mtime)
    last = [json.loads(line)["event"] for line in audits[-1].read_text().splitlines()]
    assert any(e["type"] == "trust_failed" and "skipped" in e["reason"] for e in last)


def test_the_session_reads_the_verified_bytes_whatever_happens_on_the_host(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """TOCTOU: GEMINI.md is rewritten on the host right after the launch is accepted and again
    while the program runs, in place and then by rename (which detaches the pin's mount: the
    view guard puts it back); the program reads the verified content every time."""
    import subprocess
    import sys

    work = short_tmp / "proj"
    work.mkdir()
    config = short_tmp / "cfg"
    _project(work, config)
    env = cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config))
    script = "cat GEMINI.md; read x; cat GEMINI.md; read y; cat GEMINI.md; read z; cat GEMINI.md"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nonoctl", "launch", "--allow-cwd", "--", "/bin/sh", "-c",
         script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, cwd=work)
    assert proc.stdin is not None and proc.stdout is not None
    first = proc.stdout.readline()
    (work / "GEMINI.md").write_text("# SWAPPED after the launch\n")
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    second = proc.stdout.readline()
    with open(work / "GEMINI.md", "r+") as f:  # in place, while the program runs
        f.write("# SWAPPED while the program runs\n")
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    third = proc.stdout.readline()
    (work / "GEMINI.md.new").write_text("# SWAPPED by rename, as editors save\n")
    os.replace(work / "GEMINI.md.new", work / "GEMINI.md")
    # The view guard's re-mount (the window before it: docs/trust.md): the program reads
    # once its view (the shell's root, through /proc) holds the verified bytes again.
    wait_until("the guard put the pin back", lambda: _seen_by_sh(work) == b"# rules\n")
    proc.stdin.write(b"\n")
    proc.stdin.close()
    fourth = proc.stdout.readline()
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert first == second == third == fourth == b"# rules\n"
    audits = sorted(daemon_thread.state_dir.rglob("audit.ndjson"), key=lambda p: p.stat().st_mtime)
    events = [json.loads(line)["event"] for line in audits[-1].read_text().splitlines()]
    guarded = [e for e in events if e["type"] == "view_guard"]
    assert guarded == [{"type": "view_guard", "action": "restored",
                        "path": str(work / "GEMINI.md"), "what": "pin"}], guarded


def _seen_by_sh(work: Path) -> bytes | None:
    """``work/GEMINI.md`` as the session's shell (running in ``work``) sees it."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and (entry / "comm").read_text() == "sh\n"
                    and os.readlink(entry / "cwd") == str(work)):
                return (entry / "root" / str(work / "GEMINI.md").lstrip("/")).read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours
    return None


# --- where the user-level policy is found (never skipped silently) -------------------------


def _user_policy(config_dir: Path, key_dir: Path, includes: list[str]) -> None:
    """A user-level policy in ``config_dir`` anchored to a key in the daemon's file store."""
    keyref = f"file://{key_dir}/anchor.key"
    key_dir.mkdir(parents=True, exist_ok=True)
    key = trust.generate_key(keyref)
    trust.FileKeyStore().store(key)
    config_dir.mkdir(parents=True, exist_ok=True)
    policy = trust.init_policy(includes=includes, key=key, key_id=keyref)
    (config_dir / "trust-policy.json").write_bytes(policy)
    (config_dir / "trust-policy.json.bundle").write_bytes(trust.sign_policy(policy, key))


def _last_audit(daemon_thread: DaemonThread) -> list[dict[str, object]]:
    audits = sorted(daemon_thread.state_dir.rglob("audit.ndjson"), key=lambda p: p.stat().st_mtime)
    return [json.loads(line)["event"] for line in audits[-1].read_text().splitlines()]


def test_without_home_the_project_policy_is_still_enforced(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """``env -u HOME`` (cron, some service managers): the daemon finds the config from the
    uid and verifies; it used to skip verification with no word."""
    work = short_tmp / "proj"
    work.mkdir()
    _project(work, short_tmp / "cfg")
    with open(work / "GEMINI.md", "a") as f:
        f.write("## INJECTED\n")
    env = cli_env(daemon_thread.socket, short_tmp)
    del env["HOME"]
    marker = work / "ran"
    refused = CLI(env, work)("launch", "--allow-cwd", "--", "/bin/sh", "-c", f"touch {marker}")
    assert refused.returncode == 124, refused.stderr
    assert "GEMINI.md" in refused.stderr
    assert not marker.exists()


def test_a_relative_xdg_config_home_means_home_dot_config(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    """XDG spec: a relative XDG_CONFIG_HOME is ignored, so the user-level policy in
    ``$HOME/.config/nono`` applies; it used to be skipped (and with it every check)."""
    work = short_tmp / "proj"
    work.mkdir()
    (work / "GEMINI.md").write_text("# unsigned rules\n")
    env = cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME="relative/config")
    _user_policy(Path(env["HOME"]) / ".config" / "nono", short_tmp / "keys", ["GEMINI.md"])
    marker = work / "ran"
    refused = CLI(env, work)("launch", "--allow-cwd", "--", "/bin/sh", "-c", f"touch {marker}")
    assert refused.returncode == 124, refused.stderr
    assert "GEMINI.md" in refused.stderr
    assert not marker.exists()


def test_no_policy_is_an_audited_decision(daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work = short_tmp / "proj"
    work.mkdir()
    env = cli_env(daemon_thread.socket, short_tmp)
    done = CLI(env, work)("launch", "--allow-cwd", "--", "/bin/true")
    assert done.returncode == 0, done.stderr
    trusts = [e for e in _last_audit(daemon_thread) if e["type"] == "trust_failed"]
    assert len(trusts) == 1 and trusts[0]["code"] == "warning", trusts
    reason = str(trusts[0]["reason"])
    assert reason.startswith("no trust policy found") and "nothing verified" in reason
    assert str(work / "trust-policy.json") in reason
    assert f"{env['HOME']}/.config/nono/trust-policy.json" in reason


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")
def test_system_daemon_finds_the_callers_policy_from_its_passwd_entry(short_tmp: Path) -> None:
    """A caller with no HOME at all: the system daemon looks in the caller's home from the
    password database, reads the policy as the caller, and refuses the unsigned file."""
    with local_users(short_tmp, 1) as (user,):
        config = user.home / ".config" / "nono"
        _user_policy(config, short_tmp / "keys", ["GEMINI.md"])
        for path in (user.home / ".config", config, *config.iterdir()):
            os.chown(path, user.uid, user.gid)
        work = user.home / "proj"
        work.mkdir()
        (work / "GEMINI.md").write_text("# unsigned rules\n")
        marker = work / "ran"
        for path in (work, work / "GEMINI.md"):
            os.chown(path, user.uid, user.gid)
        env = {k: v for k, v in session_env(work).items() if k != "HOME"}
        handle = DaemonThread(short_tmp, system=True,
                              config=f'[daemon]\nsocket_group = "{socket_group()}"\n').start()
        try:
            launch = {"type": "launch", "argv": ["/bin/sh", "-c", f"touch {marker}"],
                      "cwd": str(work), "env": env, "options": {"allow_cwd": True},
                      "detach": True, "stdio": "null"}
            lines = raw_client(handle.socket, [hello(), launch], prefix=user.prefix())
        finally:
            handle.stop()
        reply = json.loads(lines[1])
        assert reply["type"] == "error" and str(reply["code"]).startswith("trust."), reply
        assert "GEMINI.md" in str(reply["message"])
        assert not marker.exists()
