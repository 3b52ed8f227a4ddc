"""The profile files of nono's own repository (fixtures/nono/README.md): each one loads, or
fails with the one refusal this table names, at the key that causes it, saying what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nonod.errors import ProfileError
from nonod.policy import ResolvedPolicy
from nonod.profiles import ResolveContext, load_profile, resolve

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nono"

CHAINED = "not tools that call tools"
PORTS = "only through its proxy, host by host"
COMMAND_DENY = "never stops a program that another one starts"
CAPTURE = "never runs profile commands to fetch credentials"

# file -> None (loads and resolves) or (error code, JSON path, fragment of the message)
EXPECTED: dict[str, tuple[str, str, str] | None] = {
    "canonical_equivalent_of_all_keys.json":
        ("profile.unsupported", "$.commands.deny", COMMAND_DENY),
    "legacy_all_keys.json": ("profile.unsupported", "$.policy.add_deny_commands", COMMAND_DENY),
    "legacy_collision_security_and_groups.json": None,
    "legacy_policy_add_allow_read.json": None,
    "legacy_policy_add_allow_readwrite.json": None,
    "legacy_policy_add_allow_write.json": None,
    "legacy_policy_add_deny_access.json": None,
    "legacy_policy_add_deny_commands.json":
        ("profile.unsupported", "$.policy.add_deny_commands", COMMAND_DENY),
    "legacy_policy_exclude_groups.json": None,
    "legacy_policy_override_deny.json": None,
    "legacy_security_allowed_commands.json": None,
    "legacy_security_groups.json": None,
    "synthetic.json": None,
    # `claude-code` is a profile of nono's registry pack always-further/claude.
    "profile-binary.json": ("profile.extends", "$.extends", "from a nono registry pack"),
    # Tool sandboxes run (docs/tool-sandboxes.md); what nonod does not run is refused by name.
    "tool-sandbox-jq-readonly.json": None,
    "tool-sandbox-curl-https.json":
        ("profile.unsupported", "$.command_policies.commands.curl.sandbox.network"
         ".tcp_connect_ports", PORTS),
    "tool-sandbox-git-ssh.json":
        ("profile.unsupported", "$.command_policies.commands.git.can_use", CHAINED),
    "tool-sandbox-make-cc.json":
        ("profile.unsupported", "$.command_policies.commands.make.can_use", CHAINED),
    "tool-sandbox-gh-endpoint-policy.json": None,
    # nono's credential-injection.mdx: a route fed by a host command, one signed with SigV4
    # (an empty `aws_auth` is a signing route with every default, not an absent one).
    "credential-cmd-capture.json":
        ("profile.unsupported", "$.network.custom_credentials.github.credential_key", CAPTURE),
    "credential-aws-sigv4.json":
        ("profile.unsupported", "$.network.custom_credentials.bedrock.aws_auth",
         "AWS SigV4 signing"),
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)
    assert len(EXPECTED) == 21


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nono_profile_loads_or_is_refused_precisely(name: str, tmp_path: Path) -> None:
    expected = EXPECTED[name]
    ctx = ResolveContext(home=f"{tmp_path}-home", workdir=str(tmp_path), uid=1000)
    if expected is None:
        policy = resolve(load_profile(str(FIXTURES / name), user_dir=None), ctx)
        assert isinstance(policy, ResolvedPolicy)
        return
    code, path, fragment = expected
    with pytest.raises(ProfileError) as info:
        load_profile(str(FIXTURES / name), user_dir=None)
    error = info.value
    assert (error.code, error.path) == (code, path), str(error)
    assert fragment in error.message
    assert error.hint, "a refusal must say what to do"


def test_legacy_and_canonical_spellings_resolve_to_the_same_policy(tmp_path: Path) -> None:
    # nono's own pair: legacy_all_keys.json spells canonical_equivalent_of_all_keys.json the
    # old way. Both carry a command denylist (refused), so compare them without it.
    legacy = json.loads((FIXTURES / "legacy_all_keys.json").read_text())
    del legacy["policy"]["add_deny_commands"]
    canonical = json.loads((FIXTURES / "canonical_equivalent_of_all_keys.json").read_text())
    del canonical["commands"]["deny"]
    ctx = ResolveContext(home=f"{tmp_path}-home", workdir=str(tmp_path), uid=1000)
    policies = []
    for index, doc in enumerate((legacy, canonical)):
        path = tmp_path / f"p{index}.json"
        path.write_text(json.dumps(doc))
        policies.append(resolve(load_profile(str(path), user_dir=None), ctx))
    old, new = policies
    assert (old.grants, old.denials, old.groups) == (new.grants, new.denials, new.groups)
    assert "/d" in [d.path for d in new.denials]
    assert "dangerous_commands" not in new.groups
