"""Red team, thirty-seventh pass: what the trust scan could not resolve raised out of it, and
the launch was answered by a closed connection, with no outcome, audit record or reason.

- A subject name is a JSON string: ``\\ud800`` is an unpaired surrogate, which Python's
  parser keeps (nono's, serde_json, refuses it) and which cannot be encoded as a path: the
  scan's ``realpath`` raised ``UnicodeEncodeError``. A hostile repository (a project policy
  of its own, which nonod uses, not authoritative, when the user has none) signs such a
  bundle with its own key; a policy's ``files`` entry is the same.
- A chain of about a thousand symbolic links anywhere in the tree (``l1 -> l0``,
  ``l2 -> l1``...), which a session granted its working directory makes in a second:
  Python's ``realpath`` recurses once per link, and its ``RecursionError`` left the walk.
  Every later launch there failed so, with no reason given; and each link of a chain of n
  cost n looks: five chains of 1,000 cost every later scan 45 s of the daemon's time. The
  scan now resolves links by the kernel's rules (40 at most). The profile resolver's
  fallback on ``realpath`` had the same ``RecursionError``."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

from nonod import trust
from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env
from tests.redteam._trust import signed_project

RULES = b"# rules\n"
MULTI = "https://nono.sh/attestation/multi-file/v1"
POLICY = "https://nono.sh/attestation/trust-policy/v1"


def _bundle(subjects: list[tuple[str, bytes]], key: trust.SigningKey, key_id: str,
            predicate_type: str = MULTI) -> bytes:
    doc = {"_type": "https://in-toto.io/Statement/v1",
           "subject": [{"name": name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}
                       for name, data in subjects],
           "predicateType": predicate_type,
           "predicate": {"signer": {"key_id": key_id, "kind": "keyed"}, "version": 1}}
    payload = json.dumps(doc, separators=(",", ":")).encode()  # ensure_ascii: "\ud800"
    ptype = b"application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    return json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": key.fingerprint}, "tlogEntries": [],
                                 "timestampVerificationData": {}},
        "dsseEnvelope": {"payloadType": ptype.decode(),
                         "payload": base64.b64encode(payload).decode(),
                         "signatures": [{"sig": base64.b64encode(key.sign(pae)).decode()}]},
    }, indent=2).encode()


def _hostile_repo(base: Path, subject: str) -> tuple[Path, Path]:
    work = base / "proj"
    work.mkdir()
    config = base / "cfg"
    (config / "nono").mkdir(parents=True)  # no user-level policy: the repository's is used
    key = trust.generate_key("repo")
    policy = trust.init_policy(includes=["GEMINI.md"], key=key, key_id="repo")
    (work / "trust-policy.json").write_bytes(policy)
    (work / "trust-policy.json.bundle").write_bytes(trust.sign_policy(policy, key))
    (work / "GEMINI.md").write_bytes(RULES)
    (work / ".nono-trust.bundle").write_bytes(
        _bundle([("GEMINI.md", RULES), (subject, b"x")], key, "repo"))
    return work, config


def test_a_subject_name_that_cannot_be_a_path_refuses_the_bundle(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, config = _hostile_repo(short_tmp, "\ud800.md")
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    marker = work / "ran"
    refused = run("launch", "--allow-cwd", "--", "/bin/sh", "-c", f"touch {marker}")
    assert refused.returncode == 124, refused.stderr  # trust.*
    assert ".nono-trust.bundle (bad bundle)" in refused.stderr
    assert not marker.exists()
    again = run("launch", "--allow-cwd", "--", "/bin/true")  # the daemon still answers
    assert again.returncode == 124, again.stderr


def test_a_policy_file_entry_that_cannot_be_a_path_is_a_policy_error(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    work, config = _hostile_repo(short_tmp, "skills/SKILL.md")
    key = trust.generate_key("repo")
    policy = json.loads(trust.init_policy(includes=["GEMINI.md"], key=key, key_id="repo"))
    policy["files"] = ["\ud800/SKILL.md"]
    raw = json.dumps(policy).encode()
    (work / "trust-policy.json").write_bytes(raw)
    # (``trust.sign_policy`` parses what it signs: this policy is signed as nono would.)
    (work / "trust-policy.json.bundle").write_bytes(
        _bundle([("trust-policy.json", raw)], key, "repo", POLICY))
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    refused = run("launch", "--allow-cwd", "--", "/bin/true")
    assert refused.returncode == 124, refused.stderr
    assert "unpaired UTF-16 surrogate" in refused.stderr


def test_long_chains_of_links_made_by_a_session_do_not_stop_or_stall_the_scan(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    # Before: one chain past ~990 links raised out of the scan (a closed connection), and
    # each link of a chain of n cost n looks (Python's realpath): five chains of 1,000,
    # made in a second, cost every later scan there 45 s of the daemon's time.
    work, config, key = signed_project(short_tmp, ["**/*.md"])
    (work / "GEMINI.md").write_bytes(RULES)
    (work / "GEMINI.md.bundle").write_bytes(trust.sign_file(RULES, "GEMINI.md", key))
    run = CLI(cli_env(daemon_thread.socket, short_tmp, XDG_CONFIG_HOME=str(config)), work)
    made = run("launch", "--allow-cwd", "--", "/usr/bin/python3", "-c",
               "import os\n"
               "for c in range(5):\n"
               "    os.makedirs(f'c{c}')\n"
               "    open(f'c{c}/l0', 'w').close()\n"
               "    for i in range(1, 1001):\n"
               "        os.symlink(f'l{i - 1}', f'c{c}/l{i}')\n"
               "os.symlink('c0/l1000', 'end.md')\n")
    assert made.returncode == 0, made.stderr
    assert (work / "c4" / "l1000").is_symlink()
    # The chain's end is refused by name where a pattern reaches it (the kernel follows at
    # most 40 links: no program opens it), the launch with it, and the daemon says why.
    started = time.monotonic()
    refused = run("launch", "--allow-cwd", "--", "/bin/true")
    took = time.monotonic() - started
    assert refused.returncode == 124, refused.stderr
    assert "end.md (refused)" in refused.stderr, refused.stderr
    assert took < 15, took  # 0.2 s of scan here; before: 45 s
    # Where no pattern reaches it, the chain changes nothing: the signed file is read.
    (work / "end.md").unlink()
    read = run("launch", "--allow-cwd", "--", "/bin/cat", "GEMINI.md")
    assert (read.returncode, read.stdout) == (0, RULES.decode()), read.stderr


def test_a_grant_through_a_long_chain_of_links_is_refused_with_a_reason(
        daemon_thread: DaemonThread, short_tmp: Path) -> None:
    # The same resolver recursion in the profile's paths (``FsLook.realpath`` falls back on
    # ``os.path.realpath`` past the kernel's 40 links): a grant a session re-pointed at a
    # chain it made closed the connection of every launch naming it.
    work = short_tmp / "proj"
    work.mkdir()
    (work / "l0").write_bytes(b"")
    for i in range(1, 1101):
        (work / f"l{i}").symlink_to(f"l{i - 1}")
    run = CLI(cli_env(daemon_thread.socket, short_tmp), work)
    refused = run("launch", "--allow-cwd", "--read", str(work / "l1100"), "--", "/bin/true")
    assert refused.returncode != 122, refused.stderr  # answered, not a closed connection
    assert "too many levels of symbolic links" in refused.stderr, refused.stderr
    assert run("launch", "--allow-cwd", "--", "/bin/true").returncode == 0
