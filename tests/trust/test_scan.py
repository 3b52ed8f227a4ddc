"""verify_tree: discovery, symlinks, enforcement modes, and what gets pinned."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nonod._callerfs import FileRefused, read_path
from nonod.trust import (
    SKIP_DIRS,
    SigningKey,
    TrustError,
    TrustPolicy,
    TrustPolicyError,
    init_policy,
    parse_policy,
    sign_file,
    verify_tree,
)

from .conftest import GEMINI


def signed(path: Path, key: SigningKey, data: bytes = GEMINI) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_name(path.name + ".bundle").write_bytes(sign_file(data, path.name, key))
    return path


def outcomes(report: object) -> dict[str, tuple[str, str | None]]:
    return {e.path: (e.status, e.code) for e in report.entries}  # type: ignore[attr-defined]


def test_verified_unsigned_and_failed(
    tmp_path: Path, key: SigningKey, make_policy: Callable[..., TrustPolicy]
) -> None:
    signed(tmp_path / "GEMINI.md", key)
    signed(tmp_path / "docs" / "GEMINI.md", key)  # "GEMINI.md" matches the root file only
    signed(tmp_path / "CLAUDE.md", key, b"claude").write_bytes(b"claude, edited")
    (tmp_path / "AGENTS.md").write_text("unsigned")
    policy = make_policy(includes=["GEMINI.md", "CLAUDE.md", "AGENTS.md"])

    report = verify_tree(tmp_path, policy)
    assert outcomes(report) == {
        "AGENTS.md": ("unsigned", "trust.unsigned"),
        "CLAUDE.md": ("failed", "trust.digest_mismatch"),
        "GEMINI.md": ("verified", None),
    }
    assert not report.allowed
    assert [e.path for e in report.blocking] == ["AGENTS.md", "CLAUDE.md"]
    with pytest.raises(TrustError, match=r"CLAUDE\.md \(digest mismatch\)") as info:
        report.check()
    assert "AGENTS.md (unsigned)" in info.value.message
    assert info.value.code == "trust.failed"


def test_pins_are_the_verified_bytes(tmp_path: Path, key: SigningKey, policy: TrustPolicy) -> None:
    gemini = signed(tmp_path / "GEMINI.md", key)
    report = verify_tree(tmp_path, policy).check()
    ((real_path, verified),) = report.pins()
    assert real_path == str(gemini.resolve())
    gemini.write_bytes(b"swapped after verification")
    assert verified.data == GEMINI  # the session gets these, whatever the disk says now
    assert verified.sha256 == hashlib.sha256(GEMINI).hexdigest()


@pytest.mark.parametrize("enforcement", ["warn", "audit"])
def test_warn_and_audit_do_not_block_but_report(
    tmp_path: Path, make_policy: Callable[..., TrustPolicy], enforcement: str
) -> None:
    (tmp_path / "GEMINI.md").write_text("unsigned")
    report = verify_tree(tmp_path, make_policy(enforcement=enforcement))
    assert report.allowed
    assert outcomes(report) == {"GEMINI.md": ("unsigned", "trust.unsigned")}
    assert report.check() is report


@pytest.mark.parametrize("enforcement", ["deny", "warn", "audit"])
def test_blocklisted_files_block_in_every_mode(
    tmp_path: Path, key: SigningKey, policy: TrustPolicy, enforcement: str
) -> None:
    signed(tmp_path / "GEMINI.md", key)
    doc = json.loads(policy.to_json())
    doc["enforcement"] = enforcement
    doc["blocklist"]["digests"] = [
        {"sha256": hashlib.sha256(GEMINI).hexdigest(), "description": "bad", "added": "x"}
    ]
    report = verify_tree(tmp_path, parse_policy(json.dumps(doc).encode()))
    assert outcomes(report) == {"GEMINI.md": ("failed", "trust.blocked")}
    with pytest.raises(TrustError, match=r"GEMINI\.md \(blocked\)"):
        report.check()


def test_gitignore_and_bundles(
    tmp_path: Path, key: SigningKey, make_policy: Callable[..., TrustPolicy]
) -> None:
    (tmp_path / ".gitignore").write_text("GEMINI.md\n*.md\n")
    (tmp_path / "GEMINI.md").write_text("ignored by git, not by us")
    signed(tmp_path / "notes.txt", key)
    report = verify_tree(tmp_path, make_policy(includes=["*"]))
    assert sorted(outcomes(report)) == [".gitignore", "GEMINI.md", "notes.txt"]  # no *.bundle


def test_skipped_directories(tmp_path: Path, make_policy: Callable[..., TrustPolicy]) -> None:
    for name in SKIP_DIRS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "GEMINI.md").write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "GEMINI.md").write_text("x")
    report = verify_tree(tmp_path, make_policy(includes=["**/GEMINI.md"]))
    assert list(outcomes(report)) == ["src/GEMINI.md"]


def test_a_file_included_by_name_in_a_skipped_directory_is_verified(
        tmp_path: Path, make_policy: Callable[..., TrustPolicy]) -> None:
    """Skipping `node_modules`, `.venv`, `target`... spares a scan their size; a pattern
    that names a path inside one still reaches it. Before, `node_modules/tool/AGENTS.md`
    included by name was neither verified nor reported, and the launch went on."""
    (tmp_path / "node_modules" / "tool").mkdir(parents=True)
    (tmp_path / "node_modules" / "tool" / "AGENTS.md").write_text("unsigned")
    (tmp_path / "node_modules" / "other").mkdir()
    (tmp_path / "node_modules" / "other" / "AGENTS.md").write_text("not named")
    report = verify_tree(tmp_path, make_policy(
        includes=["node_modules/tool/AGENTS.md", "**/GEMINI.md"]))
    assert outcomes(report) == {"node_modules/tool/AGENTS.md": ("unsigned", "trust.unsigned")}
    assert not report.allowed


def test_symlinked_file_leaving_the_root_is_refused(
    tmp_path: Path, key: SigningKey, policy: TrustPolicy
) -> None:
    root, outside = tmp_path / "project", tmp_path / "outside"
    root.mkdir()
    signed(outside / "GEMINI.md", key)
    (root / "GEMINI.md").symlink_to(outside / "GEMINI.md")
    (root / "GEMINI.md.bundle").write_bytes(sign_file(GEMINI, "GEMINI.md", key))
    report = verify_tree(root, policy)
    (entry,) = report.entries
    assert (entry.status, entry.blocking, entry.real_path) == ("failed", True, None)
    assert entry.reason == "GEMINI.md: symlink leaves the scan root"
    assert report.pins() == ()


def test_symlinked_directory_leaving_the_root_is_refused(
    tmp_path: Path, key: SigningKey, make_policy: Callable[..., TrustPolicy]
) -> None:
    root, outside = tmp_path / "project", tmp_path / "outside"
    root.mkdir()
    signed(outside / "GEMINI.md", key)
    (root / "prompts").symlink_to(outside)
    (root / "unrelated").symlink_to(outside)
    report = verify_tree(root, make_policy(includes=["prompts/*.md"]))
    assert outcomes(report) == {"prompts": ("failed", "trust.failed")}
    assert "symlinked directory leaves the scan root" in (report.entries[0].reason or "")


def test_a_link_met_first_does_not_hide_the_real_directory(
    tmp_path: Path, key: SigningKey, make_policy: Callable[..., TrustPolicy]
) -> None:
    """``a -> docs`` sorts before ``docs``: the real ``docs/GEMINI.md`` is still found (and
    pinned) under its own name, and the link's name too when a pattern includes it."""
    real = signed(tmp_path / "docs" / "GEMINI.md", key)
    (tmp_path / "docs" / "NEW.md").write_text("unsigned\n")
    (tmp_path / "a").symlink_to("docs")
    report = verify_tree(tmp_path, make_policy(includes=["docs/*.md", "a/GEMINI.md"]))
    assert outcomes(report) == {
        "docs/GEMINI.md": ("verified", None),
        "docs/NEW.md": ("unsigned", "trust.unsigned"),
        "a/GEMINI.md": ("verified", None),
    }
    assert {path for path, _ in report.pins()} == {str(real.resolve())}


