"""The proxy's side of approvals: a policy with ``ask`` holds an unlisted target on the
injected asker, and only such a target; every failure of the asker is a refusal."""

from __future__ import annotations

import trio
import trio.testing

from nonod.proxy import ApprovalAsk, ProxyLimits, ProxyPolicy, Verdict
from tests.proxy.conftest import Proxy
from tests.proxy.test_server import StartProxy, open_tunnel

ASK = ProxyPolicy(ask=True)


class Asker:
    """Answers ``verdict`` (None: never) and records what it was asked."""

    def __init__(self, verdict: Verdict | None = "once", *, fail: bool = False) -> None:
        self.verdict = verdict
        self.fail = fail
        self.asked: list[ApprovalAsk] = []

    async def __call__(self, ask: ApprovalAsk) -> Verdict:
        self.asked.append(ask)
        if self.fail:
            raise RuntimeError("the asker broke")
        if self.verdict is None:
            await trio.sleep_forever()
        assert self.verdict is not None
        return self.verdict


async def _tunnel(proxy: Proxy, target: str) -> int:
    """One CONNECT; returns once the proxy has finished with it (its close event sent)."""
    closed = sum(event.stage == "close" for event in proxy.events)
    stream, code, _ = await open_tunnel(proxy, target)
    await stream.aclose()
    with trio.fail_after(10):
        await proxy.events.wait_for(closed + 1, stage="close")
    return code


async def test_once_lets_one_request_through_and_asks_again(start_proxy: StartProxy,
                                                            echo_port: int) -> None:
    asker = Asker("once")
    proxy = await start_proxy(ASK, pins={"new.example": f"127.0.0.1:{echo_port}"},
                              asker=asker)
    assert [await _tunnel(proxy, "NEW.example.:443") for _ in range(2)] == [200, 200]
    assert [(a.host, a.port, a.mode) for a in asker.asked] == [("new.example", 443,
                                                                "connect")] * 2
    closed = [e for e in proxy.events if e.stage == "close"]
    assert [e.reason for e in closed] == ["approved", "approved"]


async def test_session_widens_this_proxy_so_the_next_request_is_not_asked(
        start_proxy: StartProxy, echo_port: int) -> None:
    asker = Asker("session")
    proxy = await start_proxy(ASK, pins={"new.example": f"127.0.0.1:{echo_port}"},
                              asker=asker)
    assert [await _tunnel(proxy, "new.example:443") for _ in range(2)] == [200, 200]
    assert len(asker.asked) == 1
    closed = [e for e in proxy.events if e.stage == "close"]
    assert [e.reason for e in closed] == ["approved", "allowed_host"]


async def test_deny_a_failing_asker_and_a_silent_one_refuse(start_proxy: StartProxy) -> None:
    limits = ProxyLimits(approval_timeout=0.2)
    for asker, reason in ((Asker("deny"), "approval_denied"),
                          (Asker(fail=True), "approval_denied"),
                          (Asker("timeout"), "approval_timeout"),
                          (Asker(None), "approval_timeout")):
        proxy = await start_proxy(ASK, asker=asker, limits=limits)
        assert await _tunnel(proxy, "new.example:443") == 403
        assert [e.reason for e in proxy.events] == [reason]
        assert proxy.resolver.asked == []  # nothing refused is ever looked up


async def test_special_targets_closed_ports_and_deny_policies_are_never_asked(
        start_proxy: StartProxy) -> None:
    asker = Asker("session")
    proxy = await start_proxy(ASK, asker=asker)
    for target in ("169.254.169.254:80", "127.0.0.1:443", "10.0.0.1:443", "metadata:80",
                   "localhost:443", "new.example:22"):
        assert await _tunnel(proxy, target) == 403, target
    plain = await start_proxy(ProxyPolicy(), asker=asker)
    assert await _tunnel(plain, "new.example:443") == 403
    assert asker.asked == []
