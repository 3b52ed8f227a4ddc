"""Endpoint rules: one matcher, a table of vectors (nono's known bypass classes included), and
random input that may only ever be allowed, denied or refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonod.credentials import (
    EndpointDenied,
    EndpointRules,
    PathRefused,
    normalise_path,
)

RULES = EndpointRules([
    ("GET", "/repos/*/issues"),
    ("POST", "/repos/*/issues/*/comments"),
    ("get", "/user"),
    ("GET", "/gists/**"),
    ("*", "/rate_limit"),
    ("GET", "/files/*.json"),
], name="network.custom_credentials.github.endpoint_rules")

A, D = "allow", "deny"

# (method, path, expected): "allow" / "deny" / a PathRefused problem code.
VECTORS = [
    # plain matches
    ("GET", "/repos/octo/issues", A),
    ("POST", "/repos/octo/issues/7/comments", A),
    ("GET", "/user", A),
    ("DELETE", "/rate_limit", A),
    ("GET", "/files/a.json", A),
    # default deny
    ("GET", "/repos/octo/pulls", D),
    ("DELETE", "/repos/octo/issues", D),
    ("GET", "/users", D),
    ("GET", "/", D),
    ("GET", "/files/a.jsonx", D),
    ("GET", "/files/dir/a.json", D),
    # glob over-grant: `*` is one segment, never two, never none
    ("GET", "/repos/a/b/issues", D),
    ("GET", "/repos//issues", D),
    ("GET", "/repos/issues", D),
    ("POST", "/repos/o/issues/comments", D),
    # `**` is any number of segments, none included
    ("GET", "/gists", A),
    ("GET", "/gists/1/2/3", A),
    ("GET", "/gistsx/1", D),
    # case: paths are case-sensitive, methods as sent
    ("GET", "/USER", D),
    ("GET", "/Repos/octo/issues", D),
    ("get", "/user", D),
    # trailing slash and empty segments are not significant
    ("GET", "/user/", A),
    ("GET", "//user", A),
    ("GET", "/repos//octo///issues/", A),
    # percent-decoding happens once, before matching
    ("GET", "/%75ser", A),
    ("GET", "/repos/%6Fcto/issues", A),
    # encoded slashes inside a segment: refused
    ("GET", "/repos/a%2fb/issues", "encoded_slash"),
    ("GET", "/repos/a%2Fb/issues", "encoded_slash"),
    ("GET", "/user%2F", "encoded_slash"),
    ("GET", "/repos/a%2F..%2Fb/issues", "encoded_slash"),
    # double encoding: refused, never decoded twice
    ("GET", "/repos/a%252fb/issues", "double_encoding"),
    ("GET", "/repos/%252e%252e/issues", "double_encoding"),
    ("GET", "/repos/%25/issues", "double_encoding"),
    # dot segments, raw or encoded: refused
    ("GET", "/repos/../user", "dot_segment"),
    ("GET", "/repos/./octo/issues", "dot_segment"),
    ("GET", "/repos/%2e%2e/user", "dot_segment"),
    ("GET", "/repos/%2E%2E/user", "dot_segment"),
    ("GET", "/repos/.%2e/user", "dot_segment"),
    ("GET", "/repos/%2e/octo/issues", "dot_segment"),
    ("GET", "/user/..", "dot_segment"),
    # ... also with path parameters, which Java servers (Tomcat, Spring) strip before
    # resolving the dots: /repos/..;/user is /user to them
    ("GET", "/repos/..;/user", "dot_segment"),
    ("GET", "/repos/..;x=1/user", "dot_segment"),
    ("GET", "/repos/.;/octo/issues", "dot_segment"),
    ("GET", "/repos/%2e%2e;/user", "dot_segment"),
    ("GET", "/repos/..%3b/user", "dot_segment"),
    # any other path parameter, on a route with rules: what the rule matched is not what a
    # server that strips it serves (/files/admin;.json is /files/admin)
    ("GET", "/repos/octo;v=1/issues", "path_parameter"),
    ("GET", "/files/admin;.json", "path_parameter"),
    ("GET", "/files/admin%3b.json", "path_parameter"),
    # a dot that is not a whole segment is just a character
    ("GET", "/repos/..octo/issues", A),
    ("GET", "/repos/octo%2e%2e/issues", A),
    # backslashes, control characters, bad escapes, non-UTF-8
    ("GET", "/repos/a\\b/issues", "bad_character"),
    ("GET", "/repos/a%5cb/issues", "bad_character"),
    ("GET", "/repos/a%5Cb/issues", "bad_character"),
    ("GET", "/user%00", "bad_character"),
    ("GET", "/user%0a", "bad_character"),
    ("GET", "/us er", "bad_character"),
    ("GET", "/user?x=1", "bad_character"),
    ("GET", "/user%zz", "bad_escape"),
    ("GET", "/user%4", "bad_escape"),
    ("GET", "/user%", "bad_escape"),
    ("GET", "/repos/%ff/issues", "not_utf8"),
    # what an upstream that folds Unicode (NFKC, Windows' best-fit) reads as one of the above
    ("GET", "/repos/..%EF%BC%8F..%EF%BC%8Fuser/issues", "encoded_slash"),  # fullwidth /
    ("GET", "/repos/a%E2%88%95b/issues", "encoded_slash"),  # division slash
    ("GET", "/repos/%EF%BC%8E%EF%BC%8E/user", "dot_segment"),  # fullwidth ..
    ("GET", "/repos/a%EF%BC%BCb/issues", "bad_character"),  # fullwidth backslash
    ("GET", "/files/admin%EF%BC%9B.json", "path_parameter"),  # fullwidth ;
    ("GET", "/repos/%EF%BC%85%32%66/issues", "double_encoding"),  # fullwidth %
    ("GET", "/repos/caf%C3%A9/issues", A),  # other non-ASCII text is just text
    ("GET", "user", "not_absolute"),
    ("GET", "", "not_absolute"),
]


@pytest.mark.parametrize(("method", "path", "expected"), VECTORS)
def test_vector(method: str, path: str, expected: str) -> None:
    verdict = RULES.explain(method, path)
    if expected == A:
        assert verdict.outcome == "allowed", verdict
        assert RULES.check(method, path) == verdict.path
    elif expected == D:
        assert verdict.outcome == "denied", verdict
        with pytest.raises(EndpointDenied):
            RULES.check(method, path)
    else:
        assert (verdict.outcome, verdict.problem) == ("refused", expected)
        with pytest.raises(PathRefused) as info:
            RULES.check(method, path)
        assert info.value.problem == expected


def test_the_forwarded_path_is_what_was_matched() -> None:
    """The upstream receives the canonical encoding of the decoded path, so it cannot read
    anything else than what the rule matched."""
    path = RULES.check("GET", "/repos//%6Fcto/issues/")
    assert path.forward == "/repos/octo/issues/"
    assert path.text == "/repos/octo/issues/"
    assert path.segments == ("repos", "octo", "issues")
    unicode = EndpointRules([("GET", "/x/*")]).check("GET", "/x/%C3%A9t%C3%A9")
    assert unicode.segments == ("x", "été") and unicode.forward == "/x/%C3%A9t%C3%A9"


def test_rules_report_which_rule_matched() -> None:
    assert RULES.explain("GET", "/user").rule == 2
    assert RULES.explain("PATCH", "/rate_limit").rule == 4
    assert RULES.describe()[0] == "GET /repos/*/issues"
    assert RULES.name.endswith("github.endpoint_rules")


def test_without_rules_everything_is_allowed_but_traversal() -> None:
    """A route without rules forwards what the program encoded (GitLab needs %2F in a
    segment) but still refuses to climb out of the route's base path."""
    none = EndpointRules([])
    assert not none
    gitlab = none.check("GET", "/v4/projects/group%2Fproject/issues")
    assert gitlab.forward == "/v4/projects/group%2Fproject/issues"
    assert none.check("GET", "//a//b/").forward == "/a/b/"
    for bad, problem in [("/../admin", "dot_segment"), ("/%2e%2e/admin", "dot_segment"),
                         ("/..;/admin", "dot_segment"), ("/%252e%252e;/admin", "dot_segment"),
                         ("/%252e%252e/admin", "dot_segment"), ("/a%5c", "bad_character"),
                         ("/a%zz", "bad_escape")]:
        with pytest.raises(PathRefused) as info:
            none.check("GET", bad)
        assert info.value.problem == problem


