"""The sans-IO half of credential routes: targets, the phantom token check, the upstream head
with the credential injected, the response head the program gets. No sockets."""

from __future__ import annotations

import base64

import pytest

from nonod.credentials import PhantomToken, Route, Scrubber, Secret, scrub_replacements
from nonod.proxy._inject import (
    BadTarget,
    check_phantom,
    content_decoding,
    downstream_head,
    event_path,
    is_websocket,
    split_target,
    upstream_head,
    websocket_headers,
)

TOKEN = PhantomToken("0123456789abcdef" * 4)
OTHER = PhantomToken("fedcba9876543210" * 4)
SECRET = Secret("real-secret-value-42")
T = TOKEN.reveal()

GITHUB = Route(name="github", upstream="https://api.github.com", credential_key="github_token",
               credential_format="token {}")
GEMINI = Route(name="gemini", upstream="https://generativelanguage.googleapis.com",
               credential_key="gemini", inject_header="x-goog-api-key", credential_format="{}")
TELEGRAM = Route(name="telegram", upstream="https://api.telegram.org", credential_key="tg",
                 inject_mode="url_path", path_pattern="/bot{}/")
MAPS = Route(name="maps", upstream="https://maps.googleapis.com", credential_key="maps",
             inject_mode="query_param", query_param_name="key")
BASIC = Route(name="basic", upstream="https://api.example.com/base", credential_key="basic",
              inject_mode="basic_auth")


@pytest.mark.parametrize(("target", "route", "path", "query"), [
    (b"/github/repos/a", "github", "/repos/a", ""),
    (b"/github", "github", "/", ""),
    (b"/github/", "github", "/", ""),
    (b"/github?per_page=1", "github", "/", "?per_page=1"),
    (b"/github/x?y=/z", "github", "/x", "?y=/z"),
    (b"/github.evil/x", "github.evil", "/x", ""),
    (b"/githubx/x", "githubx", "/x", ""),
    (b"//github/x", "", "/github/x", ""),
])
def test_split_target(target: bytes, route: str, path: str, query: str) -> None:
    parts = split_target(target)
    assert (parts.route, parts.path, parts.query) == (route, path, query)


@pytest.mark.parametrize("target", [b"github/x", b"/a#frag", b"/caf\xc3\xa9", b"*"])
def test_bad_targets(target: bytes) -> None:
    with pytest.raises(BadTarget):
        split_target(target)


def outcome(route: Route, headers: list[tuple[bytes, bytes]], target: bytes = b"/r/x",
            token: PhantomToken = TOKEN) -> str:
    return check_phantom(route, token, headers, split_target(target))


@pytest.mark.parametrize(("value", "expected"), [
    (T, "ok"), (f"token {T}", "ok"), (f"Bearer {T}", "ok"), (f"bearer  {T} ", "ok"),
    ("Basic " + base64.b64encode(f"x:{T}".encode()).decode(), "ok"),
    (f"Bearer {T}x", "invalid"), (f"Bearer {OTHER.reveal()}", "invalid"), ("Bearer", "invalid"),
    ("", "invalid"), (T.upper(), "invalid"), ("Basic !!!", "invalid"),
])
def test_phantom_in_the_authorization_header(value: str, expected: str) -> None:
    assert outcome(GITHUB, [(b"Authorization", value.encode())]) == expected


def test_phantom_in_a_custom_header_and_fallbacks() -> None:
    assert outcome(GEMINI, [(b"X-Goog-Api-Key", T.encode())]) == "ok"
    assert outcome(GEMINI, [(b"x-goog-api-key", b"AIzaRealLooking")]) == "invalid"
    assert outcome(GEMINI, []) == "missing"
    # Twice is ambiguous: refused even if one of them is right.
    assert outcome(GEMINI, [(b"x-goog-api-key", T.encode()),
                            (b"x-goog-api-key", b"x")]) == "invalid"
    # Where the route's header is absent, Proxy-Authorization may carry it (as nono allows).
    proxy = base64.b64encode(f"nono:{T}".encode())
    assert outcome(GEMINI, [(b"Proxy-Authorization", b"Basic " + proxy)]) == "ok"
    assert outcome(GEMINI, [(b"Proxy-Authorization", b"Bearer nope")]) == "invalid"
    # Present and wrong is never retried elsewhere.
    assert outcome(GEMINI, [(b"x-goog-api-key", b"wrong"),
                            (b"Proxy-Authorization", b"Basic " + proxy)]) == "invalid"
    # A token from another session is just a wrong token.
    assert outcome(GEMINI, [(b"x-goog-api-key", T.encode())], token=OTHER) == "invalid"


def test_phantom_in_path_and_query() -> None:
    assert outcome(TELEGRAM, [], f"/telegram/bot{T}/sendMessage".encode()) == "ok"
    assert outcome(TELEGRAM, [], b"/telegram/botWRONG/sendMessage") == "invalid"
    assert outcome(TELEGRAM, [], b"/telegram/sendMessage") == "missing"
    assert outcome(MAPS, [], f"/maps/api/geo?address=x&key={T}".encode()) == "ok"
    assert outcome(MAPS, [], b"/maps/api/geo?key=nope") == "invalid"
    assert outcome(MAPS, [], f"/maps/api?key={T}&key={T}".encode()) == "invalid"
    assert outcome(MAPS, [], b"/maps/api/geo") == "missing"


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n.lower() for n, _ in headers]


