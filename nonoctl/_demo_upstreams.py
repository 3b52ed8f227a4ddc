"""The demo's stand-ins for api.github.com and generativelanguage.googleapis.com.

Each is a small HTTPS server on 127.0.0.1 (a random port, a certificate from the demo's own
CA) that checks the credential header of every request against the REAL secret, records what
it received, and answers like the real API would for the few calls gitbot makes. The daemon
reaches them because the demo's ``nonod.toml`` pins the two names to these ports and trusts
the CA (``[network] resolve`` and ``extra_ca_file``).
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import final

import h11
import trio

#: What fake Gemini decides for every issue (the bot asks for exactly this JSON shape).
TRIAGE = {"label": "bug",
          "comment": "Thanks for the report! This looks like a bug; a maintainer will follow up."}

_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Received:
    """One request as the fake upstream saw it (after the proxy injected the credential)."""

    method: str
    path: str
    credential: str  # the value of the upstream's credential header, "" if absent
    authorized: bool  # credential is exactly what the real API would expect
    body: bytes


Answer = Callable[[Received], tuple[int, object]]


@final
class FakeUpstream:
    """One fake API: ``host`` for the certificate, ``header``/``expected`` for the check."""

    def __init__(self, host: str, *, header: str, expected: str, answer: Answer) -> None:
        self.host = host
        self.header = header
        self._expected = expected
        self._answer = answer
        self.received: list[Received] = []

    async def serve(self, context: ssl.SSLContext, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve HTTPS on 127.0.0.1:<random>; ``started`` with the port, once listening."""
        tcp = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(tcp[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, [trio.SSLListener(t, context) for t in tcp])

    async def _handle(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            with trio.fail_after(30):
                while await self._one_exchange(stream, conn):
                    conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                h11.ProtocolError):
            pass  # the proxy went away or misbehaved: this connection is over, nothing to do
        finally:
            await trio.aclose_forcefully(stream)

    async def _one_exchange(self, stream: trio.abc.Stream, conn: h11.Connection) -> bool:
        """Read one request, answer it; True if the connection can carry another."""
        request = await _next_event(stream, conn)
        if not isinstance(request, h11.Request):
            return False
        body = b""
        while isinstance(event := await _next_event(stream, conn), h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                return False
        if not isinstance(event, h11.EndOfMessage):
            return False
        headers = {name.decode().lower(): value.decode("latin-1")
                   for name, value in request.headers}
        credential = headers.get(self.header, "")
        seen = Received(method=request.method.decode(), path=request.target.decode("latin-1"),
                        credential=credential, authorized=credential == self._expected,
                        body=body)
        self.received.append(seen)
        status, reply = (self._answer(seen) if seen.authorized
                         else (401, {"message": "Bad credentials"}))
        data = json.dumps(reply).encode()
        out = conn.send(h11.Response(status_code=status, headers=[
            ("Content-Type", "application/json"), ("Content-Length", str(len(data)))]))
        out = (out or b"") + (conn.send(h11.Data(data=data)) or b"")
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(bytes(await stream.receive_some(65536)))
    return event


def _gemini_answer(seen: Received) -> tuple[int, object]:
    if seen.method != "POST" or not seen.path.endswith(":generateContent"):
        return 404, {"error": {"code": 404, "message": "not found"}}
    text = json.dumps(TRIAGE)
    return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]}


def _github_answer(seen: Received) -> tuple[int, object]:
    if seen.method == "POST" and seen.path.endswith("/labels"):
        labels = json.loads(seen.body or b"{}").get("labels", [])
        return 200, [{"name": name} for name in labels]
    if seen.method == "POST" and seen.path.endswith("/comments"):
        return 201, {"id": 1, "body": json.loads(seen.body or b"{}").get("body", "")}
    return 404, {"message": "Not Found"}


@dataclass
class Upstreams:
    """Both fakes, their ports once started, and the CA file the daemon must trust."""

    gemini: FakeUpstream
    github: FakeUpstream
    ports: dict[str, int] = field(default_factory=dict)

    def pins(self) -> dict[str, str]:
        """``[network] resolve`` for the daemon: host name -> 127.0.0.1:port."""
        return {up.host: f"127.0.0.1:{self.ports[up.host]}" for up in (self.gemini, self.github)}


def make_upstreams(*, gemini_key: str, github_token: str) -> Upstreams:
    """The two fakes, each expecting its REAL secret exactly as the real API would."""
    return Upstreams(
        gemini=FakeUpstream("generativelanguage.googleapis.com", header="x-goog-api-key",
                            expected=gemini_key, answer=_gemini_answer),
        github=FakeUpstream("api.github.com", header="authorization",
                            expected=f"Bearer {github_token}", answer=_github_answer),
    )


async def start_upstreams(nursery: trio.Nursery, upstreams: Upstreams, ca_file: str) -> None:
    """Issue certificates from a fresh CA (written to ``ca_file``) and start both servers."""
    import trustme  # a dev dependency: only the demo needs it

    ca = trustme.CA()
    ca.cert_pem.write_to_path(ca_file)
    for upstream in (upstreams.gemini, upstreams.github):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(upstream.host).configure_cert(context)
        upstreams.ports[upstream.host] = await nursery.start(
            functools.partial(upstream.serve, context))
