"""The sans-IO helpers: request targets, proxy authentication, header filtering, the child
environment. No sockets."""

from __future__ import annotations

import base64

import pytest

from nonod.proxy import child_environment
from nonod.proxy._http import (
    BadRequest,
    absolute_target,
    check_framing,
    connect_target,
    downstream_response_headers,
    error_response,
    path_for_audit,
    proxy_authorized,
    upstream_request_headers,
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [(b"api.github.com:443", ("api.github.com", 443)),
     (b"[::1]:443", ("[::1]", 443)),
     (b"[::ffff:127.0.0.1]:80", ("[::ffff:127.0.0.1]", 80)),
     (b"2130706433:443", ("2130706433", 443))],
)
def test_connect_targets(target: bytes, expected: tuple[str, int]) -> None:
    assert connect_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [b"api.github.com", b"api.github.com:", b":443", b"/path", b"http://a:443",
     b"user@a.example:443", b"a.example:443/x", b"a.example:+443", b"a.example:0x1bb",
     b"a.example:1234567", b"[::1]443", b"[::1", b"a.example:443\xff"],
)
def test_bad_connect_targets(target: bytes) -> None:
    with pytest.raises(BadRequest):
        connect_target(target)


@pytest.mark.parametrize(
    ("target", "expected"),
    [(b"http://example.com/a/b?c=d", ("example.com", 80, b"/a/b?c=d")),
     (b"HTTP://Example.com:8080", ("Example.com", 8080, b"/")),
     (b"http://example.com?q", ("example.com", 80, b"/?q")),
     (b"http://[::1]:81/", ("[::1]", 81, b"/")),
     (b"http://example.com:/", ("example.com", 80, b"/"))],
)
def test_absolute_targets(target: bytes, expected: tuple[str, int, bytes]) -> None:
    assert absolute_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [b"/relative", b"https://example.com/", b"ftp://example.com/", b"*",
     b"http://user:pw@example.com/", b"http:///path", b"http://a\\b@c/", b"example.com:80"],
)
def test_bad_absolute_targets(target: bytes) -> None:
    with pytest.raises(BadRequest):
        absolute_target(target)


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    ("headers", "ok"),
    [([(b"proxy-authorization", basic("nono", "sekret"))], True),
     ([(b"Proxy-Authorization", b"bearer sekret")], True),
     ([(b"proxy-authorization", basic("nono", "wrong"))], False),
     ([(b"proxy-authorization", basic("other", "sekret"))], False),
     ([(b"proxy-authorization", b"Bearer sekre")], False),
     ([(b"proxy-authorization", b"Basic !!!notbase64")], False),
     ([(b"proxy-authorization", b"Digest sekret")], False),
     ([(b"authorization", b"Bearer sekret")], False),
     ([], False),
     ([(b"proxy-authorization", b"Bearer sekret")] * 2, False)],
)
def test_proxy_authorization(headers: list[tuple[bytes, bytes]], ok: bool) -> None:
    assert proxy_authorized(headers, "sekret") is ok


def test_upstream_headers_drop_hop_by_hop_and_proxy_headers() -> None:
    headers = [(b"host", b"evil.internal"), (b"proxy-authorization", b"Basic x"),
               (b"proxy-connection", b"keep-alive"), (b"connection", b"keep-alive, x-secret"),
               (b"x-secret", b"1"), (b"keep-alive", b"timeout=5"), (b"te", b"trailers"),
               (b"upgrade", b"websocket"), (b"expect", b"100-continue"),
               (b"accept", b"*/*"), (b"content-length", b"3")]
    out = upstream_request_headers(headers, b"example.com")
    assert out == [(b"Host", b"example.com"), (b"accept", b"*/*"), (b"content-length", b"3"),
                   (b"Connection", b"close")]


def test_upstream_headers_keep_chunked_framing() -> None:
    out = upstream_request_headers([(b"transfer-encoding", b"chunked")], b"a")
    assert (b"Transfer-Encoding", b"chunked") in out


def test_downstream_headers() -> None:
    headers = [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked"),
               (b"content-length", b"5"), (b"proxy-authenticate", b"Basic"),
               (b"connection", b"keep-alive")]
    assert downstream_response_headers(headers) == [(b"content-type", b"text/plain"),
                                                    (b"Connection", b"close")]


def test_conflicting_framing_is_refused() -> None:
    with pytest.raises(BadRequest):
        check_framing([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")])
    check_framing([(b"content-length", b"3")])


def test_error_responses_say_little() -> None:
    from nonod.proxy import Reason

    response, body = error_response(403, Reason.NOT_ALLOWED)
    assert response.status_code == 403
    assert body == (b"nono proxy: the session's network policy does not allow this "
                    b"destination (not_allowed)\n")
    response, _ = error_response(407, Reason.AUTH_REQUIRED)
    assert (b"proxy-authenticate", b'Basic realm="nono"') in list(response.headers)


def test_audit_paths_have_no_query() -> None:
    assert path_for_audit(b"/v1/x?token=secret") == "/v1/x"


def test_child_environment() -> None:
    env = dict(child_environment(41234, "abc123"))
    url = "http://nono:abc123@127.0.0.1:41234"
    assert env == {
        "HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
        "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1",
        "NONO_NO_PROXY": "localhost,127.0.0.1",
        "NONO_PROXY_TOKEN": "abc123", "NODE_USE_ENV_PROXY": "1",
    }
    with pytest.raises(ValueError):
        child_environment(0, "abc")
    with pytest.raises(ValueError):
        child_environment(1, "a@b")