def test_symlinks_inside_the_root_are_resolved(
    tmp_path: Path, key: SigningKey, make_policy: Callable[..., TrustPolicy]
) -> None:
    real = signed(tmp_path / "prompts" / "v2.md", key)
    (tmp_path / "GEMINI.md").symlink_to("prompts/v2.md")
    (tmp_path / "GEMINI.md.bundle").write_bytes(sign_file(GEMINI, "GEMINI.md", key))
    (tmp_path / "alias").symlink_to("prompts")
    report = verify_tree(tmp_path, make_policy(includes=["GEMINI.md", "alias/*.md"]))
    assert outcomes(report) == {
        "GEMINI.md": ("verified", None),  # the name the program opens is what was signed
        "alias/v2.md": ("verified", None),
    }
    assert {path for path, _ in report.pins()} == {str(real.resolve())}


def test_dangling_symlink_and_special_files(
    tmp_path: Path, make_policy: Callable[..., TrustPolicy]
) -> None:
    (tmp_path / "GEMINI.md").symlink_to(tmp_path / "missing")
    os.mkfifo(tmp_path / "CLAUDE.md")
    report = verify_tree(tmp_path, make_policy(includes=["GEMINI.md", "CLAUDE.md"]))
    reasons = {e.path: e.reason for e in report.entries}
    assert reasons == {
        "CLAUDE.md": "CLAUDE.md: is a FIFO, not a regular file",
        "GEMINI.md": "GEMINI.md: symlink target does not exist",
    }