def test_upstream_head_strips_artefacts_and_injects() -> None:
    program = [
        (b"Host", b"127.0.0.1:9999"), (b"Authorization", f"token {T}".encode()),
        (b"Proxy-Authorization", b"Basic abc"), (b"X-Forwarded-For", b"10.0.0.1"),
        (b"X-Forwarded-Host", b"sandbox"), (b"Forwarded", b"for=x"), (b"Via", b"1.1 x"),
        (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"Keep-Alive", b"5"),
        (b"Accept-Encoding", b"gzip, br"), (b"X-Also-Token", T.encode()),
        (b"Accept", b"application/json"), (b"Content-Type", b"text/plain"),
        (b"Transfer-Encoding", b"chunked"), (b"TE", b"trailers"), (b"X-Nono-Token", b"t"),
    ]
    head = upstream_head(GITHUB, SECRET, TOKEN, program, forward_path="/repos/a",
                         query=f"?per_page=1&sneaky={T}")
    assert head.target == b"/repos/a?per_page=1"
    assert head.into == "Authorization"
    assert dict(head.headers) == {
        b"Host": b"api.github.com", b"Accept": b"application/json",
        b"Content-Type": b"text/plain", b"Authorization": b"token real-secret-value-42",
        b"Accept-Encoding": b"identity", b"Transfer-Encoding": b"chunked",
    }
    assert all(T.encode() not in v for _, v in head.headers)


def test_upstream_head_other_modes() -> None:
    base = upstream_head(BASIC, SECRET, TOKEN, [(b"Authorization", f"Bearer {T}".encode())],
                         forward_path="/x", query="")
    assert base.target == b"/base/x"
    assert dict(base.headers)[b"Authorization"] == b"Basic " + base64.b64encode(
        b"real-secret-value-42")
    path = upstream_head(TELEGRAM, Secret("123:ABC/x"), TOKEN, [],
                         forward_path=f"/bot{T}/sendMessage", query="?chat=1")
    assert path.target == b"/bot123%3AABC%2Fx/sendMessage?chat=1" and path.into == "path"
    query = upstream_head(MAPS, Secret("k&y=1"), TOKEN, [],
                          forward_path="/api/geo", query=f"?address=a%20b&key={T}&z")
    assert query.target == b"/api/geo?address=a%20b&z&key=k%26y%3D1"
    assert query.into == "query:key"
    with pytest.raises(BadTarget):
        upstream_head(TELEGRAM, SECRET, TOKEN, [], forward_path="/nope", query="")


def test_downstream_head_scrubs_and_reframes() -> None:
    scrubber = Scrubber(scrub_replacements(SECRET, TOKEN))
    upstream = [
        (b"Content-Type", b"application/json"), (b"Content-Length", b"123"),
        (b"Content-Encoding", b"gzip"), (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"close"), (b"Location", b"https://x/?key=real-secret-value-42"),
        (b"X-Echo", b"token real-secret-value-42"), (b"Proxy-Authenticate", b"Basic"),
    ]
    out = dict(downstream_head(upstream, scrubber, has_body=True))
    assert out == {b"Content-Type": b"application/json",
                   b"Location": b"https://x/?key=" + T.encode(), b"X-Echo": b"token " + T.encode()}
    plain = [(n, v) for n, v in upstream if n != b"Content-Encoding"]
    kept = names(downstream_head(plain, scrubber, has_body=False))
    assert b"content-length" in kept  # a HEAD answer or a 304 keeps its length, unless coded
    coded = names(downstream_head([*upstream, (b"Content-Range", b"bytes */1234")], scrubber,
                                  has_body=False))
    assert not {b"content-length", b"content-encoding", b"content-range"} & set(coded)
    identity = [*plain, (b"Content-Encoding", b"identity")]
    assert b"content-length" in names(downstream_head(identity, scrubber, has_body=False))


def test_websocket_headers() -> None:
    program = [(b"Host", b"127.0.0.1"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
               (b"Sec-WebSocket-Key", b"abc"), (b"Sec-WebSocket-Version", b"13"),
               (b"Sec-WebSocket-Protocol", b"chat"), (b"Origin", b"http://x"),
               (b"x-goog-api-key", T.encode())]
    assert is_websocket(program)
    assert not is_websocket([(b"Upgrade", b"websocket")])
    out = websocket_headers(GEMINI, SECRET, TOKEN, program)
    assert out == [(b"Origin", b"http://x"), (b"x-goog-api-key", b"real-secret-value-42")]


def test_content_decoding_and_event_path() -> None:
    assert content_decoding([]) == "identity"
    assert content_decoding([(b"Content-Encoding", b"identity")]) == "identity"
    assert content_decoding([(b"content-encoding", b"GZIP")]) == "gzip"
    assert content_decoding([(b"Content-Encoding", b"br")]) == "unsupported"
    assert content_decoding([(b"Content-Encoding", b"gzip, gzip")]) == "unsupported"
    assert event_path(f"/bot{T}/send", TOKEN) == "/bot[phantom]/send"
