"""``command_policies``: what is checked, what a tool's child session is granted, and the
invocation verdict (deny, then allow, then default)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from nonod._dryrun import summarize
from nonod.errors import ProfileError
from nonod.policy import Access
from nonod.profiles import ResolveContext, parse_profile, resolve
from nonod.toolsandbox import InvocationPolicy, decide


def _tool_profile(tmp_path: Path, policies: dict[str, object]) -> bytes:
    return json.dumps({"meta": {"name": "agent"},
                       "network": {"allow_domain": ["agent.example"]},
                       "command_policies": policies}).encode()


def _gh(tmp_path: Path) -> str:
    gh = tmp_path / "bin" / "gh"
    gh.parent.mkdir()
    gh.write_text("#!/bin/sh\n")
    gh.chmod(0o755)
    return str(gh)


GITBOT_TOOLS = {
    "credentials": {"github": {"type": "proxy", "upstream": "https://api.github.com",
                               "credential_key": "github_token", "env_var": "GH_TOKEN"}},
    "commands": {"gh": {"from": {"session": {
        "sandbox": {"fs_read": ["."], "network": {"allow_domain": ["api.github.com"]},
                    "credentials": [{"name": "github", "endpoint_policy": {
                        "default": "deny",
                        "allow": [{"method": "GET", "path": "/repos/*/*/issues/**"}]}}]},
        "invocation_policy": {"default": "deny",
                              "deny": [{"argv": {"prefix": ["issue", "delete"]},
                                        "reason": "no deleting"}],
                              "allow": [{"argv": {"prefix": ["issue"]}}]}}}}},
}


def test_the_tool_gets_its_own_policy_and_the_agent_keeps_its_own(tmp_path: Path) -> None:
    gh = _gh(tmp_path)
    policies = json.loads(json.dumps(GITBOT_TOOLS))
    policies["commands"]["gh"]["executable"] = gh
    profile = parse_profile(_tool_profile(tmp_path, policies), "agent.json")
    ctx = ResolveContext(home=str(tmp_path), workdir=str(tmp_path), uid=1000)
    policy = resolve(profile, ctx)
    # The agent: its own host, no route, no tool grant.
    assert policy.network.allow_domain == ("agent.example",)
    assert policy.network.custom_credentials == ()
    (tool,) = policy.tools
    assert (tool.name, tool.executable) == ("gh", gh)
    child = tool.policy
    assert child is not None
    # The tool: its host and its route with the endpoint allow-list, not the agent's host.
    assert child.network.allow_domain == ("api.github.com",)
    ((name, route),) = child.network.custom_credentials
    assert (name, route.credential_key, route.env_var) == ("github", "github_token", "GH_TOKEN")
    assert route.endpoint_rules == (("GET", "/repos/*/*/issues/**"),)
    reads = {g.path: g.access for g in child.grants if g.source == "profile"}
    assert reads[str(tmp_path)] == Access.READ
    assert reads[gh] == Access.READ
    assert msgspec.json.decode(tool.invocation, type=InvocationPolicy).default == "deny"


def test_a_tool_without_network_gets_none(tmp_path: Path) -> None:
    gh = _gh(tmp_path)
    profile = parse_profile(_tool_profile(tmp_path, {"commands": {"gh": {
        "executable": gh, "sandbox": {"fs_read": ["."]}}}}), "agent.json")
    policy = resolve(profile, ResolveContext(home=str(tmp_path), workdir=str(tmp_path),
                                             uid=1000))
    child = policy.tools[0].policy
    assert child is not None and child.network.block


def test_from_session_deny_keeps_the_mask_but_no_policy(tmp_path: Path) -> None:
    gh = _gh(tmp_path)
    profile = parse_profile(_tool_profile(tmp_path, {"commands": {"gh": {
        "executable": gh, "from": {"session": "deny"}}}}), "agent.json")
    policy = resolve(profile, ResolveContext(home=str(tmp_path), workdir=str(tmp_path),
                                             uid=1000))
    assert [(t.name, t.policy) for t in policy.tools] == [("gh", None)]


@pytest.mark.parametrize(("policies", "path", "fragment"), [
    ({"commands": {"gh": {"can_use": ["git"]}}}, "$.command_policies.commands.gh.can_use",
     "chained tools"),
    ({"commands": {"gh": {"from": {"git": {"fs_read": ["."]}}}}},
     "$.command_policies.commands.gh.from.git", "calls from `git`"),
    ({"commands": {"gh": {"sandbox": {"credentials": ["nope"]}}}},
     "$.command_policies.commands.gh.sandbox.credentials[0]", "not defined"),
    ({"commands": {"gh": {"executable": "bin/gh"}}},
     "$.command_policies.commands.gh.executable", "absolute"),
    ({"commands": {"gh": {"from": {"session": {"sandbox": {}, "invocation_policy": {
        "approve": [{"argv": {"prefix": ["x"]}, "backend": "ops"}]}}}}}},
     "$.command_policies.commands.gh.from.session.invocation_policy.approve[0].backend",
     "daemon's own queue"),
    ({"commands": {"gh": {"from": {"session": {"sandbox": {}, "invocation_policy": {
        "allow": [{"argv": {"prefix": ["x"]}, "timeout_secs": 5}]}}}}}},
     "$.command_policies.commands.gh.from.session.invocation_policy.allow[0].timeout_secs",
     "only `approve` rules"),
    ({"commands": {"gh": {"from": {"session": {"sandbox": {}, "invocation_policy": {
        "allow": [{"argv": {"prefix": ["x"], "exact": ["x"]}}]}}}}}},
     "$.command_policies.commands.gh.from.session.invocation_policy.allow[0].argv",
     "exactly one"),
    ({"commands": {"gh": {"from": {"session": {"sandbox": {"fs_raed": ["."]}}}}}},
     "$.command_policies.commands.gh.from.session.sandbox", "fs_raed"),
    ({"credentials": {"c": {"type": "raw-file", "path": "/x"}}, "commands": {"gh": {}}},
     "$.command_policies.credentials.c.type", "through its proxy only"),
])
def test_what_nonod_does_not_run_is_refused_by_name(
        tmp_path: Path, policies: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(_tool_profile(tmp_path, policies), "agent.json")
    assert info.value.path == path
    assert fragment in str(info.value)


def _policy(**kwargs: object) -> InvocationPolicy:
    return msgspec.convert(kwargs, type=InvocationPolicy)


def test_invocation_policy_order_is_deny_allow_default() -> None:
    policy = _policy(default="deny",
                     deny=[{"argv": {"prefix": ["issue", "delete"]}, "reason": "no deleting"}],
                     allow=[{"argv": {"prefix": ["issue"]}},
                            {"argv": {"exact": ["api", "user"]}},
                            {"argv": {"contains": ["--json"]}, "env": {"GH_HOST": {
                                "equals": "github.com"}}}])
    assert decide(policy, ["issue", "list"], {}).allowed
    denied = decide(policy, ["issue", "delete", "3"], {})
    assert (denied.allowed, denied.rule, denied.reason) == (False, "deny[0]", "no deleting")
    assert not decide(policy, ["issuex"], {}).allowed
    assert decide(policy, ["api", "user"], {}).allowed
    assert not decide(policy, ["api", "user", "x"], {}).allowed
    assert decide(policy, ["x", "--json"], {"GH_HOST": "github.com"}).allowed
    assert not decide(policy, ["x", "--json"], {"GH_HOST": "evil"}).allowed
    assert decide(policy, ["pr"], {}).rule == "default"
    assert decide(None, ["anything"], {}).allowed
    assert decide(_policy(), ["anything"], {}).allowed  # nono's default is allow


def test_approve_comes_after_deny_and_before_allow() -> None:
    policy = _policy(default={"decision": "approve", "timeout_secs": 9},
                     deny=[{"argv": {"prefix": ["issue", "delete"]}}],
                     approve=[{"argv": {"prefix": ["issue"]}, "timeout_secs": 30}],
                     allow=[{"argv": {"prefix": ["issue", "list"]}}])
    assert decide(policy, ["issue", "delete"], {}).decision == "deny"
    asked = decide(policy, ["issue", "list"], {})  # approve wins over allow
    assert (asked.decision, asked.rule, asked.timeout) == ("approve", "approve[0]", 30)
    fallback = decide(policy, ["pr"], {})
    assert (fallback.decision, fallback.rule, fallback.timeout) == ("approve", "default", 9)


def test_deny_and_approve_rules_are_not_passed_by_options_among_the_words() -> None:
    """``gh issue -R o/r delete 3`` is ``gh issue delete 3`` with an option to gh: a deny rule
    on ``issue delete`` (or an approve rule) must still match; an allow rule matches the
    arguments as written only."""
    policy = _policy(default="deny",
                     deny=[{"argv": {"prefix": ["issue", "delete"]}},
                           {"argv": {"exact": ["repo", "delete"]}}],
                     approve=[{"argv": {"prefix": ["issue", "comment"]}}],
                     allow=[{"argv": {"prefix": ["issue"]}}, {"argv": {"prefix": ["repo"]}}])
    for args in (["issue", "-R", "o/r", "delete", "3"], ["issue", "--repo=o/r", "delete"],
                 ["-R", "o/r", "issue", "delete"], ["issue", "--yes", "delete", "3"],
                 ["repo", "delete", "--yes"], ["repo", "-R", "x", "delete"]):
        assert decide(policy, args, {}).decision == "deny", args
    for args in (["issue", "-R", "o/r", "comment", "1", "-b", "hi"],
                 ["issue", "--repo", "o/r", "comment", "1"]):
        assert decide(policy, args, {}).decision == "approve", args
    for args in (["issue", "list", "--label", "delete"], ["issue", "--", "-R", "delete"],
                 ["issue", "view", "delete"], ["issue", "-R", "o/r", "list"]):
        assert decide(policy, args, {}).decision == "allow", args
    assert decide(policy, ["--", "issue", "delete"], {}).decision == "deny"
    long = ["issue", *(["-x"] * 50_000), "delete"]  # bounded work, whatever the length
    assert decide(policy, long, {}).decision == "deny"
    forced = _policy(deny=[{"argv": {"contains": ["--force"]}}])
    assert decide(forced, ["push", "--force=true"], {}).decision == "deny"
    assert decide(forced, ["push", "--forceful"], {}).decision == "allow"
    # Respelt as the tool reads it: git and getopt take an unambiguous prefix, Go's flag
    # package one dash or two, a one-letter option stands among others.
    for args in (["push", "--forc"], ["push", "--fo=1"], ["push", "-force"]):
        assert decide(forced, args, {}).decision == "deny", args
    short = _policy(deny=[{"argv": {"contains": ["-f"]}}])
    for args in (["push", "-qf"], ["push", "-vfq", "origin"]):
        assert decide(short, args, {}).decision == "deny", args
    go = _policy(deny=[{"argv": {"contains": ["-auto-approve"]}}])
    assert decide(go, ["apply", "--auto-approve"], {}).decision == "deny"
    for args in (["push", "--quiet"], ["push", "-q"], ["push", "--", "x-f"]):
        assert decide(short, args, {}).decision == "allow", args
    assert decide(policy, ["x", "issue", "delete"], {}).decision == "deny"  # default


def test_the_shipped_gitbot_tools_example_resolves(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "gitbot" / "gitbot-tools.json"
    data = json.loads(example.read_text())
    gh = _gh(tmp_path)  # gh is not installed here: pin the example to a stand-in
    data["command_policies"]["commands"]["gh"]["executable"] = gh
    profile = parse_profile(json.dumps(data).encode(), "gitbot-tools.json")
    work = tmp_path / "work"  # the bot's (writable) directory does not hold the tool
    work.mkdir()
    policy = resolve(profile, ResolveContext(home=str(tmp_path), workdir=str(work), uid=1000))
    assert "api.github.com" not in policy.network.allow_domain
    (tool,) = policy.tools
    assert tool.policy is not None
    assert tool.policy.network.allow_domain == ("api.github.com",)
    ((_, route),) = tool.policy.network.custom_credentials
    assert route.endpoint_rules == (("GET", "/repos/*/*/issues/**"),
                                    ("POST", "/repos/*/*/issues/**"))


def test_an_unpinned_tool_is_the_first_on_the_callers_path(tmp_path: Path) -> None:
    gh = _gh(tmp_path)
    profile = parse_profile(_tool_profile(tmp_path, {"commands": {"gh": {}, "jq": {}}}),
                            "agent.json")
    ctx = ResolveContext(home=str(tmp_path), workdir=str(tmp_path), uid=1000,
                         env={"PATH": f"{tmp_path}/nowhere:{tmp_path}/bin"})
    policy = resolve(profile, ctx)
    assert [(t.name, t.executable) for t in policy.tools] == [("gh", gh)]
    # jq is nowhere: no tool, and a note saying so (the session cannot run it either).
    assert [n.kind for n in policy.notes if "`jq`" in n.message] == ["tool_missing"]


def test_a_tool_the_agent_could_rewrite_is_refused_unless_accepted(tmp_path: Path) -> None:
    gh = _gh(tmp_path)
    ctx = ResolveContext(home=str(tmp_path), workdir=str(tmp_path), uid=1000)

    def agent(command: dict[str, object]) -> bytes:
        return json.dumps({"filesystem": {"write": [str(tmp_path)]},
                           "command_policies": {"commands": {"gh": command}}}).encode()

    with pytest.raises(ProfileError) as info:
        resolve(parse_profile(agent({"executable": gh}), "agent.json"), ctx)
    assert info.value.path == "$.command_policies.commands.gh"
    assert "could change `gh`" in str(info.value)
    accepted = resolve(parse_profile(agent({"executable": gh,
                                            "allow_writable_executable": True}),
                                     "agent.json"), ctx)
    assert [t.name for t in accepted.tools] == ["gh"]


def test_a_tool_found_through_a_link_the_agent_could_repoint_is_refused(
        tmp_path: Path) -> None:
    """The agent may write `bin/`, where `gh` is a link to the real tool: it could point the
    link at another program (an interpreter that runs a script of its own), and the next
    launch would run that with the tool's credentials. Before: the link was followed."""
    gh = _gh(tmp_path)
    links = tmp_path / "links"
    links.mkdir()
    (links / "gh").symlink_to(gh)
    ctx = ResolveContext(home=str(tmp_path), workdir=str(tmp_path), uid=1000,
                         env={"PATH": str(links)})
    for command in ({"executable": str(links / "gh")}, {}):
        profile = json.dumps({"filesystem": {"write": [str(links)]},
                              "command_policies": {"commands": {"gh": command}}}).encode()
        with pytest.raises(ProfileError, match="is found through the symbolic link") as info:
            resolve(parse_profile(profile, "agent.json"), ctx)
        assert gh in str(info.value.hint)
    readonly = json.dumps({"filesystem": {"read": [str(links)]},
                           "command_policies": {"commands": {"gh": {}}}}).encode()
    assert [t.executable for t in resolve(parse_profile(readonly, "agent.json"), ctx).tools] \
        == [gh]


