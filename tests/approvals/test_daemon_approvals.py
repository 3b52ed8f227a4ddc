"""Approvals end to end: a real daemon, sessions whose profile says `ask`, a fake HTTPS host
pinned by ``[network] resolve``, and ``nonoctl approvals``/``approve``/``deny``."""

from __future__ import annotations

import json

import pytest

from tests.approvals.conftest import HOST, Setup, finish, next_pending

pytestmark = [pytest.mark.root, pytest.mark.userns]

ASK = {"approval_defaults": {"backend": "queue", "timeout_secs": 60}}


def test_a_held_request_goes_through_once_approved_and_the_next_without_asking(
        setup: Setup) -> None:
    profile = setup.profile(ASK)
    with setup.client() as client, client.events() as events:
        proc = setup.launch(profile, "/one", "/two")
        pending = next_pending(events)
        assert (pending.host, pending.port, pending.mode) == (HOST, 443, "connect")
        assert pending.pid > 0 and pending.command[-2:] == (
            f"https://{HOST}/one", f"https://{HOST}/two")
        # Held: the fake host has not been reached yet.
        assert setup.fake.paths == []
        listed = setup.cli("approvals", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [a["id"] for a in json.loads(listed.stdout)] == [pending.id]
        shown = setup.cli("approvals", "inspect", pending.id)
        assert shown.returncode == 0 and HOST in shown.stdout
        done = setup.cli("approve", pending.id, "--session")
        assert done.returncode == 0, done.stderr
        lines = finish(proc)
    assert lines == ["200 hello /one", "200 hello /two"]
    assert setup.fake.paths == ["/one", "/two"]
    approvals = [e for e in setup.audit() if e["type"] == "approval"]
    assert [(e["stage"], e.get("decision", "")) for e in approvals] == [
        ("requested", ""), ("decided", "session")]
    assert approvals[1]["decider"] == "uid:0" and approvals[1]["latency_ms"] > 0
    network = [e for e in setup.audit() if e["type"] == "network" and e.get("stage") != "open"]
    assert [e["reason"] for e in network] == ["approved", "allowed_host"]
    # Answered: nothing is pending any more, and the id cannot be answered twice.
    again = setup.cli("approve", pending.id)
    assert again.returncode != 0 and "no pending approval" in again.stderr


def test_deny_and_timeout_refuse_the_request(setup: Setup) -> None:
    profile = setup.profile({"approval_defaults": {"backend": "queue", "timeout_secs": 1}})
    with setup.client() as client, client.events() as events:
        proc = setup.launch(profile, "/denied", "/unanswered")
        first = next_pending(events)
        assert setup.cli("deny", first.id).returncode == 0
        second = next_pending(events)  # nobody answers this one
        lines = finish(proc)
    assert second.id != first.id
    assert len(lines) == 2 and all(line.startswith("refused") and "403" in line
                                   for line in lines), lines
    assert setup.fake.paths == []
    decided = [e for e in setup.audit() if e["type"] == "approval" and e["stage"] == "decided"]
    assert [(e["id"], e["decision"], e["decider"]) for e in decided] == [
        (first.id, "deny", "uid:0"), (second.id, "timeout", "timeout")]
    reasons = [e["reason"] for e in setup.audit() if e["type"] == "network"]
    assert reasons == ["approval_denied", "approval_timeout"]


def test_an_approval_for_one_session_never_applies_to_another(setup: Setup) -> None:
    profile = setup.profile(ASK)
    with setup.client() as client, client.events() as events:
        proc_a = setup.launch(profile, "/a1", "/a2")
        pending_a = next_pending(events)
        proc_b = setup.launch(profile, "/b1")
        pending_b = next_pending(events)
        assert pending_a.session != pending_b.session
        assert setup.cli("approve", pending_a.id, "--session").returncode == 0
        # B is still held: A's approval (and its widened allowlist) is A's alone.
        assert [a.id for a in client.approvals()] == [pending_b.id]
        assert [a.id for a in client.approvals(pending_a.session)] == []
        assert setup.cli("deny", pending_b.id).returncode == 0
        lines_a, lines_b = finish(proc_a), finish(proc_b)
    assert lines_a == ["200 hello /a1", "200 hello /a2"]
    assert len(lines_b) == 1 and lines_b[0].startswith("refused") and "403" in lines_b[0]
    assert sorted(setup.fake.paths) == ["/a1", "/a2"]


def test_a_profile_without_ask_refuses_at_once(setup: Setup) -> None:
    profile = setup.profile({"allow_domain": ["other.example.test"]}, name="deny")
    lines = finish(setup.launch(profile, "/x"))
    assert len(lines) == 1 and "403" in lines[0]
    assert not [e for e in setup.audit() if e["type"] == "approval"]
