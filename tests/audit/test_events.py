"""The event model: tags, checks at construction and decoding, redaction."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from nonod.audit import (
    EVENT_KINDS,
    REDACTED,
    Enforcement,
    Entry,
    Network,
    SessionEnded,
    SessionStarted,
    kind_of,
    redact_argv,
)
from nonod.sandbox import EnforcementReport, LayerReport

from ._support import DIGEST, session_events

SECRET = "ghp_R3alS3cretValue0123456789abcdef"
PHANTOM = "9c1f" * 16


def test_every_kind_is_tagged_in_type_and_round_trips() -> None:
    decoder = msgspec.json.Decoder(Entry)
    seen = set()
    for event in session_events():
        data = msgspec.json.encode(event, order="sorted")
        assert msgspec.json.decode(data)["type"] == kind_of(event)
        assert decoder.decode(data) == event
        seen.add(kind_of(event))
    assert seen <= EVENT_KINDS
    assert "seal" not in EVENT_KINDS


def test_unknown_kind_names_the_type_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.type"):
        msgspec.json.decode(b'{"type":"exfiltrated"}', type=Entry)


def test_enforcement_from_the_sandbox_report() -> None:
    report = EnforcementReport(layers=(
        LayerReport(name="filesystem", state="applied"),
        LayerReport(name="ipc_scopes", state="unavailable", reason="needs Landlock ABI v6"),
        LayerReport(name="network", state="off"),
    ), landlock_abi=5)
    event = Enforcement.from_report(report)
    assert not event.fully_enforced
    assert event.landlock_abi == 5
    assert event.missing == ("ipc_scopes: needs Landlock ABI v6",)
    assert [lay.name for lay in event.layers] == ["filesystem", "ipc_scopes", "network"]


def test_a_denial_must_say_why() -> None:
    with pytest.raises(ValueError, match="must say why"):
        Network(mode="connect", decision="deny", host="evil.com", port=443)
    data = b'{"type":"network","mode":"connect","decision":"deny","host":"x","port":1}'
    with pytest.raises(msgspec.ValidationError, match="must say why"):
        msgspec.json.decode(data, type=Entry)


def test_bad_choices_and_ports_are_refused_when_built() -> None:
    with pytest.raises(ValueError, match="decision must be one of allow, deny"):
        Network(mode="connect", decision="maybe", host="x", port=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        Network(mode="connect", decision="allow", host="x", port=70_000)
    with pytest.raises(ValueError, match="not both"):
        SessionEnded(reason="exited", exit_code=0, signal=9)


def test_network_path_never_keeps_the_query() -> None:
    event = Network(mode="reverse", decision="allow", host="generativelanguage.googleapis.com",
                    port=443, method="POST", path=f"/v1/models:generate?key={PHANTOM}#x")
    assert event.path == "/v1/models:generate"
    assert PHANTOM.encode() not in msgspec.json.encode(event)


@pytest.mark.parametrize(("argv", "expected"), [
    (["bot", f"--token={SECRET}"], ["bot", f"--token={REDACTED}"]),
    (["bot", "--api-key", "k-123"], ["bot", "--api-key", REDACTED]),
    (["env", "GITHUB_TOKEN=abc", "python3"], ["env", f"GITHUB_TOKEN={REDACTED}", "python3"]),
    (["curl", "https://user:hunter2@example.com/x"],
     ["curl", f"https://user:{REDACTED}@example.com/x"]),
    (["curl", "https://h/x?q=cats&key=abc&page=2"],
     ["curl", f"https://h/x?q=cats&key={REDACTED}&page=2"]),
    (["git", "--author=Jo", "--verbose", "file"], ["git", "--author=Jo", "--verbose", "file"]),
    (["bot", "--password", "--verbose"], ["bot", "--password", "--verbose"]),
    (["bot", "--clientSecret=s"], ["bot", f"--clientSecret={REDACTED}"]),
])
def test_redact_argv_heuristic(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == tuple(expected)


def test_redact_argv_removes_known_values_anywhere() -> None:
    argv = ["bot", SECRET, f"--header=Authorization: Bearer {PHANTOM}", f"x{SECRET}y"]
    out = redact_argv(argv, secrets=[SECRET, PHANTOM, ""])
    joined = " ".join(out)
    assert SECRET not in joined
    assert PHANTOM not in joined
    assert out[1] == REDACTED
    assert out[3] == f"x{REDACTED}y"


def test_redaction_is_idempotent_and_runs_again_in_session_started() -> None:
    argv = ("bot", "--token", "abc", "--db-password=pw", "https://u:p@h/?apikey=1")
    once = redact_argv(argv)
    assert redact_argv(once) == once
    event = SessionStarted(session="s", argv=argv, cwd="/", uid=0, policy_digest=DIGEST)
    assert event.argv == once
    assert msgspec.json.decode(msgspec.json.encode(event), type=Entry) == event


def test_importing_the_public_face_does_not_import_trio() -> None:
    code = ("import sys, nonod.audit as a; a.verify_session_file; a.render_record; "
            "assert 'trio' not in sys.modules, 'trio imported'; a.AuditHub; "
            "assert 'trio' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_network_from_the_proxy_event() -> None:
    from nonod.proxy import NetworkEvent

    dropped = NetworkEvent(mode="connect", decision="deny", host="169.254.169.254", port=80,
                           reason="metadata", status=0)
    event = Network.from_proxy(dropped)
    assert (event.status, event.reason, event.method, event.path) == (0, "metadata", None, None)
    data = msgspec.json.encode(event)
    assert msgspec.json.decode(data, type=Entry) == event  # status 0 decodes
    opened = Network.from_proxy(NetworkEvent(
        mode="http", decision="allow", host="h", port=80, reason="allowed_host", status=200,
        stage="open", method="GET", path="/x", address="203.0.113.7"))
    assert opened.stage == "open" and opened.address == "203.0.113.7" and opened.path == "/x"