def test_two_tools_on_one_file_are_refused(tmp_path: Path) -> None:
    gh = _gh(tmp_path)
    profile = parse_profile(_tool_profile(tmp_path, {"commands": {
        "gh": {"executable": gh}, "hub": {"executable": gh}}}), "agent.json")
    with pytest.raises(ProfileError, match="same file"):
        resolve(profile, ResolveContext(home=str(tmp_path), workdir=str(tmp_path), uid=1000))


def test_the_private_tmp_list_is_the_sandboxs() -> None:
    from nonod.profiles._toolprofile import PRIVATE_TMP as SEEN_BY_PROFILES
    from nonod.sandbox._mounts import PRIVATE_TMP

    assert SEEN_BY_PROFILES == PRIVATE_TMP


def test_a_dry_run_says_what_each_tool_session_gets(tmp_path: Path) -> None:
    gh = _gh(tmp_path)
    policies = json.loads(json.dumps(GITBOT_TOOLS))
    policies["commands"]["gh"]["executable"] = gh
    policies["commands"]["jq"] = {"executable": "/usr/bin/env", "from": {"session": "deny"}}
    policy = resolve(parse_profile(_tool_profile(tmp_path, policies), "agent.json"),
                     ResolveContext(home=str(tmp_path), workdir=str(tmp_path), uid=1000))
    assert summarize(policy).tools == (
        f"gh ({gh}): hosts api.github.com; routes github; argv rules; reads {tmp_path}",
        f"jq ({os.path.realpath('/usr/bin/env')}): refused to the session (from.session: deny)")
