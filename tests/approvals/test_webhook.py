"""The webhook approval backend, end to end: a local HTTPS receiver (pinned by ``[network]
resolve``, its certificate from the daemon's ``extra_ca_file``) checks each body's HMAC with
its own copy of the key and answers allow, deny, or nothing at all."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.approvals.conftest import (
    HOST,
    FakeHost,
    QuietHandler,
    daemon_setup,
    finish,
    https_server,
    next_pending,
)
from tests.approvals.conftest import fake_host as fake_host  # the fixture
from tests.approvals.conftest import short_tmp as short_tmp  # the fixture

pytestmark = [pytest.mark.root, pytest.mark.userns]

HOOK = "hooks.example.test"
KEY = "whk_0123456789abcdef0123456789abcdef"


@dataclass
class Receiver:
    """The webhook: answers ``answer`` (``None``: never, until released)."""

    port: int = 0
    answer: str | None = "session"
    bodies: list[dict[str, Any]] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver(fake_host: FakeHost) -> Iterator[Receiver]:
    assert fake_host.ca is not None
    hook = Receiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stamp = self.headers["X-Nono-Timestamp"]
            mac = hmac.new(KEY.encode(), stamp.encode() + b"." + body, hashlib.sha256)
            hook.valid.append(
                hmac.compare_digest(self.headers["X-Nono-Signature"], "sha256=" + mac.hexdigest())
                and abs(time.time() - int(stamp)) < 60)
            hook.bodies.append(json.loads(body))
            if hook.answer is None:
                hook.release.wait(30)
                return
            self.reply(200, json.dumps({"decision": hook.answer}).encode())

    with https_server(fake_host.ca, HOOK, Handler) as port:
        hook.port = port
        try:
            yield hook
        finally:
            hook.release.set()


def _run(base: Path, fake: FakeHost, hook: Receiver, network: dict[str, Any],
         *paths: str) -> tuple[list[str], list[dict[str, Any]]]:
    key = base / "webhook.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    network = json.loads(json.dumps(network).replace("KEYFILE", f"file://{key}"))
    setup = daemon_setup(base, fake, {HOOK: f"127.0.0.1:{hook.port}"})
    try:
        lines = finish(setup.launch(setup.profile(network), *paths))
        return lines, setup.audit()
    finally:
        setup.daemon.stop()


WEBHOOK = {
    "approval_backends": {"hook": {"type": "webhook", "url": f"https://{HOOK}/approve",
                                   "key": "KEYFILE", "timeout_secs": 2}},
    "approval_defaults": {"backend": "hook", "timeout_secs": 30},
}


@pytest.mark.parametrize(("answer", "allowed", "decision"), [
    ("session", True, "session"), ("deny", False, "deny"), (None, False, "timeout")])
def test_the_webhook_decides(short_tmp: Path, fake_host: FakeHost, receiver: Receiver,
                             answer: str | None, allowed: bool, decision: str) -> None:
    receiver.answer = answer
    lines, audit = _run(short_tmp, fake_host, receiver, WEBHOOK, "/hooked")
    assert len(lines) == 1
    assert lines[0] == "200 hello /hooked" if allowed else "403" in lines[0], lines
    assert fake_host.paths == (["/hooked"] if allowed else [])
    assert receiver.valid == [True]
    body = receiver.bodies[0]
    assert (body["host"], body["port"], body["mode"]) == (HOST, 443, "connect")
    assert body["command"][-1] == f"https://{HOST}/hooked" and body["pid"] > 0
    decided = [e for e in audit if e["type"] == "approval" and e["stage"] == "decided"]
    assert [(e["id"], e["decision"]) for e in decided] == [(body["id"], decision)]
    assert decided[0]["decider"].startswith("webhook:hook")
    assert KEY not in json.dumps(audit)


def test_a_chain_of_any_lets_the_queue_allow_what_the_webhook_denied(
        short_tmp: Path, fake_host: FakeHost, receiver: Receiver) -> None:
    receiver.answer = "deny"
    key = short_tmp / "webhook.key"
    key.write_text(KEY)
    key.chmod(0o600)
    network = {
        "approval_backends": {
            "hook": {"type": "webhook", "url": f"https://{HOOK}/approve",
                     "key": f"file://{key}"},
            "either": {"type": "chain", "mode": "any", "backends": ["hook", "queue"]}},
        "approval_defaults": {"backend": "either", "timeout_secs": 60},
    }
    setup = daemon_setup(short_tmp, fake_host, {HOOK: f"127.0.0.1:{receiver.port}"})
    try:
        with setup.client() as client, setup.events(client) as events:
            proc = setup.launch(setup.profile(network), "/chained")
            pending = next_pending(events)
            assert setup.cli("approve", pending.id).returncode == 0
            lines = finish(proc)
        audit = setup.audit()
    finally:
        setup.daemon.stop()
    assert lines == ["200 hello /chained"]
    assert receiver.valid == [True]
    decided = [e for e in audit if e["type"] == "approval" and e["stage"] == "decided"]
    assert [(e["decision"], e["decider"]) for e in decided] == [("once", "chain:either:uid:0")]


def test_a_profile_may_use_the_operators_webhook(
        short_tmp: Path, fake_host: FakeHost, receiver: Receiver) -> None:
    """``[approvals.backends.ops]`` in nonod.toml, named ``daemon:ops`` by the profile; its
    key is read with the daemon's rights."""
    key = short_tmp / "ops.key"
    key.write_text(KEY)
    key.chmod(0o600)
    operator = (f'[approvals.backends.ops]\ntype = "webhook"\n'
                f'url = "https://{HOOK}/ops"\nkey = "file://{key}"\n')
    setup = daemon_setup(short_tmp, fake_host, {HOOK: f"127.0.0.1:{receiver.port}"},
                         extra_config=operator)
    try:
        ops = setup.profile({"approval_defaults": {"backend": "daemon:ops"}})
        lines = finish(setup.launch(ops, "/ops"))
        unknown = setup.cli("launch", "--profile", str(setup.profile(
            {"approval_defaults": {"backend": "daemon:nope"}}, name="nope")), "--", "true")
        audit = setup.audit()
    finally:
        setup.daemon.stop()
    assert lines == ["200 hello /ops"]
    assert receiver.valid == [True] and receiver.bodies[0]["backend"] == "daemon:ops"
    decided = [e for e in audit if e["type"] == "approval" and e["stage"] == "decided"]
    assert [(e["decision"], e["decider"]) for e in decided] == [("session", "webhook:daemon:ops")]
    assert unknown.returncode != 0 and "unknown approval backend `daemon:nope`" in unknown.stderr
