"""A route without endpoint rules climbing out of its upstream's base path through ``%2F``.

A route without rules forwards its path as the program encoded it (GitLab's API needs
``%2F`` inside a segment: ``/projects/group%2Fproject``) and refuses a segment that decodes,
once or twice, to ``.`` or ``..``, "so no route can climb out of its upstream's base path"
(docs/credentials.md). But a segment that decodes to ``x/../../admin`` is no dot segment as
a whole: ``/x%2F..%2F..%2Fadmin`` went upstream as written, and an upstream that decodes
``%2F`` before it resolves dot segments (nginx normalises the decoded path; so do servers
that route on a decoded path) serves ``/admin`` with the real credential, outside the
route's ``/v3``. The same with the slashes encoded twice (``%252F``).

Now a segment that holds a dot segment once its encoded slashes are decoded (once or twice)
is refused as a dot segment, on every route. A real proxy and a real TLS upstream that says
which path it would serve.
"""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import pytest
import trio

from tests.credentials.conftest import (
    Pki,
    Responder,
    RouteProxy,
    UpstreamRequest,
    github_route,
    start_tls_upstream,
)
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy

REAL = "ghp_RealGitHubSecret0123456789abcdefXYZ"
StartProxy = Callable[..., Awaitable[RouteProxy]]


async def decodes_then_resolves(request: UpstreamRequest, respond: Responder) -> None:
    """Serves the path it gets decoded (twice, as a chain of two such servers would), then
    with its dot segments resolved, and says which."""
    path = request.target.decode().split("?", 1)[0]
    served = posixpath.normpath(unquote(unquote(path)))
    await respond.whole(200, served.encode())


@pytest.mark.parametrize("path", [
    "/x%2F..%2F..%2Fadmin", "/x%2f..%2f..%2fadmin", "/x%2F%2E%2E%2F%2e%2e%2Fadmin",
    "/x%252F..%252F..%252Fadmin", "/ok/x%2F.%2F..%2F..%2F..%2Fadmin", "/x%2F..;%2F..%2Fadmin",
])
async def test_a_route_without_rules_does_not_climb_out_of_its_base_path(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, path: str) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, decodes_then_resolves)
    proxy = await start_route_proxy([(github_route(upstream="https://api.github.com/v3"), REAL)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    client = await proxy.client()
    auth = [("Authorization", f"Bearer {proxy.token.reveal()}")]
    got = await client.request("GET", "/github" + path, auth)
    # Before: 200, and the upstream served /admin with the real credential.
    assert got.status == 400 and b"dot_segment" in got.body, (got.status, got.body)
    assert seen.requests == []
    client.next_cycle()
    fine = await client.request("GET", "/github/projects/group%2Fproject/issues", auth)
    assert fine.status == 200 and fine.body == b"/v3/projects/group/project/issues"
    assert [r.target for r in seen.requests] == [b"/v3/projects/group%2Fproject/issues"]
