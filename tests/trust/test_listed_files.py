"""The policy's ``files`` (nono's key): explicit instruction files anywhere, verified by the
scan like included files, ``~`` from the home the caller gives, missing ones failing as in
nono, and the scan's byte cap counting them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from nonod._view_reads import shown_in_view
from nonod.policy import Access, Denial, Grant, ResolvedPolicy
from nonod.trust import SigningKey, TrustError, TrustPolicy, sign_file, verify_tree
from nonod.trust._scan import MAX_VERIFIED_BYTES

from .conftest import GEMINI


def _signed(path: Path, key: SigningKey, data: bytes = GEMINI) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_name(path.name + ".bundle").write_bytes(sign_file(data, path.name, key))
    return path


@pytest.fixture
def listing(make_policy: Callable[..., TrustPolicy]) -> Callable[..., TrustPolicy]:
    def make(*files: str, enforcement: str = "deny") -> TrustPolicy:
        return dataclasses.replace(make_policy(includes=[], enforcement=enforcement),
                                   files=files)
    return make


def test_a_signed_skill_under_home_is_verified_at_its_real_path(
        tmp_path: Path, key: SigningKey, listing: Callable[..., TrustPolicy]) -> None:
    home = tmp_path / "home"
    real = _signed(home / "dotfiles" / "SKILL.md", key)
    skill = home / ".claude" / "skills" / "mine" / "SKILL.md"
    skill.parent.mkdir(parents=True)
    skill.symlink_to(real)  # the bundle is found beside the name as listed, as in nono
    skill.with_name("SKILL.md.bundle").symlink_to(str(real) + ".bundle")
    work = tmp_path / "work"
    work.mkdir()
    report = verify_tree(work, listing("~/.claude/skills/mine/SKILL.md"), home=str(home))
    [entry] = report.entries
    assert (entry.path, entry.status, entry.listed) == (str(skill), "verified", True)
    assert entry.real_path == str(real)
    assert entry.verified is not None and entry.verified.data == GEMINI
    assert report.pins() == ((str(real), entry.verified),)


@pytest.mark.parametrize("enforcement, blocks", [("deny", True), ("warn", False)])
def test_unsigned_tampered_and_missing_files_fail_by_the_enforcement_mode(
        tmp_path: Path, key: SigningKey, listing: Callable[..., TrustPolicy],
        enforcement: str, blocks: bool) -> None:
    unsigned = tmp_path / "skills" / "unsigned.md"
    unsigned.parent.mkdir()
    unsigned.write_text("# INJECTED\n")
    tampered = _signed(tmp_path / "skills" / "tampered.md", key)
    tampered.write_text("# INJECTED after signing\n")
    missing = tmp_path / "skills" / "missing.md"
    report = verify_tree(tmp_path, listing(str(unsigned), str(tampered), str(missing),
                                           enforcement=enforcement))
    got = {e.path: (e.status, e.code, e.blocking) for e in report.entries}
    assert got == {
        str(unsigned): ("unsigned", "trust.unsigned", blocks),
        str(tampered): ("failed", "trust.digest_mismatch", blocks),
        str(missing): ("failed", "trust.failed", blocks),
    }
    assert "missing" in (report.entries[2].reason or "")
    if blocks:
        with pytest.raises(TrustError, match=f"{missing} \\(refused\\)") as info:
            report.check()
        assert f"{unsigned} (unsigned)" in info.value.message
    else:
        assert report.check() is report and not report.pins()


def test_tilde_needs_a_home_and_relative_paths_are_the_scan_roots(
        tmp_path: Path, key: SigningKey, listing: Callable[..., TrustPolicy]) -> None:
    _signed(tmp_path / "agents" / "AGENTS.md", key)
    report = verify_tree(tmp_path, listing("~/x.md", "agents/AGENTS.md"), home=None)
    got = {e.path: e.status for e in report.entries}
    assert got == {"~/x.md": "failed", str(tmp_path / "agents" / "AGENTS.md"): "verified"}
    assert "no home directory" in (report.entries[0].reason or "")


def test_a_file_included_or_listed_twice_is_verified_and_pinned_once(
        tmp_path: Path, key: SigningKey, make_policy: Callable[..., TrustPolicy]) -> None:
    _signed(tmp_path / "GEMINI.md", key)
    _signed(tmp_path / "home" / "SKILL.md", key)
    policy = dataclasses.replace(make_policy(includes=["GEMINI.md"]), files=(
        str(tmp_path / "GEMINI.md"), "~/SKILL.md", str(tmp_path / "home" / "SKILL.md")))
    report = verify_tree(tmp_path, policy, home=str(tmp_path / "home"))
    assert [(e.path, e.listed) for e in report.entries] == [
        ("GEMINI.md", False), (str(tmp_path / "home" / "SKILL.md"), True)]
    assert len(report.pins()) == 2


def test_listed_files_count_in_the_scans_byte_cap(
        tmp_path: Path, key: SigningKey, listing: Callable[..., TrustPolicy]) -> None:
    big = _signed(tmp_path / "big.md", key, b"#" * (MAX_VERIFIED_BYTES - 10))
    small = _signed(tmp_path / "small.md", key, b"#" * 11)
    report = verify_tree(tmp_path, listing(str(big), str(small)))
    assert [(e.status, e.code) for e in report.entries] == [
        ("verified", None), ("failed", "trust.too_large")]


def _view(*grants: Grant, denials: tuple[Denial, ...] = ()) -> ResolvedPolicy:
    return ResolvedPolicy(name="t", grants=grants, denials=denials)


def test_a_pin_needs_a_read_grant_and_no_denial() -> None:
    """What decides whether a verified listed file is pinned: the session's view must show
    that host path anyway (never a write-only grant, never the private /tmp, never a mask)."""
    skill = "/home/u/.claude/skills/x/SKILL.md"
    assert not shown_in_view(skill, _view())
    assert not shown_in_view(skill, _view(Grant(path="/home/u", access=Access.WRITE)))
    assert shown_in_view(skill, _view(Grant(path="/home/u/.claude", access=Access.READ)))
    assert shown_in_view(skill, _view(Grant(path=skill, access=Access.READ, is_file=True)))
    assert not shown_in_view(skill, _view(Grant(path=skill + ".x", access=Access.READ,
                                                is_file=True)))
    assert not shown_in_view(skill, _view(
        Grant(path="/home/u", access=Access.READWRITE),
        denials=(Denial(path="/home/u/.claude"),)))
    assert not shown_in_view("/tmp/SKILL.md", _view(Grant(path="/tmp", access=Access.READ)))
    assert shown_in_view("/tmp/p/SKILL.md", _view(Grant(path="/tmp/p", access=Access.READ)))
