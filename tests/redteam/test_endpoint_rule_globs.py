"""Red team: the daemon held by a request path against an endpoint rule's in-segment glob.

A rule segment with ``*`` in it (``*-*.whl``) was a regular expression of ``[^/]*`` runs,
matched by Python's backtracking engine: on a segment the rule does not match, it tried
every split, in time a power of the segment's length (two stars: 0.2 s for 16,000 dashes,
seconds for 60,000; three: hours). The program chooses the path (up to the 64 KiB head), and
matching runs on trio's thread: every session's proxy and every control connection waited.
Now such a segment is matched by finding its parts leftmost, linear per part.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from hypothesis import given
from hypothesis import strategies as st

from nonod.credentials._rules import EndpointRules, _compile, _Glob
from tests.credentials.conftest import (  # noqa: F401 - fixtures
    Pki,
    RouteProxy,
    github_route,
    pki,
    start_route_proxy,
)

RULE = ("GET", "/files/*-*-*.whl")


def test_an_in_segment_glob_is_matched_in_linear_time() -> None:
    rules = EndpointRules([RULE])
    for segment in ("-" * 60_000, "a-" * 30_000, "-" * 30_000 + ".wh"):
        started = time.thread_time()  # this thread's CPU, whatever else the host runs
        assert rules.explain("GET", "/files/" + segment).outcome == "denied"
        assert time.thread_time() - started < 1.0  # before: hours for the first
    assert rules.explain("GET", "/files/a-b-c.whl").outcome == "allowed"


async def test_a_route_request_with_such_a_path_is_refused_at_once(
        pki: Pki,  # noqa: F811
        start_route_proxy: Callable[..., Awaitable[RouteProxy]]) -> None:  # noqa: F811
    route = github_route(endpoint_rules=(RULE,))
    proxy = await start_route_proxy([(route, "ghp_real")], pins={"api.github.com":
                                                                 "127.0.0.1:9"})
    client = await proxy.client()
    started = time.process_time()  # the proxy runs in this process; the host's load aside
    response = await client.request("GET", "/github/files/" + "-" * 20_000, [
        ("Authorization", f"Bearer {proxy.token.reveal()}")])
    assert response.status == 403  # endpoint_denied, nothing sent upstream
    assert time.process_time() - started < 2.0  # before: the event loop held for hours


def regex_of(pattern: str) -> re.Pattern[str]:
    """The expression a glob segment used to be (the reference for its meaning)."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))


@given(pattern=st.lists(st.text(alphabet="ab-.", max_size=3), min_size=2, max_size=4),
       segment=st.text(alphabet="ab-.", max_size=12))
def test_the_glob_matches_what_its_expression_matched(pattern: list[str],
                                                      segment: str) -> None:
    text = "*".join(pattern)
    if "**" in text or text == "*":
        return  # refused as a rule (`**` is a whole segment), or any one segment
    (piece,) = _compile("/" + text)
    assert isinstance(piece, _Glob)
    assert piece.matches(segment) == (regex_of(text).fullmatch(segment) is not None)
