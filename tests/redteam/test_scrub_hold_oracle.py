"""The scrubber's held-back tail, an oracle for the real credential, one character at a time.

A route's responses are scrubbed as they stream: the scrubber holds back the tail of each
piece that could still become a reflected secret, and passed on everything else at once. It
held back only a tail that *is* the beginning of one of the secret's forms, so whether the
last bytes of a piece reached the program before the next piece did told the program whether
they begin the real credential. A program whose route's upstream reflects what it sends
(an echo, a stored file read back, a streamed completion that repeats its prompt) sends a
guess, then reads: the guess whose last character is right is the one that waits. About 40
guesses per character recover the key, with no full match ever sent back.

Now what is held back does not depend on the secret: the whole trailing run of visible bytes
(up to a bound rounded up from the longest form) waits, whatever it spells. A real proxy and
a real TLS upstream that streams the program's body back in two pieces, a pause between.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
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
PAUSE = 1.0


async def streams_back(request: UpstreamRequest, respond: Responder) -> None:
    """Sends the request's body back as one piece, pauses, then ends the line."""
    await respond.start(200, [(b"Content-Type", b"text/plain")])
    await respond.data(b"you said: " + request.body)
    await trio.sleep(PAUSE)
    await respond.data(b"\n")
    await respond.end()


async def before_the_pause(proxy: RouteProxy, guess: bytes) -> bytes:
    """What of the reflected ``guess`` the program has before the upstream's pause ends."""
    client = await proxy.client()
    await client.send("POST", "/github/echo", [("Authorization", f"Bearer {proxy.token.reveal()}")],
                      guess)
    await client.head()
    got = b""
    with trio.move_on_after(PAUSE / 2):
        while True:
            event = await client.event()
            if not isinstance(event, h11.Data):
                break
            got += event.data
    await client.aclose()
    return got


@pytest.mark.parametrize("known", [4, 12], ids=["after-the-prefix", "deep-in-the-key"])
async def test_a_right_guess_is_passed_on_as_soon_as_a_wrong_one(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, known: int) -> None:
    port, _ = await start_tls_upstream(nursery, pki.server, streams_back)
    proxy = await start_route_proxy([(github_route(), REAL)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    secret = REAL.encode()
    right = secret[:known + 1]
    wrong = secret[:known] + (b"Q" if secret[known:known + 1] != b"Q" else b"W")
    got_right = await before_the_pause(proxy, right)
    got_wrong = await before_the_pause(proxy, wrong)
    # Before: the wrong guess came at once, the right one waited for the pause's end.
    assert len(got_right) == len(got_wrong), (got_right, got_wrong)
    # Text ending in spaces or line ends is still passed on at once (an SSE event is not
    # delayed).
    assert await before_the_pause(proxy, right + b" ") == b"you said: " + right + b" "


def test_what_waits_does_not_depend_on_the_secret() -> None:
    """Every beginning of the secret, and of its encoded forms, waits exactly as long as the
    same bytes would for another secret of its length: the held-back tail is the same."""
    from nonod.credentials import PhantomToken, Scrubber, Secret, scrub_replacements

    token = PhantomToken("f" * 64)
    real = Secret(REAL)
    other = Secret("ghp_" + "Q" * (len(REAL) - 4))
    scrubbers = [Scrubber(scrub_replacements(s, token)) for s in (real, other)]
    assert scrubbers[0].reach == scrubbers[1].reach
    forms = scrub_replacements(real, token)
    for form in forms:
        for k in range(1, len(form)):
            piece = b"line\n" + form[:k]
            held = [len(piece) - len(s.fresh().feed(piece)) for s in scrubbers]
            assert held[0] == held[1], (form[:k], held)
