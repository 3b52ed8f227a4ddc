"""Learn the example gitbot (examples/gitbot) while a test webhook exercises it, as in the
seed walkthrough: the proposal has the workdir, both API hosts, the webhook port, and notes
the SSH key the debug endpoint tried."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import shutil
from pathlib import Path

import msgspec
import pytest
import trio

from nonod.learn import LearnResult, learn
from nonod.profiles import parse_profile
from nonod.proxy import Resolver

from .conftest import HERE, needs_tools

BOT = HERE.parent.parent / "examples" / "gitbot"
pytestmark = [needs_tools(), pytest.mark.skipif(not (BOT / "bot.py").exists(),
                                                reason="examples/gitbot is not in this tree")]
SECRET = "webhook-s3cret"
PORT = 28561
GEMINI_ANSWER = {"candidates": [{"content": {"parts": [
    {"text": json.dumps({"label": "bug", "comment": "Thanks for the report."})}]}}]}


async def _api(answer: object, seen: list[bytes], stream: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += await stream.receive_some(65536)
    seen.append(head.split(b"\r\n")[0])
    payload = json.dumps(answer).encode()
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(len(payload)).encode()
                          + b"\r\nConnection: close\r\n\r\n" + payload)
    await stream.aclose()


async def _http(method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", PORT)
    async with stream:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                 f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    if not reply:
        raise OSError("no answer yet")
    return int(reply.split(b" ", 2)[1]), reply.partition(b"\r\n\r\n")[2]


async def _exercise(stop: trio.Event, answers: list[tuple[int, bytes]]) -> None:
    """The test webhook (and the debug endpoint), once the bot listens; then stop learning."""
    while True:
        try:
            answers.append(await _http("GET", "/debug/read-ssh"))
            break
        except (OSError, trio.BrokenResourceError, ValueError, IndexError):
            await trio.sleep(0.1)
    event = {"action": "opened", "repository": {"full_name": "octo/repo"},
             "issue": {"number": 7, "title": "It crashes", "body": "Traceback..."}}
    body = json.dumps(event).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answers.append(await _http("POST", "/", body, {"X-GitHub-Event": "issues",
                                                   "X-Hub-Signature-256": signature,
                                                   "Content-Type": "application/json"}))
    stop.set()


async def test_learn_the_example_gitbot(scratch: Path) -> None:
    work = scratch / "gitbot"
    shutil.copytree(BOT, work)
    (scratch / "home" / ".ssh").mkdir(parents=True)
    (scratch / "home" / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    seen: list[bytes] = []
    answers: list[tuple[int, bytes]] = []
    stop = trio.Event()
    # The bot reaches its APIs through *_BASE_URL (as under nono's credential routes), here
    # plain HTTP to the real names, which the proxy sends to local fakes.
    env = {"HOME": str(scratch / "home"), "PATH": "/usr/bin:/bin", "PORT": str(PORT),
           "WEBHOOK_SECRET": SECRET, "XDG_RUNTIME_DIR": str(scratch / "run"),
           "GEMINI_BASE_URL": "http://generativelanguage.googleapis.com",
           "GITHUB_BASE_URL": "http://api.github.com"}
    base = parse_profile(msgspec.json.encode({
        "meta": {"name": "gitbot-env"},
        "environment": {"allow_vars": ["PORT", "WEBHOOK_SECRET", "GEMINI_BASE_URL",
                                       "GITHUB_BASE_URL"]},
        "network": {"block": True}}), "gitbot-env")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            gemini = await nursery.start(functools.partial(
                trio.serve_tcp, functools.partial(_api, GEMINI_ANSWER, seen), 0,
                host="127.0.0.1"))
            github = await nursery.start(functools.partial(
                trio.serve_tcp, functools.partial(_api, {}, seen), 0, host="127.0.0.1"))
            resolver = Resolver(pins={
                "generativelanguage.googleapis.com":
                    f"127.0.0.1:{gemini[0].socket.getsockname()[1]}",
                "api.github.com": f"127.0.0.1:{github[0].socket.getsockname()[1]}"})
            nursery.start_soon(_exercise, stop, answers)
            result: LearnResult = await learn(
                ["/usr/bin/python3", "bot.py"], cwd=str(work), env=env, timeout=45,
                base_profile=base, listen_ports=(PORT,), resolver=resolver, stop=stop)
            nursery.cancel_scope.cancel()
    assert answers[0][0] == 403  # /debug/read-ssh: the key is masked, even while learning
    assert answers[1][0] == 200, answers[1]
    assert json.loads(answers[1][1])["label"] == "bug"
    assert len(seen) == 3  # one Gemini call, two GitHub calls
    assert result.stopped and not result.timed_out
    # the seed's shape: workdir, the API hosts, the webhook port; ~/.ssh noted, not added
    assert result.workdir_access is not None and result.workdir_access.reads
    assert {h.hostname for h in result.outbound} == {"generativelanguage.googleapis.com",
                                                     "api.github.com"}
    assert [p.port for p in result.listening] == [PORT]
    assert any(d.path.endswith("/.ssh/id_ed25519") for d in result.denied_touched)
    assert not any("/.ssh" in g.path for g in result.grants)
    profile = parse_profile(result.to_profile("gitbot", extends="gitbot-env"), "gitbot")
    assert sorted(profile.network.allow_domain) == ["api.github.com",
                                                    "generativelanguage.googleapis.com"]
    assert list(profile.network.listen_port) == [PORT]
