"""parse_profile: nono's profile JSON, decoded strictly, every error naming file and JSON path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nonod.errors import ProfileError, UnknownKey, UnsupportedFeature
from nonod.profiles import Profile, parse_profile
from nonod.profiles._schema import ConditionalPath, DomainRule

EXAMPLE = Path("/work/shared/examples/gitbot-profile.json")
needs_example = pytest.mark.skipif(not EXAMPLE.is_file(), reason="shared example not present")
REPO = Path(__file__).resolve().parents[2]


def _bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


# (name, document, expected fragment of the message, naming the JSON path)
MALFORMED: list[tuple[str, bytes, str]] = [
    ("wrong type in array", _bytes({"network": {"allow_hosts": ["api.github.com", "smee.io", 3]}}),
     "gitbot.json: $.network.allow_hosts[2]: Expected `str`, got `int`"),
    ("unknown top-level key", _bytes({"meta": {"name": "x"}, "sandbox": {}}),
     "gitbot.json: $.sandbox: unknown key `sandbox`"),
    ("unknown nested key", _bytes({"network": {"allow_host": ["a.com"]}}),
     "$.network.allow_host: unknown key `allow_host`"),
    ("unknown key in a custom credential",
     _bytes({"network": {"custom_credentials": {"gh": {"upstream": "https://x.com",
                                                        "credential_key": "k", "header": 1}}}}),
     "unknown key `header`"),
    ("bad workdir access", _bytes({"workdir": {"access": "all"}}),
     "$.workdir.access: Invalid enum value 'all' (expected one of: none, read, readwrite, write)"),
    ("bad signal mode", _bytes({"security": {"signal_mode": "none"}}),
     "$.security.signal_mode: Invalid enum value 'none'"),
    ("bad ipc mode", _bytes({"security": {"ipc_mode": "everything"}}),
     "$.security.ipc_mode: Invalid enum value 'everything'"),
    ("unknown group", _bytes({"groups": {"include": ["pyhton_runtime"]}}),
     "$.groups.include[0]: unknown group `pyhton_runtime`"),
    ("unknown legacy group", _bytes({"security": {"groups": ["python_runtime", "nope"]}}),
     "$.security.groups[1]: unknown group `nope`"),
    ("excluding a required deny group", _bytes({"groups": {"exclude": ["deny_credentials"]}}),
     "$.groups.exclude[0]: group `deny_credentials` is required and cannot be excluded"),
    ("excluding a required group, legacy key",
     _bytes({"policy": {"exclude_groups": ["deny_shell_history"]}}),
     "$.policy.exclude_groups[0]: group `deny_shell_history` is required"),
    ("unknown variable", _bytes({"filesystem": {"read": ["/ok", "$PROJECT/src"]}}),
     "$.filesystem.read[1]: unknown variable `$PROJECT`"),
    ("unknown variable, legacy key", _bytes({"policy": {"add_deny_access": ["${SECRETS}"]}}),
     "$.policy.add_deny_access[0]: unknown variable `$SECRETS`"),
    ("unterminated variable", _bytes({"filesystem": {"write": ["${HOME/x"]}}),
     "$.filesystem.write[0]: unterminated `${`"),
    ("relative path", _bytes({"filesystem": {"read": ["src"]}}),
     "$.filesystem.read[0]: `src` is not an absolute path"),
    ("~user path", _bytes({"filesystem": {"read": ["~bob/x"]}}),
     "$.filesystem.read[0]: `~bob/x`: only `~` and `~/...` are supported"),
    ("NUL in a path", _bytes({"filesystem": {"deny": ["/a\x00b"]}}),
     "$.filesystem.deny[0]: path contains a NUL character"),
    ("not JSON", b"\xff\xfe{", "gitbot.json: not valid JSON"),
    ("truncated JSON", b'{"meta": {"name": "x"', "gitbot.json: "),
    ("array instead of object", b"[]", "gitbot.json: $: Expected `object`, got `array`"),
    ("null instead of object", b"null", "gitbot.json: $: Expected `object`, got `null`"),
    ("listen_port 0", _bytes({"network": {"listen_port": [5001, 0]}}),
     "$.network.listen_port[1]: Expected `int` >= 1"),
    ("listen_port 70000", _bytes({"network": {"listen_port": [70000]}}),
     "$.network.listen_port[0]: Expected `int` <= 65535"),
    ("listen_port as string", _bytes({"network": {"listen_port": ["5001"]}}),
     "$.network.listen_port[0]: Expected `int`, got `str`"),
    ("duplicate key", b'{"meta": {"name": "a", "name": "b"}}',
     "gitbot.json: $.meta.name: key appears twice in the same object"),
    ("extends not a name", _bytes({"extends": "../../etc/passwd"}),
     "$.extends: `../../etc/passwd` is not a profile name"),
    ("extends wrong type", _bytes({"extends": 7}),
     "$.extends: Expected `str | array | null`, got `int`"),
    ("meta wrong type", _bytes({"meta": "gitbot"}), "$.meta: Expected `object`, got `str`"),
    ("block with allowed domains", _bytes({"network": {"block": True, "allow_domain": ["a.com"]}}),
     "$.network.block: `block: true` cannot be combined"),
    ("host with scheme", _bytes({"network": {"allow_domain": ["https://api.github.com"]}}),
     "$.network.allow_domain[0]: `https://api.github.com` is not a host name"),
    ("wildcard over a TLD", _bytes({"network": {"allow_hosts": ["*.com"]}}),
     "$.network.allow_hosts[0]: `*.com` is not a host name"),
    ("unknown network profile", _bytes({"network": {"network_profile": "everything"}}),
     "$.network.network_profile: unknown network profile `everything`"),
    ("plain http upstream",
     _bytes({"network": {"custom_credentials": {"gh": {"upstream": "http://api.github.com",
                                                        "credential_key": "github_token"}}}}),
     "$.network.custom_credentials.gh.upstream: upstreams must use https"),
    ("credential without key",
     _bytes({"network": {"custom_credentials": {"gh": {"upstream": "https://api.github.com"}}}}),
     "$.network.custom_credentials.gh: a custom credential needs `credential_key`"),
    ("header injection via CRLF",
     _bytes({"network": {"custom_credentials": {"gh": {
         "upstream": "https://api.github.com", "credential_key": "k",
         "credential_format": "Bearer {}\r\nX-Evil: 1"}}}}),
     "$.network.custom_credentials.gh.credential_format: must not contain CR or LF"),
    ("reserved set_vars key", _bytes({"environment": {"set_vars": {"PATH": "/evil"}}}),
     "$.environment.set_vars.PATH: `PATH` is reserved"),
    ("reserved env credential target", _bytes({"env_credentials": {"k": "LD_PRELOAD"}}),
     "$.env_credentials.k: `LD_PRELOAD` is reserved"),
    ("bad allow_vars pattern", _bytes({"environment": {"allow_vars": ["A*B"]}}),
     "$.environment.allow_vars[0]: `A*B`: `*` is only allowed at the end"),
    ("when with a distro qualifier",
     _bytes({"filesystem": {"read": [{"path": "/opt", "when": "linux:fedora"}]}}),
     "$.filesystem.read[0].when: `when` predicate `linux:fedora` is not supported by nonod"),
    ("conditional path without path", _bytes({"filesystem": {"read": [{"when": "linux"}]}}),
     "$.filesystem.read[0]: Object missing required field `path`"),
    ("number out of range", b'{"network": {"listen_port": [1e400]}}', "gitbot.json: "),
    ("bad layer name", _bytes({"nonod": {"allow_degraded": ["Net Work"]}}),
     "$.nonod.allow_degraded[0]: `Net Work` is not a layer name"),
    ("negative process cap", _bytes({"nonod": {"max_processes": -1}}),
     "$.nonod.max_processes"),
]

UNSUPPORTED: list[tuple[str, bytes, str]] = [
    ("session hooks", _bytes({"session_hooks": {"before": {"script": "/bin/true"}}}),
     "$.session_hooks: `session_hooks` is not supported by nonod"),
    ("credential capture", _bytes({"credential_capture": {"gh": {"command": ["gh"]}}}),
     "$.credential_capture: `credential_capture` is not supported by nonod"),
    ("chained tool policies",
     _bytes({"command_policies": {"commands": {"gh": {"can_use": ["ssh"]}}}}),
     "$.command_policies.commands.gh.can_use: `can_use` (chained tools) is not supported by "
     "nonod"),
    ("packs", _bytes({"packs": ["always-further/claude"]}), "$.packs: `packs` is not supported"),
    ("commands.deny", _bytes({"commands": {"deny": ["rm"]}}),
     "$.commands.deny: `commands.deny` is not supported by nonod"),
    ("add_deny_commands", _bytes({"policy": {"add_deny_commands": ["rm"]}}),
     "$.policy.add_deny_commands: `policy.add_deny_commands` is not supported"),
    ("endpoint rules on a domain",
     _bytes({"network": {"allow_domain": [{"domain": "api.github.com",
                                           "endpoints": [{"method": "GET", "path": "/x"}]}]}}),
     "$.network.allow_domain[0].endpoints: per-endpoint rules on `allow_domain` is not supported"),
    ("oauth2 credential",
     _bytes({"network": {"custom_credentials": {"x": {
         "upstream": "https://x.com", "auth": {"token_url": "https://x.com/t", "client_id": "a",
                                              "client_secret": "env://S"}}}}}),
     "$.network.custom_credentials.x.auth: OAuth2 token exchange (`auth`) is not supported"),
    ("unlink protection group", _bytes({"groups": {"include": ["unlink_protection"]}}),
     "$.groups.include[0]: group `unlink_protection` is not supported by nonod"),
]


@pytest.mark.parametrize(("name", "data", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_profiles_name_file_and_path(name: str, data: bytes, expected: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "gitbot.json")
    assert expected in info.value.message
    assert info.value.source == "gitbot.json"


@pytest.mark.parametrize(("name", "data", "expected"), UNSUPPORTED,
                         ids=[m[0] for m in UNSUPPORTED])
def test_enforcement_changing_features_are_refused(name: str, data: bytes, expected: str) -> None:
    with pytest.raises(UnsupportedFeature, match="not supported by nonod") as info:
        parse_profile(data, "p.json")
    assert expected in info.value.message
    assert info.value.code == "profile.unsupported"


def test_there_are_at_least_fifteen_malformed_cases() -> None:
    assert len(MALFORMED) >= 15


def test_unknown_key_is_its_own_error_with_a_suggestion() -> None:
    with pytest.raises(UnknownKey) as info:
        parse_profile(_bytes({"filesystem": {"read_files": ["/etc/hosts"]}}), "p.json")
    err = info.value
    assert err.code == "profile.unknown_key"
    assert err.path == "$.filesystem.read_files"
    assert err.hint is not None and "`read_file`" in err.hint


def test_unknown_top_level_key_points_to_the_nonod_section() -> None:
    with pytest.raises(UnknownKey) as info:
        parse_profile(_bytes({"allow_degraded": ["seccomp"]}), "p.json")
    assert info.value.hint is not None and "`nonod`" in info.value.hint


@needs_example
def test_gitbot_example_parses_unchanged() -> None:
    data = EXAMPLE.read_bytes()
    profile = parse_profile(data, str(EXAMPLE))
    assert isinstance(profile, Profile)
    assert profile.meta.name == "gitbot"
    assert profile.workdir.access == "readwrite"
    assert profile.security.groups == ("python_runtime",)
    assert profile.network.allow_hosts == (
        "api.github.com", "generativelanguage.googleapis.com", "smee.io")
    assert profile.network.proxy_credentials == ("gemini",)
    github = profile.network.custom_credentials["github"]
    assert (github.upstream, github.credential_key) == ("https://api.github.com", "github_token")
    assert EXAMPLE.read_bytes() == data  # nothing writes back


@needs_example
def test_builtin_gitbot_is_the_shared_example_byte_for_byte() -> None:
    assert (REPO / "profiles" / "gitbot.json").read_bytes() == EXAMPLE.read_bytes()


def test_canonical_keys_and_conditional_entries() -> None:
    profile = parse_profile(_bytes({
        "$schema": "https://nono.sh/schemas/nono-profile.schema.json",
        "meta": {"name": "c", "description": None},
        "groups": {"include": ["node_runtime", {"name": "nix_runtime", "when": "linux"}]},
        "filesystem": {"read": ["$WORKDIR/docs", {"path": "~/Library/x", "when": ["macos"]}]},
        "network": {"allow_domain": ["api.github.com", {"domain": "pypi.org", "endpoints": []}],
                    "network_profile": None, "listen_port": [5001]},
        "secrets": {"openai_api_key": {"env_var": "OPENAI_API_KEY", "when": "!macos"}},
        "linux": {"af_unix_mediation": "pathname"},
        "nonod": {"allow_degraded": ["seccomp"], "writable_persistence": ["$WORKDIR/.envrc"]},
    }), "c.json")
    assert profile.filesystem.read[1] == ConditionalPath(path="~/Library/x", when=("macos",))
    assert profile.network.allow_domain[1] == DomainRule(domain="pypi.org", endpoints=())
    assert profile.network.network_profile is None
    assert profile.nonod.allow_degraded == ("seccomp",)


def test_cosmetic_nono_keys_are_accepted() -> None:
    parse_profile(_bytes({
        "interactive": True,
        "hooks": {"claude-code": {"event": "PostToolUseFailure", "matcher": "Read",
                                  "script": "nono-hook.sh"}},
        "undo": {"exclude_patterns": ["node_modules"]},
        "rollback": {"exclude_globs": ["*.tmp"]},
        "diagnostics": {"suppress_system_services": ["forbidden-exec-sugid"]},
        "filesystem": {"suppress_save_prompt": ["~/.copilot"], "ignore": ["/x"]},
        "open_urls": {"allow_origins": ["https://console.anthropic.com"], "allow_localhost": True},
        "allow_gpu": False,
        "skipdirs": ["target"],
        "session_hooks": None,
        "credential_capture": {},
        "commands": {"allow": ["rm"]},
    }), "cosmetic.json")


def test_legacy_spellings_parse() -> None:
    profile = parse_profile(_bytes({
        "security": {"groups": ["rust_runtime"], "allowed_commands": ["pip"]},
        "policy": {"add_allow_read": ["/opt"], "add_allow_write": ["/var/tmp"],
                   "add_allow_readwrite": ["$WORKDIR"], "add_deny_access": ["~/.ssh"],
                   "override_deny": ["~/.bashrc"], "exclude_groups": ["user_tools"]},
        "network": {"proxy_allow": ["a.com"], "allow_proxy": ["b.com"], "allow_hosts": ["c.com"],
                    "proxy_credentials": ["openai"], "port_allow": [3000], "allow_port": [0],
                    "external_proxy": "proxy.corp:3128", "external_proxy_bypass": ["*.corp.com"]},
        "brokered_commands": ["--verbose"],
    }), "legacy.json")
    assert profile.policy.add_deny_access == ("~/.ssh",)
