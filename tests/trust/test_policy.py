"""trust-policy.json: nono's format, include globs, init, and the user/project merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonod.trust import (
    SigningKey,
    TrustPolicy,
    TrustPolicyError,
    export_public_key,
    generate_key,
    init_policy,
    load_policy,
    merge_policies,
    parse_policy,
    publisher_for_key,
    sign_policy,
)
from nonod.trust._policy import NOT_AUTHORITATIVE, compile_glob

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "examples" / "trust-policy.json"


def doc(key: SigningKey, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = json.loads(init_policy(includes=["GEMINI.md"], key=key))
    base.update(changes)
    return base


def parse(data: dict[str, Any]) -> TrustPolicy:
    return parse_policy(json.dumps(data).encode())


@pytest.mark.skipif(not EXAMPLE.exists(), reason="the shared example is not checked out")
def test_the_blogs_policy_loads_once_the_key_is_filled_in(key: SigningKey) -> None:
    text = EXAMPLE.read_text()
    with pytest.raises(TrustPolicyError, match=r"\$.publishers\[0\]"):
        parse_policy(text.encode())  # the placeholder is not a key
    filled = text.replace("<nono trust export-key output>", export_public_key(key))
    policy = parse_policy(filled.encode())
    assert policy.includes == ("GEMINI.md",)
    assert policy.enforcement == "deny"
    (publisher,) = policy.publishers
    assert (publisher.name, publisher.key_id) == ("local-dev", "default")
    assert publisher.key() == key.public_key


def test_init_policy_is_noNOs_shape(key: SigningKey) -> None:
    assert json.loads(init_policy(includes=["GEMINI.md"], key=key)) == {
        "version": 1,
        "includes": ["GEMINI.md"],
        "publishers": [
            {"name": "default", "key_id": "default", "public_key": export_public_key(key)}
        ],
        "blocklist": {"digests": [], "publishers": []},
        "enforcement": "deny",
    }
    user = json.loads(init_policy(key=key, publisher_name="local-dev"))
    assert user["includes"] == []
    assert user["publishers"][0]["name"] == "local-dev"
    assert json.loads(init_policy())["publishers"] == []


def test_to_json_round_trips(key: SigningKey) -> None:
    policy = parse(doc(key, files=[]))
    again = parse_policy(policy.to_json())
    assert (again.includes, again.publishers) == (policy.includes, policy.publishers)


def test_files_parse_and_round_trip_as_nonos(key: SigningKey) -> None:
    """nono's ``files`` key loads (it was refused while nothing verified it) and is written
    back as it was."""
    listed = ["~/.claude/skills/x/SKILL.md", "/etc/agents/AGENTS.md"]
    policy = parse(doc(key, files=listed))
    assert policy.files == tuple(listed)
    assert parse_policy(policy.to_json()).files == tuple(listed)


def test_more_than_a_thousand_files_are_refused_by_name(key: SigningKey) -> None:
    parse(doc(key, files=[f"/skills/{i}.md" for i in range(1_000)]))
    with pytest.raises(TrustPolicyError, match=r"more than 1000 files \(1001 listed\)"):
        parse(doc(key, files=[f"/skills/{i}.md" for i in range(1_001)]))
    with pytest.raises(TrustPolicyError, match="invalid file path"):
        parse(doc(key, files=[""]))


def test_old_includes_name_is_read(key: SigningKey) -> None:
    data = doc(key)
    data["instruction_patterns"] = data.pop("includes")
    assert parse(data).includes == ("GEMINI.md",)
    data["includes"] = ["x"]
    with pytest.raises(TrustPolicyError, match="both includes and instruction_patterns"):
        parse(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"enforcment": "deny"}, r"unknown field `enforcment`"),
        ({"version": 2}, r"unsupported trust policy version 2"),
        ({"enforcement": "off"}, r"deny, warn or audit, not 'off' - at `\$.enforcement`"),
        ({"includes": ["/etc/passwd"]}, r"absolute"),
        ({"includes": ["../x"]}, r"'\.\.'"),
        ({"includes": ["[abc"]}, r"unclosed character class"),
        ({"includes": ["{a,{b}}"]}, r"nested alternates"),
        ({"blocklist": {"digests": ["abc"]}}, r"\$.blocklist.digests\[0\]"),
        (
            {"blocklist": {"digests": [{"sha256": "zz", "description": "", "added": ""}]}},
            r"\$.blocklist.digests\[0\].sha256",
        ),
        ({"publishers": [{"name": "x", "key_id": "k"}]}, r"has no public_key"),
        ({"publishers": [{"name": "x", "key_id": "k", "public_key": "AAAA"}]}, r"not a DER"),
        ({"publishers": [{"name": "x"}]}, r"needs key_id and public_key"),
    ],
)
def test_format_errors_name_the_problem(
    key: SigningKey, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(TrustPolicyError, match=message):
        parse(doc(key, **change))


def test_keyless_publishers_parse(key: SigningKey) -> None:
    ci = {
        "name": "my-org-ci",
        "issuer": "https://token.actions.githubusercontent.com",
        "repository": "my-org/my-repo",
        "workflow": ".github/workflows/sign.yml",
        "ref_pattern": "refs/heads/main",
    }
    policy = parse(doc(key, publishers=[ci]))
    assert not policy.publishers[0].keyed
    assert policy.keyed_publishers() == ()


def test_json_errors(key: SigningKey) -> None:
    with pytest.raises(TrustPolicyError, match="not valid JSON"):
        parse_policy(b'{"version": 1,')
    with pytest.raises(TrustPolicyError, match="duplicate key 'enforcement'"):
        parse_policy(b'{"enforcement": "audit", "enforcement": "deny"}')
    with pytest.raises(TrustPolicyError, match="must be a JSON object"):
        parse_policy(b"[]")
    with pytest.raises(TrustPolicyError, match="the limit is"):
        parse_policy(b" " * (2 << 20))


# --- globs (nono's globset defaults) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("GEMINI.md", ["GEMINI.md"], ["docs/GEMINI.md", "GEMINI.mdx", "xGEMINI.md"]),
        ("SKILLS*", ["SKILLS.md", "SKILLS-ops.md", "SKILLS/x"], ["a/SKILLS.md"]),
        ("*.md", ["a.md", "docs/deep/a.md", ".hidden.md"], ["a.mdx"]),
        (".claude/**/*.md", [".claude/a.md", ".claude/x/y/a.md"], ["claude/a.md", "a.md"]),
        ("**/CLAUDE.md", ["CLAUDE.md", "a/b/CLAUDE.md"], ["a/xCLAUDE.md"]),
        ("docs/**", ["docs/a", "docs/a/b"], ["docsa"]),
        ("AGENT?.md", ["AGENTS.md"], ["AGENT.md"]),
        ("[A-C]*.md", ["A.md", "Cx.md"], ["D.md"]),
        ("[!A]x", ["Bx"], ["Ax"]),
        ("{GEMINI,CLAUDE}.md", ["GEMINI.md", "CLAUDE.md"], ["AGENT.md"]),
        ("a\\*b", ["a*b"], ["axb"]),
        ("a+b(c).md", ["a+b(c).md"], ["aab(c).md"]),
    ],
)
def test_glob_semantics(pattern: str, matches: list[str], misses: list[str]) -> None:
    glob = compile_glob(pattern)
    for path in matches:
        assert glob.matches(path), path
    for path in misses:
        assert not glob.matches(path), path


@pytest.mark.parametrize(
    ("pattern", "reldir", "could"),
    [
        ("GEMINI.md", "docs", False),
        ("docs/GEMINI.md", "docs", True),
        ("*.md", "link", True),
        ("**/GEMINI.md", "link", True),
        (".claude/**/*.md", "link", False),
        (".claude/**/*.md", ".claude", True),
        (".claude/**/*.md", ".claude/sub", True),
    ],
)
def test_could_match_below(pattern: str, reldir: str, could: bool) -> None:
    assert compile_glob(pattern).could_match_below(reldir) is could


# --- merging ----------------------------------------------------------------------------------


def signed(data: bytes, key: SigningKey, trusted: TrustPolicy | None = None) -> TrustPolicy:
    anchors: Any = trusted or [publisher_for_key(key.public_key, key.key_id)]
    return load_policy(data, sign_policy(data, key), trusted=anchors)


def test_merge_rules(key: SigningKey) -> None:
    colleague = generate_key("colleague")
    user_doc = doc(key, includes=[], enforcement="warn", files=["~/a.md", "/b.md"])
    user_doc["publishers"][0]["name"] = "me"
    user_doc["blocklist"]["digests"] = [{"sha256": "a" * 64, "description": "u", "added": "x"}]
    user = signed(json.dumps(user_doc).encode(), key)

    project_doc = doc(key, includes=["GEMINI.md", "*.prompt"], enforcement="audit",
                      files=["/b.md", "~/c.md"])
    project_doc["publishers"] = [
        {"name": "me", "key_id": "other", "public_key": export_public_key(colleague)},
        {"name": "colleague", "key_id": "colleague", "public_key": export_public_key(colleague)},
    ]
    project_doc["blocklist"]["digests"] = [
        {"sha256": "A" * 64, "description": "dup", "added": "x"},
        {"sha256": "b" * 64, "description": "p", "added": "x"},
    ]
    project = signed(json.dumps(project_doc).encode(), key, user)

    merged = merge_policies(user, project)
    assert merged.authoritative and merged.warnings == ()
    assert [p.name for p in merged.publishers] == ["me", "colleague"]
    assert merged.publishers[0].key_id == "default"  # the user's "me" wins
    assert merged.includes == ("GEMINI.md", "*.prompt")
    assert merged.files == ("~/a.md", "/b.md", "~/c.md")  # deduplicated by string, as nono
    assert [d.description for d in merged.blocklist.digests] == ["u", "p"]
    assert merged.enforcement == "warn"  # strictest of warn and audit


def test_project_cannot_weaken_user_enforcement(key: SigningKey) -> None:
    user = signed(init_policy(key=key), key)
    project = signed(init_policy(includes=["GEMINI.md"], key=key, enforcement="audit"), key, user)
    assert merge_policies(user, project).enforcement == "deny"


def test_project_alone_is_not_authoritative(key: SigningKey) -> None:
    project = signed(init_policy(includes=["GEMINI.md"], key=key), key)
    merged = merge_policies(None, project)
    assert not merged.authoritative
    assert merged.warnings == (NOT_AUTHORITATIVE,)
    assert merged.includes == ("GEMINI.md",)


def test_user_alone_is_authoritative(key: SigningKey) -> None:
    assert merge_policies(signed(init_policy(key=key), key), None).authoritative


def test_project_must_be_signed_by_a_key_the_user_trusts(key: SigningKey) -> None:
    user = signed(init_policy(key=key), key)
    stranger = generate_key("stranger")
    project = signed(init_policy(includes=["GEMINI.md"], key=stranger), stranger)
    with pytest.raises(TrustPolicyError, match="signed by a key the user-level trust policy"):
        merge_policies(user, project)


def test_only_verified_policies_merge(key: SigningKey) -> None:
    with pytest.raises(TrustPolicyError, match="has not been verified"):
        merge_policies(parse_policy(init_policy(key=key)), None)
    with pytest.raises(TrustPolicyError, match="no trust policy"):
        merge_policies(None, None)


# --- fuzzing: whatever the policy bytes, only TrustPolicyError comes out -----------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["deny", "warn", "audit", "GEMINI.md", "**/*.md", "[", "{a,b}", "a" * 64]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = [
    "version",
    "includes",
    "instruction_patterns",
    "files",
    "publishers",
    "blocklist",
    "enforcement",
]
_FUZZ_KEY = generate_key("default")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=7), st.booleans())
def test_random_policies_only_raise_policy_errors(changes: dict[str, Any], start: bool) -> None:
    data = doc(_FUZZ_KEY, **changes) if start else changes
    try:
        parse(data)
    except TrustPolicyError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_policy_errors(data: bytes) -> None:
    try:
        parse_policy(data)
    except TrustPolicyError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab/*?[]!^{},\\-.z", max_size=16), st.text(alphabet="ab/.z", max_size=12))
def test_random_globs_compile_or_raise_value_error(pattern: str, path: str) -> None:
    try:
        glob = compile_glob(pattern)
    except ValueError:
        return
    glob.matches(path)
    if glob.matches(path) and "/" in path:
        assert glob.could_match_below(path.rsplit("/", 1)[0])


def test_an_escaped_exact_pattern_is_looked_for_below_its_literal_directory() -> None:
    """An exact pattern with an escape (``\\/``, ``we\\ird/AGENTS.md``) names its literal path:
    the scan must enter the directories on its way (before: the raw pattern, backslashes
    and all, was compared, and a scan skipping ``weird`` never verified the file)."""
    assert compile_glob("\\/").could_match_below("")
    assert compile_glob("we\\ird/AGENTS.md").could_match_below("weird")