@pytest.mark.parametrize("rule", [
    ("GET", "relative"), ("GET", "/a/../b"), ("GET", "/a/./b"), ("GET", "/a%2fb"),
    ("GET", "/a?b"), ("GET", "/a b"), ("GET", "/a**"), ("G T", "/a"), ("", "/a"),
])
def test_malformed_rules_are_refused(rule: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        EndpointRules([rule])


def test_matching_is_linear_for_hostile_patterns() -> None:
    rules = EndpointRules([("GET", "/" + "/".join(["**", "a"] * 20) + "/b")])
    with_time = rules.explain("GET", "/" + "/".join(["a"] * 200))
    assert with_time.outcome == "denied"


SEGMENT = st.text(alphabet="ab./%25fFeE2\\c?", max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.lists(SEGMENT, max_size=6), st.sampled_from(["GET", "POST", "get"]))
def test_random_paths_are_allowed_denied_or_refused(segments: list[str], method: str) -> None:
    path = "/" + "/".join(segments)
    verdict = RULES.explain(method, path)
    assert verdict.outcome in ("allowed", "denied", "refused")
    if verdict.outcome != "refused":
        assert verdict.path is not None
        again = normalise_path(verdict.path.forward, strict=True)
        # Normalising the forwarded path changes nothing: no second decoding can differ.
        assert again == verdict.path
        assert ".." not in again.segments and "." not in again.segments
        assert all("/" not in s and "%" not in s for s in again.segments)
