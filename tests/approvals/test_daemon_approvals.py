"""Approvals end to end: a real daemon, sessions whose profile says `ask`, a fake HTTPS host
pinned by ``[network] resolve``, and ``nonoctl approvals``/``approve``/``deny``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.approvals.conftest import (
    HOST,
    PY,
    FakeHost,
    Setup,
    daemon_setup,
    finish,
    next_pending,
)
from tests.approvals.conftest import fake_host as fake_host  # the fixture
from tests.approvals.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.conftest import NOBODY, hello, raw_client
from tests.daemon.localusers import local_users

pytestmark = [pytest.mark.root, pytest.mark.userns]

ASK = {"approval_defaults": {"backend": "queue", "timeout_secs": 60}}


def test_a_held_request_goes_through_once_approved_and_the_next_without_asking(
        setup: Setup) -> None:
    profile = setup.profile(ASK)
    with setup.client() as client, setup.events(client) as events:
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
    with setup.client() as client, setup.events(client) as events:
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


def test_plain_http_is_asked_about_with_its_method_and_path(setup: Setup) -> None:
    profile = setup.profile(ASK)
    with setup.client() as client, setup.events(client) as events:
        proc = setup.cli.popen("launch", "--profile", str(profile), "--", PY, "-S",
                               str(setup.base / "inside.py"), str(setup.fake.ca_file),
                               f"http://{HOST}/plain/page?token=s3cret")
        pending = next_pending(events)
        assert (pending.mode, pending.method, pending.path, pending.port) == (
            "http", "GET", "/plain/page", 80)
        assert setup.cli("deny", pending.id).returncode == 0
        lines = finish(proc)
    assert len(lines) == 1 and "403" in lines[0]
    assert "s3cret" not in json.dumps(setup.audit())


def test_the_approval_names_the_process_that_asked(setup: Setup) -> None:
    """A shell runs the fetch as its child: the approval names the child (its pid and its
    command line, secret-looking arguments redacted), not the session's first program."""
    profile = setup.profile(ASK)
    fetch = (f"{PY} -S {setup.base / 'inside.py'} {setup.fake.ca_file} "
             f"https://{HOST}/child --api-key=hunter2-secret-value; echo done")
    with setup.client() as client, setup.events(client) as events:
        proc = setup.cli.popen("launch", "--profile", str(profile), "--", "/bin/sh", "-c",
                               fetch)
        pending = next_pending(events)
        session = client.inspect(pending.session)
        assert session.pid is not None and pending.pid not in (0, session.pid)
        assert pending.command[:2] == (PY, "-S")
        assert f"https://{HOST}/child" in pending.command
        assert "hunter2-secret-value" not in json.dumps(pending.command)
        client.answer(pending.id, "once")
        lines = finish(proc)
    assert lines[0] == "200 hello /child" and lines[-1] == "done"
    requested = next(e for e in setup.audit() if e["type"] == "approval")
    assert requested["pid"] == pending.pid and requested["command"] == list(pending.command)


def test_a_session_stopped_while_held_records_the_approval_as_cancelled(
        setup: Setup) -> None:
    profile = setup.profile(ASK)
    with setup.client() as client, setup.events(client) as events:
        proc = setup.launch(profile, "/never")
        pending = next_pending(events)
        assert setup.cli("stop", pending.session, "--force").returncode == 0
        proc.communicate(timeout=120)
        assert client.approvals() == ()
    decided = [e for e in setup.audit() if e["type"] == "approval" and e["stage"] == "decided"]
    assert [(e["id"], e["decision"], e["decider"]) for e in decided] == [
        (pending.id, "deny", "cancelled")]
    assert setup.fake.paths == []


def test_an_approval_for_one_session_never_applies_to_another(setup: Setup) -> None:
    profile = setup.profile(ASK)
    with setup.client() as client, setup.events(client) as events:
        proc_a = setup.launch(profile, "/a1", "/a2")
        pending_a = next_pending(events)
        proc_b = setup.launch(profile, "/b1")
        pending_b = next_pending(events)
        assert pending_a.session != pending_b.session
        client.answer(pending_a.id, "session")  # a program on the client API answers
        # B is still held: A's approval (and its widened allowlist) is A's alone.
        assert [a.id for a in client.approvals()] == [pending_b.id]
        assert [a.id for a in client.approvals(pending_a.session)] == []
        assert setup.cli("deny", pending_b.id).returncode == 0
        lines_a, lines_b = finish(proc_a), finish(proc_b)
    assert lines_a == ["200 hello /a1", "200 hello /a2"]
    assert len(lines_b) == 1 and lines_b[0].startswith("refused") and "403" in lines_b[0]
    assert sorted(setup.fake.paths) == ["/a1", "/a2"]


