"""Hash chain and Merkle construction, checked against a direct reading of RFC 6962."""

from __future__ import annotations

import hashlib
import itertools

import msgspec
import pytest

from nonod.audit import MerkleAccumulator, merkle_root
from nonod.audit._chain import (
    ENTRY_TAG,
    LEDGER_TAG,
    Chain,
    WireLine,
    entry_hash,
    session_genesis,
)

from ._support import session_events


def _reference(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written the way the RFC states it (recursive)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _reference(leaves[:k]) + _reference(leaves[k:])).digest()


@pytest.mark.parametrize("n", [*range(0, 18), 31, 32, 33, 100, 257])
def test_incremental_merkle_matches_the_rfc_definition(n: int) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    acc = MerkleAccumulator()
    for i, leaf in enumerate(leaves):
        acc.add(leaf)
        assert acc.root() == _reference(leaves[: i + 1])
    assert merkle_root(leaves) == _reference(leaves)
    assert acc.size == n


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    # A two-leaf root is not the leaf hash of the concatenation, nor a bare hash of it.
    assert merkle_root([a, b]) != hashlib.sha256(a + b).digest()
    assert merkle_root([a, b]) != merkle_root([hashlib.sha256(b"\x00" + a + b).digest()])


def test_chain_lines_are_canonical_and_hash_every_field() -> None:
    chain = Chain.for_session("s1")
    event = session_events("s1")[0]
    appended = chain.append(event, "2025-06-01T12:00:00.000000Z")
    assert appended.line.endswith(b"\n") and appended.line.count(b"\n") == 1
    wire = msgspec.json.decode(appended.line, type=WireLine)
    assert msgspec.json.encode(wire, order="sorted") + b"\n" == appended.line
    assert list(msgspec.json.decode(appended.line)) == ["event", "hash", "prev", "seq", "ts"]
    assert wire.prev == session_genesis("s1").hex()
    body = bytes(wire.event)
    assert body == msgspec.json.encode(event, order="sorted")
    digest = entry_hash(ENTRY_TAG, session_genesis("s1"), 1, wire.ts, body)
    assert wire.hash == digest.hex()
    # Each part of the preimage matters: ts, seq, prev, tag.
    assert entry_hash(ENTRY_TAG, session_genesis("s1"), 1, "2025-06-01T12:00:00.000001Z",
                      body) != digest
    assert entry_hash(ENTRY_TAG, session_genesis("s1"), 2, wire.ts, body) != digest
    assert entry_hash(ENTRY_TAG, session_genesis("s2"), 1, wire.ts, body) != digest
    assert entry_hash(LEDGER_TAG, session_genesis("s1"), 1, wire.ts, body) != digest


def test_chain_links_each_line_to_the_previous() -> None:
    chain = Chain.for_session("s1")
    lines = [chain.append(e, "2025-06-01T12:00:00.000000Z") for e in session_events("s1")]
    for before, after in itertools.pairwise(lines):
        assert after.prev == before.hash
        assert after.seq == before.seq + 1
    assert chain.merkle.root() == merkle_root([a.hash for a in lines])
