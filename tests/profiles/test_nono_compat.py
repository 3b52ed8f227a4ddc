"""nono's current spellings are accepted and mean what they mean in nono; what nonod cannot
enforce is refused at its key with a hint, never accepted and ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nonod.errors import ExtendsError, ProfileError, ProfileNotFound, UnsupportedFeature
from nonod.profiles import ResolveContext, load_profile, parse_profile, resolve


def _bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _ctx(tmp_path: Path) -> ResolveContext:
    return ResolveContext(home=f"{tmp_path}-home", workdir=str(tmp_path), uid=1000)


# --- meta -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("doc", "path"), [
    ({"meta": {"version": "1.0.0"}}, "$.meta"),
    ({"meta": {}}, "$.meta"),
    ({"meta": {"name": None}}, "$.meta.name"),
    ({"meta": {"name": "x", "version": None}}, "$.meta.version"),
])
def test_meta_needs_a_string_name_as_in_nono(doc: object, path: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(_bytes(doc), "p.json")
    assert info.value.path == path


def test_meta_may_be_absent_and_description_null() -> None:
    parse_profile(b"{}", "p.json")
    parse_profile(_bytes({"meta": {"name": "x", "description": None, "author": None}}),
                  "p.json")


# --- extends and packs ----------------------------------------------------------------------

@pytest.mark.parametrize("ref", ["always-further/claude", "acme/tools@1.2.0"])
def test_extending_a_registry_pack_says_what_to_do(ref: str) -> None:
    with pytest.raises(ExtendsError) as info:
        parse_profile(_bytes({"extends": ["default", ref]}), "p.json")
    assert info.value.path == "$.extends[1]"
    assert "nono registry pack" in info.value.message
    assert info.value.hint is not None
    assert "~/.config/nono/profiles/NAME.json" in info.value.hint


def test_loading_a_registry_pack_by_name_says_what_to_do() -> None:
    with pytest.raises(ProfileNotFound, match="nono registry pack") as info:
        load_profile("always-further/claude", user_dir=None)
    assert info.value.hint is not None and "packages/always-further/claude" in info.value.hint


def test_a_pack_profile_copied_into_the_user_directory_is_extended(tmp_path: Path) -> None:
    # What the hint tells people to do, for nono's own `binary` example (extends claude-code).
    fixture = Path(__file__).parent / "fixtures" / "nono" / "profile-binary.json"
    user_dir = tmp_path / "profiles"
    user_dir.mkdir()
    (user_dir / "claude-code.json").write_text(
        json.dumps({"meta": {"name": "claude-code"}, "workdir": {"access": "readwrite"}}))
    profile = load_profile(str(fixture), user_dir=user_dir)
    assert resolve(profile, _ctx(tmp_path)).binary == "/home/user/.local/bin/claude"


# --- binary ---------------------------------------------------------------------------------

def test_top_level_binary_is_nonod_binary(tmp_path: Path) -> None:
    top = parse_profile(_bytes({"binary": "$WORKDIR/run"}), "p.json")
    ours = parse_profile(_bytes({"nonod": {"binary": "$WORKDIR/run"}}), "p.json")
    assert resolve(top, _ctx(tmp_path)).binary == resolve(ours, _ctx(tmp_path)).binary \
        == f"{tmp_path}/run"


def test_both_binary_spellings_in_one_file_are_refused() -> None:
    with pytest.raises(ProfileError, match="set one") as info:
        parse_profile(_bytes({"binary": "/a", "nonod": {"binary": "/b"}}), "p.json")
    assert info.value.path == "$.binary"


@pytest.mark.parametrize(("base", "child", "expected"), [
    ({"nonod": {"binary": "/base"}}, {"binary": "/child"}, "/child"),
    ({"binary": "/base"}, {"nonod": {"binary": "/child"}}, "/child"),
    ({"binary": "/base"}, {}, "/base"),
])
def test_the_childs_binary_wins_in_either_spelling(
    tmp_path: Path, base: dict[str, object], child: dict[str, object], expected: str
) -> None:
    user_dir = tmp_path / "profiles"
    user_dir.mkdir()
    (user_dir / "base.json").write_text(json.dumps(base))
    (user_dir / "child.json").write_text(json.dumps({"extends": "base", **child}))
    assert resolve(load_profile("child", user_dir=user_dir), _ctx(tmp_path)).binary == expected


# --- endpoint_policy ------------------------------------------------------------------------

def _route(policy: object, **extra: object) -> bytes:
    return _bytes({"network": {"custom_credentials": {"gh": {
        "upstream": "https://api.github.com", "credential_key": "gh_token",
        "endpoint_policy": policy, **extra}}}})


ACCEPTED_POLICIES: list[tuple[str, object, tuple[tuple[str, str], ...]]] = [
    ("allow list under the default deny",
     {"allow": [{"method": "GET", "path": "/repos/*/issues", "reason": "read issues"}]},
     (("GET", "/repos/*/issues"),)),
    ("explicit deny default, routed form",
     {"default": {"decision": "deny"}, "allow": [{"method": "POST", "path": "/x"}]},
     (("POST", "/x"),)),
    ("allow default: every request", {"default": "allow"}, ()),
    # nono's own example: DELETE is denied next to GET and POST allows, so it only repeats
    # the default.
    ("deny of a method no allow rule has",
     {"default": "deny",
      "allow": [{"method": "GET", "path": "/repos/o/r/issues"},
                {"method": "POST", "path": "/repos/o/r/issues/*/comments"}],
      "deny": [{"method": "DELETE", "path": "/**", "reason": "destructive"}]},
     (("GET", "/repos/o/r/issues"), ("POST", "/repos/o/r/issues/*/comments"))),
]


@pytest.mark.parametrize(("name", "policy", "rules"), ACCEPTED_POLICIES,
                         ids=[a[0] for a in ACCEPTED_POLICIES])
def test_endpoint_policy_becomes_the_routes_allow_list(
    tmp_path: Path, name: str, policy: object, rules: tuple[tuple[str, str], ...]
) -> None:
    resolved = resolve(parse_profile(_route(policy), "p.json"), _ctx(tmp_path))
    ((_, route),) = resolved.network.custom_credentials
    assert route.endpoint_rules == rules


def test_endpoint_policy_is_enforced_by_the_proxys_matcher(tmp_path: Path) -> None:
    from nonod.credentials import EndpointDenied, EndpointRules

    _, policy, _ = ACCEPTED_POLICIES[3]
    resolved = resolve(parse_profile(_route(policy), "p.json"), _ctx(tmp_path))
    rules = EndpointRules(resolved.network.custom_credentials[0][1].endpoint_rules)
    rules.check("GET", "/repos/o/r/issues")
    for method, path in (("DELETE", "/repos/o/r/issues"), ("GET", "/user"),
                         ("POST", "/repos/o/r/issues")):
        with pytest.raises(EndpointDenied):
            rules.check(method, path)


REFUSED_POLICIES: list[tuple[str, object, str, type[ProfileError]]] = [
    ("approve rules", {"approve": [{"method": "POST", "path": "/x"}],
                       "allow": [{"method": "GET", "path": "/x"}]},
     ".endpoint_policy.approve", UnsupportedFeature),
    ("approve default", {"default": {"decision": "approve", "backend": "terminal"}},
     ".endpoint_policy.default", UnsupportedFeature),
    ("deny under allow", {"default": "allow", "deny": [{"method": "DELETE", "path": "/**"}]},
     ".endpoint_policy.deny", UnsupportedFeature),
    ("deny overlapping an allow",
     {"allow": [{"method": "GET", "path": "/repos/**"}],
      "deny": [{"method": "GET", "path": "/repos/secret/**"}]},
     ".endpoint_policy.deny[0]", UnsupportedFeature),
    ("any-method deny", {"allow": [{"method": "GET", "path": "/a"}],
                         "deny": [{"method": "*", "path": "/b"}]},
     ".endpoint_policy.deny[0]", UnsupportedFeature),
    ("nothing allowed", {"default": "deny"}, ".endpoint_policy", ProfileError),
    ("bad method", {"allow": [{"method": "GE T", "path": "/a"}]},
     ".endpoint_policy.allow[0].method", ProfileError),
]


@pytest.mark.parametrize(("name", "policy", "where", "error"), REFUSED_POLICIES,
                         ids=[r[0] for r in REFUSED_POLICIES])
def test_endpoint_policy_nonod_cannot_enforce_is_refused_with_a_hint(
    name: str, policy: object, where: str, error: type[ProfileError]
) -> None:
    with pytest.raises(error) as info:
        parse_profile(_route(policy), "p.json")
    assert info.value.path == "$.network.custom_credentials.gh" + where
    assert info.value.hint or name == "bad method"


def test_endpoint_policy_and_endpoint_rules_together_are_refused() -> None:
    data = _route({"allow": [{"method": "GET", "path": "/a"}]},
                  endpoint_rules=[{"method": "GET", "path": "/b"}])
    with pytest.raises(ProfileError, match="not both"):
        parse_profile(data, "p.json")


# --- the rest of nono's keys ----------------------------------------------------------------

@pytest.mark.parametrize(("value", "isolation"), [
    ("auto", "namespaces"), ("external", "namespaces"), ("landlock", "landlock"),
    ("namespaces", "namespaces"),
])
def test_nonos_sandbox_policy_values(tmp_path: Path, value: str, isolation: str) -> None:
    profile = parse_profile(_bytes({"linux": {"sandbox_policy": value}}), "p.json")
    assert resolve(profile, _ctx(tmp_path)).network_isolation == isolation


def test_allow_http2_and_socket_subtrees_are_accepted_with_a_note(tmp_path: Path) -> None:
    profile = parse_profile(_bytes({"network": {"allow_http2": True},
                                    "filesystem": {"unix_socket_subtree": ["/run/x"]}}),
                            "p.json")
    notes = " ".join(n.message for n in resolve(profile, _ctx(tmp_path)).notes)
    assert "allow_http2" in notes and "unix_socket" in notes


def test_pathname_socket_mediation_is_not_silently_dropped() -> None:
    # Without nonod.unix_sockets no AF_UNIX socket can be made (stricter than nono's pathname
    # mode); with it, nonod could not keep the promise of pathname mediation.
    parse_profile(_bytes({"linux": {"af_unix_mediation": "pathname"}}), "p.json")
    with pytest.raises(UnsupportedFeature) as info:
        parse_profile(_bytes({"linux": {"af_unix_mediation": "pathname"},
                              "nonod": {"unix_sockets": True}}), "p.json")
    assert info.value.path == "$.nonod.unix_sockets"


def test_process_info_mode_that_linux_does_not_widen_gets_a_note(tmp_path: Path) -> None:
    profile = parse_profile(_bytes({"security": {"process_info_mode": "allow_all"}}), "p.json")
    notes = [n.message for n in resolve(profile, _ctx(tmp_path)).notes]
    assert any(m.startswith("security.process_info_mode") for m in notes)


@pytest.mark.parametrize("variable", ["$NONO_PACKAGES", "${NONO_CONFIG}", "$PACK_DIR"])
def test_nonos_store_variables_say_why_they_are_refused(variable: str) -> None:
    with pytest.raises(ProfileError, match="nonod has no pack store") as info:
        parse_profile(_bytes({"command_args": [f"--config={variable}/x"]}), "p.json")
    assert info.value.path == "$.command_args[0]"


@pytest.mark.parametrize("section", [{}, {"commands": {}}, {"executable_dirs": ["/opt/bin"]}])
def test_command_policies_without_commands_is_inactive_as_in_nono(section: object) -> None:
    parse_profile(_bytes({"command_policies": section}), "p.json")


@pytest.mark.parametrize(("doc", "path"), [
    ({"env_credentials": {"cmd://gh": "GH_TOKEN"}}, '$.env_credentials["cmd://gh"]'),
    ({"secrets": {"cmd://gh": {"env_var": "GH_TOKEN"}}}, '$.secrets["cmd://gh"]'),
    ({"network": {"credentials": ["gh"], "custom_credentials": {"gh": {
        "upstream": "https://api.github.com", "credential_key": "cmd://gh",
        "env_var": "GH_TOKEN"}}}}, "$.network.custom_credentials.gh.credential_key"),
])
def test_a_cmd_credential_is_refused_as_nonos_capture(doc: object, path: str) -> None:
    with pytest.raises(UnsupportedFeature, match="credential_capture") as info:
        parse_profile(_bytes(doc), "p.json")
    assert info.value.path == path
    assert info.value.hint is not None and "nonoctl secret set" in info.value.hint


@pytest.mark.parametrize(("field", "value", "refused"), [
    ("aws_auth", {}, True), ("aws_auth", None, False), ("auth", {}, True),
    ("proxy", {}, False), ("proxy", {"inject_header": "x"}, True),
])
def test_an_empty_signing_block_is_a_signing_route_an_empty_override_is_none(
    field: str, value: object, refused: bool
) -> None:
    data = _bytes({"network": {"custom_credentials": {"r": {
        "upstream": "https://api.example.com", "credential_key": "k", field: value}}}})
    if not refused:
        parse_profile(data, "p.json")
        return
    with pytest.raises(UnsupportedFeature) as info:
        parse_profile(data, "p.json")
    assert info.value.path == f"$.network.custom_credentials.r.{field}"
    assert info.value.hint is not None
