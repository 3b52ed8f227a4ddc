"""Red team, the daemon's audit key lent to a sealed file rewritten on disk.

The envelope sink (``[[export]] type = "envelope"``) signs each sealed session with the
daemon's ``[audit] sign_key`` and posts it to a control plane, which checks it with
``audit verify --envelope --key``. What it signed was whatever the session's file held when
it was shipped, checked for its chain alone: a file rewritten after its seal, with every hash
recomputed (what anyone who can write the file can do, docs/audit.md "What the chain does not
do on its own"), verifies as a chain, and the daemon signed it, so the receiver held the
daemon's signature over events that never happened. The ledger, which ``audit verify``
catches such a file with, was not consulted. A sink that signs (is sealed-only) now ships a
session only when its seal is the one the daemon's ledger, held in memory since it was
opened, recorded; a rewritten file is skipped and said so (the ledger on disk could be
rewritten too; the daemon's memory cannot)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from nonod.audit import EcdsaP256Signer, Network, Record, Seal
from nonod.audit._chain import Chain
from nonod.audit._writer import Ledger
from nonod.shipping import Exporter, LaneSettings
from nonod.shipping._envelope import EnvelopeSink
from tests.audit._export_support import HttpReceiver, wait_until
from tests.audit._support import fixed_clock, write_session

FAST = LaneSettings(retry_min=0.01, retry_max=0.05, poll_interval=0.05, linger=0)


def _rewritten(data: bytes, session: str) -> bytes:
    """The file with its refused connection turned into an allowed one, rehashed."""
    decoder = msgspec.json.Decoder(Record)
    chain = Chain.for_session(session)
    clock = fixed_clock()
    out = b""
    for raw in data.split(b"\n")[:-2]:  # every line but the seal
        event = decoder.decode(raw).event
        assert not isinstance(event, Seal)
        if isinstance(event, Network) and event.decision == "deny":
            event = Network(mode="connect", decision="allow", host="evil.com", port=443)
        out += chain.append(event, clock()).line
    seal = Seal(session=session, count=chain.seq, head=chain.head.hex(),
                merkle_root=chain.merkle.root().hex())
    return out + chain.append(seal, clock()).line


async def test_a_rewritten_sealed_file_is_not_signed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ledger = await Ledger.open(state)
    try:
        forged = await write_session(state, session="eeee0001", ledger=ledger)
        await write_session(state, session="eeee0002", ledger=ledger)
        original = forged.read_bytes()
        forged.write_bytes(_rewritten(original, "eeee0001"))
        assert forged.read_bytes() != original

        plane = HttpReceiver()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(plane.serve, None)
            sink = EnvelopeSink("plane", f"http://127.0.0.1:{port}/v1/envelopes",
                                signer=EcdsaP256Signer(ec.generate_private_key(ec.SECP256R1())))
            exporter = Exporter(state, [(sink, FAST)], ledger=ledger)
            await nursery.start(exporter.run)
            await wait_until(lambda: not exporter.undelivered(["eeee0002"]),
                             what="the untouched session's envelope")
            exporter.wake()
            await wait_until(lambda: "does not match the ledger"
                             in (exporter.statistics()["plane"].last_error or ""),
                             what="the rewritten file refused")
            nursery.cancel_scope.cancel()
    finally:
        await ledger.aclose()
    assert plane.requests is not None
    shipped = [json.loads(r.body)["session"] for r in plane.requests]
    assert shipped == ["eeee0002"], shipped
    assert exporter.undelivered(["eeee0001"]) == {"eeee0001"}
