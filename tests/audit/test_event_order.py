"""A session's events are in the order its program saw them (docs/audit.md, "Filesystem
denials": ``fs_denied`` events are in order with the session's other events).

The proxy answered a refused request, then (after a pass through the event loop) recorded
its ``network`` event: a program that acted on the 403 at once (a refused open next) could
have that call's ``fs_denied`` event written first, when the daemon's reader ran in between
(``test_fs_denied.py::test_session_events_in_order_and_kernel_state_restored`` failed so once
under load). Here the program's reaction is a task of the same loop that records itself in
the same sink once it has read the answer, as the reader records a denial.
"""

from __future__ import annotations

import trio

from nonod.proxy import ProxyLimits, ProxyPolicy, ProxyServer
from tests.proxy.conftest import RecordingResolver, fake_dns


async def test_a_refusals_event_precedes_what_the_program_does_after_reading_it() -> None:
    seen: list[str] = []
    server = ProxyServer(policy=ProxyPolicy(hosts=frozenset({"api.github.com"})),
                         resolver=RecordingResolver(getaddrinfo=fake_dns({})),
                         events=lambda e: seen.append(f"network {e.decision}"),
                         limits=ProxyLimits(), proxy_token=None, zero_copy=True)
    for _ in range(30):
        ours, theirs = trio.socket.socketpair()
        proxy_end, program = trio.SocketStream(ours), trio.SocketStream(theirs)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, proxy_end)
            await program.send_all(b"CONNECT evil.example:443 HTTP/1.1\r\n"
                                   b"Host: evil.example:443\r\n\r\n")
            answer = await program.receive_some(4096)
            seen.append("the program's next call")  # what it does once it read the 403
            assert answer.startswith(b"HTTP/1.1 403 "), answer
        await program.aclose()
        await proxy_end.aclose()
    assert seen == ["network deny", "the program's next call"] * 30, seen
