"""The fresh CONNECT's audit records made from a kept template are the records
:meth:`Exchange.event` makes from the same exchange (:func:`open_template`)."""

from __future__ import annotations

import msgspec
import pytest

from nonod.proxy._decide import Decision, Reason
from nonod.proxy._events import Exchange, open_template
from nonod.proxy._fresh import address_text


class _Clock:
    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


@pytest.mark.parametrize(("host", "address", "port"), [
    ("api.example.com", "127.0.0.1", 443),
    ("[2001:db8::1]", "2001:db8::1", 8443),
])
def test_template_records_equal_the_exchange_records(host: str, address: str, port: int
                                                     ) -> None:
    decision = Decision(allowed=True, reason=Reason.ALLOWED_HOST, host=host, port=port)
    def exchange() -> Exchange:
        ex = Exchange(started=10.0, clock=_Clock(10.0001234567, 10.5))
        ex.method, ex.mode = "CONNECT", "connect"
        ex.host, ex.port, ex.decision = decision.host, decision.port, decision
        ex.address = address_text(address, port)
        return ex

    made, kept = exchange(), exchange()
    template = open_template(decision, address_text(address, port))
    opened = kept.opened(template)
    assert opened == made.event("allow", made.reason, 200, "open")
    assert opened.duration_ms == 0.123
    made.bytes_out = kept.bytes_out = 64
    made.bytes_in = kept.bytes_in = 128
    closed, made_closed = kept.closed(opened, 200), made.close("allow", made.reason, 200)
    assert closed == made_closed
    assert closed.duration_ms == 500.0 and closed.stage == "close"
    assert kept.done and made.done
    # every field, the tag too, as the audit writes it
    assert msgspec.json.encode(closed) == msgspec.json.encode(made_closed)