def test_special_targets_and_closed_ports_are_refused_without_asking(setup: Setup) -> None:
    """Only a name (or public address) that is merely unlisted is asked about: metadata and
    special-range targets, and ports the profile does not open, are refused at once."""
    profile = setup.profile(ASK)
    proc = setup.cli.popen("launch", "--profile", str(profile), "--", PY, "-S",
                           str(setup.base / "inside.py"), str(setup.fake.ca_file),
                           "https://169.254.169.254/", "https://100.64.0.1/",
                           "https://10.1.2.3/", f"https://{HOST}:8443/")
    lines = finish(proc)
    assert len(lines) == 4 and all("403" in line for line in lines), lines
    assert not [e for e in setup.audit() if e["type"] == "approval"]
    reasons = [e["reason"] for e in setup.audit() if e["type"] == "network"]
    assert reasons == ["link_local", "cgnat", "private", "not_allowed"]


def test_a_profile_without_ask_refuses_at_once(setup: Setup) -> None:
    profile = setup.profile({"allow_domain": ["other.example.test"]}, name="deny")
    lines = finish(setup.launch(profile, "/x"))
    assert len(lines) == 1 and "403" in lines[0]
    assert not [e for e in setup.audit() if e["type"] == "approval"]


def test_another_user_can_neither_see_nor_answer_an_approval(
        short_tmp: Path, fake_host: FakeHost) -> None:
    setup = daemon_setup(short_tmp, fake_host, system=True)
    try:
        profile = setup.profile(ASK, nonod={"allow_root": True})
        with local_users(short_tmp, 1) as (other,), setup.client() as client, \
                setup.events(client) as events:
            proc = setup.launch(profile, "/mine")
            pending = next_pending(events)
            replies = [json.loads(line) for line in raw_client(setup.daemon.socket, [
                hello(),
                {"type": "approval_list"},
                {"type": "approval_inspect", "id": pending.id},
                {"type": "approval_answer", "id": pending.id, "answer": "session"},
                {"type": "approval_answer", "id": "ap-" + "0" * 32, "answer": "deny"},
            ], prefix=other.prefix()) if line.startswith("{")]
            listed, inspected, answered, unknown = replies[1:]
            assert listed == {"type": "approvals", "approvals": []}
            # Someone else's approval reads exactly like one that does not exist.
            for reply in (inspected, answered):
                assert reply["code"] == "approval.not_found", reply
                assert reply["message"].replace(pending.id, "X") == unknown["message"].replace(
                    "ap-" + "0" * 32, "X")
                assert HOST not in json.dumps(reply)
            # Still held: the owner (root here) answers it.
            assert [a.id for a in client.approvals()] == [pending.id]
            assert setup.cli("deny", pending.id).returncode == 0
            lines = finish(proc)
        assert len(lines) == 1 and "403" in lines[0]
        assert setup.fake.paths == []
    finally:
        setup.daemon.stop()


def test_save_to_profile_writes_the_host_into_the_callers_profile_file(setup: Setup) -> None:
    profile = setup.profile(ASK)
    before = json.loads(profile.read_text())
    with setup.client() as client, setup.events(client) as events:
        proc = setup.launch(profile, "/saved", "/again")
        pending = next_pending(events)
        done = setup.cli("approve", pending.id, "--save-to-profile")
        assert done.returncode == 0, done.stderr
        lines = finish(proc)
    assert lines == ["200 hello /saved", "200 hello /again"]
    assert f"saved to {profile}" in done.stdout
    assert f'+      "{HOST}"' in done.stdout  # the unified diff
    after = json.loads(profile.read_text())
    assert after["network"]["allow_domain"] == [HOST]
    assert {k: v for k, v in after["network"].items() if k != "allow_domain"} == before["network"]
    assert oct(profile.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in profile.parent.iterdir() if p.name.startswith(".")] == []
    decided = [e for e in setup.audit() if e["type"] == "approval" and e["stage"] == "decided"]
    assert [(e["decision"], e["saved_to"]) for e in decided] == [("session", str(profile))]


def test_save_to_profile_is_refused_for_a_file_the_caller_does_not_own(setup: Setup) -> None:
    profile = setup.profile(ASK, name="theirs")
    text = profile.read_text()
    with setup.client() as client, setup.events(client) as events:
        proc = setup.launch(profile, "/x")
        pending = next_pending(events)
        # Given away once the session runs: a profile another user owns is not launched.
        os.chown(profile, NOBODY, NOBODY)
        refused = setup.cli("approve", pending.id, "--save-to-profile")
        assert refused.returncode != 0 and "not a regular file of yours" in refused.stderr
        # Nothing was decided: the request is still held, until denied.
        assert [a.id for a in client.approvals()] == [pending.id]
        assert setup.cli("deny", pending.id).returncode == 0
        lines = finish(proc)
    assert "403" in lines[0]
    assert profile.read_text() == text
