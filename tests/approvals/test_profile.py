"""Approvals in profiles: nono's `network.approval_*` shape, checked strictly, resolved into
the NetworkPolicy the proxy and the daemon read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nonod.errors import ProfileError, UnsupportedFeature
from nonod.policy import ApprovalBackend, ApprovalPolicy, NetworkPolicy
from nonod.profiles import CliOverrides, ResolveContext, parse_profile, resolve
from nonod.proxy import proxy_policy

CTX = ResolveContext(home="/root", workdir="/tmp", uid=0, tmpdir="/tmp")


def network(net: dict[str, Any], *, cli: CliOverrides | None = None,
            **more: Any) -> NetworkPolicy:
    text = json.dumps({"meta": {"name": "t"}, "network": net, **more}).encode()
    return resolve(parse_profile(text, "t.json"), CTX, overrides=cli).network


def test_a_default_backend_means_ask_and_restricts_the_network() -> None:
    net = network({"approval_defaults": {"backend": "queue", "timeout_secs": 30}})
    assert net.restricted and net.allow_domain == ()
    assert net.approval == ApprovalPolicy(backend="queue", timeout_secs=30)
    assert proxy_policy(net).ask


def test_nonod_network_unlisted_says_ask_or_deny() -> None:
    assert network({"allow_domain": ["a.example"]},
                   nonod={"network_unlisted": "ask"}).approval == ApprovalPolicy()
    denied = network({"approval_defaults": {"backend": "queue"}},
                     nonod={"network_unlisted": "deny"})
    assert denied.approval is None and not denied.restricted
    assert network({"allow_domain": ["a.example"]}).approval is None
    assert not proxy_policy(network({"allow_domain": ["a.example"]})).ask


def test_backends_resolve_with_their_fields() -> None:
    net = network({
        "approval_backends": {
            "hook": {"type": "webhook", "url": "https://h.example/x", "key": "hmac",
                     "timeout_secs": 5},
            "both": {"type": "chain", "mode": "all", "backends": ["hook", "queue"]}},
        "approval_defaults": {"backend": "both"}})
    assert net.approval is not None
    assert net.approval.named("both") == ApprovalBackend(
        name="both", type="chain", mode="all", members=("hook", "queue"))
    assert net.approval.named("hook").key == "hmac"
    assert net.approval.named("queue").type == "queue"


def test_daemon_backends_are_named_by_prefix_and_added_at_launch() -> None:
    net = network({"approval_backends": {"both": {
        "type": "chain", "mode": "any", "backends": ["daemon:ops", "queue"]}},
        "approval_defaults": {"backend": "both"}})
    assert net.approval is not None
    ops = ApprovalBackend(name="daemon:ops", type="webhook", url="https://o.example", key="k")
    spare = ApprovalBackend(name="daemon:spare", type="webhook", url="https://s.example",
                            key="k")
    merged = net.approval.with_daemon_backends((ops, spare))
    assert merged.named("daemon:ops") == ops
    with pytest.raises(KeyError):
        merged.named("daemon:spare")  # only what the profile names
    with pytest.raises(KeyError, match="daemon:ops"):
        net.approval.with_daemon_backends((spare,))


def test_block_net_drops_approvals() -> None:
    net = network({"approval_defaults": {"backend": "queue"}},
                  cli=CliOverrides(block_net=True))
    assert net.block and net.approval is None


@pytest.mark.parametrize(("net", "error", "words"), [
    ({"approval_backends": {"t": {"type": "terminal"}}}, UnsupportedFeature, "terminal"),
    ({"approval_backends": {"d": {"type": "dialog"}}}, UnsupportedFeature, "dialog"),
    ({"approval_backends": {"h": {"type": "webhook", "url": "http://h.example",
                                  "key": "k"}}}, ProfileError, "https://"),
    ({"approval_backends": {"h": {"type": "webhook", "url": "https://h.example"}}},
     ProfileError, "key"),
    ({"approval_backends": {"c": {"type": "chain", "backends": ["queue"]}}},
     ProfileError, "mode"),
    ({"approval_backends": {"c": {"type": "chain", "mode": "any", "backends": ["nope"]}}},
     ProfileError, "`nope`"),
    ({"approval_backends": {"c": {"type": "chain", "mode": "any", "backends": ["c"]}}},
     ProfileError, "`c`"),
    ({"approval_backends": {"queue": {"type": "queue"}}}, ProfileError, "built-in"),
    ({"approval_defaults": {"backend": "missing"}}, ProfileError, "missing"),
    ({"approval_defaults": {"backend": "queue", "timeout_secs": 0}}, ProfileError, ""),
    ({"approval_backends": {"x": {"type": "sms"}}}, ProfileError, ""),
])
def test_bad_approval_settings_are_refused(net: dict[str, Any], error: type[Exception],
                                           words: str) -> None:
    with pytest.raises(error) as caught:
        network(net)
    assert words in str(caught.value)