def test_oversized_bundle_on_disk_is_read_only_up_to_the_limit(
    tmp_path: Path, policy: TrustPolicy
) -> None:
    (tmp_path / "GEMINI.md").write_bytes(GEMINI)
    with open(tmp_path / "GEMINI.md.bundle", "wb") as f:
        f.truncate(50 * 1024 * 1024)
    report = verify_tree(tmp_path, policy)
    assert outcomes(report) == {"GEMINI.md": ("failed", "trust.bad_bundle")}
    assert "the limit is 1048576 bytes" in (report.entries[0].reason or "")


def test_the_scan_read_never_follows_a_swapped_in_symlink(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "prompts").mkdir(parents=True)
    (root / "prompts" / "GEMINI.md").write_bytes(GEMINI)
    outside.mkdir()
    (outside / "GEMINI.md").write_text("attacker")

    def read(rel: str) -> bytes:  # as the scan reads an included file
        return read_path(rel, max_bytes=1000, symlinks="refuse", beneath=str(root)).data

    assert read("prompts/GEMINI.md") == GEMINI
    (root / "prompts").rename(root / "old")  # the race: a directory becomes a symlink
    (root / "prompts").symlink_to(outside)
    with pytest.raises(FileRefused):
        read("prompts/GEMINI.md")
    (root / "old" / "GEMINI.md").unlink()
    (root / "old" / "GEMINI.md").symlink_to(outside / "GEMINI.md")
    with pytest.raises(FileRefused):
        read("old/GEMINI.md")


def test_included_files_need_a_keyed_publisher(tmp_path: Path) -> None:
    with pytest.raises(TrustPolicyError, match="trusts no keyed publisher"):
        verify_tree(tmp_path, parse_policy(init_policy(includes=["GEMINI.md"])))
    assert verify_tree(tmp_path, parse_policy(init_policy())).entries == ()


def test_root_must_be_a_directory(tmp_path: Path, policy: TrustPolicy) -> None:
    with pytest.raises(TrustError, match="is not a directory"):
        verify_tree(tmp_path / "nope", policy)


def test_hostile_file_names_are_escaped_in_messages(
    tmp_path: Path, make_policy: Callable[..., TrustPolicy]
) -> None:
    hostile = "\x1b[2J\x1b[31mok.md"
    (tmp_path / hostile).write_text("unsigned")
    report = verify_tree(tmp_path, make_policy(includes=["*.md"]))
    (entry,) = report.entries
    assert entry.path == hostile  # the real name, for the daemon
    assert "\x1b" not in (entry.reason or "")
    with pytest.raises(TrustError) as info:
        report.check()
    assert "\x1b" not in info.value.message
    assert "\\x1b[2J" in info.value.message


def test_a_policy_of_many_publishers_under_one_key_id_costs_a_scan_little(
        tmp_path: Path) -> None:
    """A project policy (a hostile repository's own, when no user-level policy anchors it)
    listed 1,000 publishers under one key id, and signed 300 files with yet another key and
    no key hint: each file was checked against every publisher's key, parsed anew each time
    (0.2 s a file here), so the scan held the caller's worker thread for about a minute,
    past the launch's scan timeout, which answers the caller but cannot stop the thread.
    Keys are parsed once now, each distinct key tried once, and a bundle without a key hint
    is tried against at most a few keys (more is `trust.untrusted_signer`)."""
    import time

    from nonod.trust import export_public_key, generate_key

    stranger = generate_key("k")
    publishers = [{"name": f"p{i}", "key_id": "k", "public_key": export_public_key(key)}
                  for i, key in enumerate(generate_key("k") for _ in range(1_000))]
    policy = parse_policy(json.dumps({
        "version": 1, "includes": ["*.md"], "publishers": publishers,
        "blocklist": {"digests": [], "publishers": []}, "enforcement": "deny"}).encode())
    for i in range(300):
        data = f"file {i}".encode()
        bundle = json.loads(sign_file(data, f"f{i}.md", stranger))
        del bundle["verificationMaterial"]["publicKey"]["hint"]
        (tmp_path / f"f{i}.md").write_bytes(data)
        (tmp_path / f"f{i}.md.bundle").write_text(json.dumps(bundle))
    started = time.thread_time()  # this thread's CPU: the host's other load aside
    report = verify_tree(tmp_path, policy)
    assert time.thread_time() - started < 10  # 0.2 s at load 14 here; before: about a minute
    assert {e.code for e in report.entries} == {"trust.untrusted_signer"}
    assert len(report.entries) == 300
