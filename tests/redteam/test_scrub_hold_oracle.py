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

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

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


# ------------------------------------------------------------ from inside a real session

SESSION_HOST = "echo.example.test"
SESSION_PAUSE = 0.6
CANDIDATES = "QRSTUVWX"  # REAL's fifth character, R, among them

#: The program: for each candidate fifth character, send ``ghp_<c>`` through its route and
#: see whether the reflected guess comes before the upstream's pause. The one that waits is
#: the key's (before); now every guess waits alike.
GUESSER = r'''
import json, os, socket, time
base = os.environ["ECHOAPI_BASE_URL"]  # http://127.0.0.1:PORT/echoapi
port = int(base.split(":")[2].split("/")[0])
token = os.environ["ECHOAPI_KEY"]
waited = {}
for c in sys_argv_candidates:
    guess = ("ghp_" + c).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /echoapi/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(guess) + guess)
    got = b""
    s.settimeout(10)
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    s.settimeout(PAUSE / 2)
    try:
        while guess not in got:
            more = s.recv(4096)
            if not more:
                break
            got += more
    except TimeoutError:
        pass
    waited[c] = guess not in got
    s.close()
print(json.dumps(waited))
'''


def _streaming_upstream(ca_dir: Path) -> tuple[int, Path, Callable[[], None]]:
    """A TLS server on a thread: each POST's body comes back in a chunked response, then a
    pause, then a line end."""
    import http.server
    import ssl
    import threading

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SESSION_HOST).configure_cert(context)
    ca_file = ca_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca_file.chmod(0o644)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            first = b"you said: " + body
            self.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
            self.wfile.flush()
            time.sleep(SESSION_PAUSE)
            self.wfile.write(b"1\r\n\n\r\n0\r\n\r\n")
            self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return int(server.server_address[1]), ca_file, stop


@pytest.mark.root
@pytest.mark.userns
def test_a_session_cannot_tell_the_keys_next_character_by_what_waits(short_tmp: Path) -> None:
    import json

    from tests.daemon.conftest import DaemonThread
    from tests.daemon.test_cli import CLI, cli_env

    port, ca_file, stop = _streaming_upstream(short_tmp)
    try:
        secret = short_tmp / "echo.key"
        secret.write_text(REAL + "\n")
        secret.chmod(0o600)
        work = short_tmp / "work"
        work.mkdir(mode=0o755)
        (work / "guess.py").write_text(
            GUESSER.replace("sys_argv_candidates", repr(CANDIDATES))
            .replace("PAUSE", repr(SESSION_PAUSE)))
        profile = short_tmp / "echo.json"
        profile.write_text(json.dumps({
            "meta": {"name": "scrub-oracle"},
            "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64"]},
            "network": {
                "allow_hosts": [SESSION_HOST],
                "credentials": ["echoapi"],
                "custom_credentials": {"echoapi": {
                    "upstream": f"https://{SESSION_HOST}",
                    "credential_key": f"file://{secret}", "env_var": "ECHOAPI_KEY"}},
            },
        }))
        config = (f'[network]\nresolve = {{"{SESSION_HOST}" = "127.0.0.1:{port}"}}\n'
                  f'extra_ca_file = "{ca_file}"\n')
        daemon = DaemonThread(short_tmp, config=config).start()
        try:
            run = CLI(cli_env(daemon.socket, short_tmp), work)
            done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                       "/usr/bin/python3", "-S", "guess.py")
        finally:
            daemon.stop()
    finally:
        stop()
    assert done.returncode == 0, done.stderr
    waited: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    assert REAL[4] in waited and set(waited) == set(CANDIDATES)
    # Before: {"R": true} and every other candidate false, which spelt the key's next
    # character. Now what waits is the same for every guess.
    assert len(set(waited.values())) == 1, waited
