"""Hash chain and Merkle construction, checked against a direct reading of RFC 6962."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonod.audit import MerkleAccumulator, merkle_root
from nonod.audit._chain import (
    ENTRY_TAG,
    FOLD_AT,
    LEDGER_TAG,
    MAX_SEQ,
    TS_PATTERN,
    Chain,
    UtcClock,
    WireLine,
    entry_hash,
    session_genesis,
    utc_timestamp,
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


def test_queued_entries_fold_to_the_same_root() -> None:
    """``add`` queues and folds in batches; roots and copies taken at any point, before or
    after an automatic fold, agree with the RFC's definition."""
    n = 2 * FOLD_AT + 3
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    acc = MerkleAccumulator()
    for i, leaf in enumerate(leaves, start=1):
        acc.add(leaf)
        if i in (1, 5, FOLD_AT - 1, FOLD_AT, FOLD_AT + 1, n):
            snapshot = acc.copy()
            assert snapshot.root() == acc.root() == _reference(leaves[:i])
            assert snapshot.size == acc.size == i
    # A copy goes its own way.
    extra = hashlib.sha256(b"extra").digest()
    snapshot.add(extra)
    assert snapshot.root() == _reference([*leaves, extra]) != acc.root()


def test_queued_entries_are_copied_into_one_buffer_not_kept_as_objects() -> None:
    """The daemon's ledger queues one entry per sealed session until it folds: kept as the
    caller's objects, a burst's worth of them stays spread over the allocator's arenas and
    holds them mapped (docs/daemon.md). The accumulator keeps no reference to an entry."""
    import sys

    acc = MerkleAccumulator()
    entry = hashlib.sha256(b"sealed session").digest()
    references = sys.getrefcount(entry)
    acc.add(entry)
    assert sys.getrefcount(entry) == references
    assert acc.root() == _reference([entry])
    with pytest.raises(ValueError, match="32-byte"):
        acc.add(b"short")


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


def _encoded_line(appended_event: bytes, digest: bytes, prev: bytes, seq: int, ts: str) -> bytes:
    """The line as the encoder spells a WireLine: what ``Chain.append`` must produce."""
    wire = WireLine(event=msgspec.Raw(appended_event), hash=digest.hex(), prev=prev.hex(),
                    seq=seq, ts=ts)
    return msgspec.json.Encoder(order="sorted").encode(wire) + b"\n"


def test_chain_lines_are_the_encoders_bytes_for_every_kind() -> None:
    chain = Chain.for_session("s1")
    for event in session_events("s1"):
        prev = chain.head
        appended = chain.append(event, "2025-06-01T12:00:00.000000Z")
        body = msgspec.json.encode(event, order="sorted")
        assert appended.line == _encoded_line(body, appended.hash, prev, appended.seq,
                                              appended.ts)
        assert (appended.prev_hex, appended.hash_hex) == (prev.hex(), appended.hash.hex())


@settings(max_examples=200, deadline=None)
@given(ts=st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40),
       seq=st.integers(min_value=0, max_value=MAX_SEQ - 1))
def test_chain_lines_match_the_encoder_for_any_ts_and_seq(ts: str, seq: int) -> None:
    """Even a clock that returns something odd (quotes, backslashes, control characters) gets
    the encoder's escaping, so the line is the one verification re-encodes."""
    chain = Chain.for_session("s1")
    chain.seq = seq
    event = session_events("s1")[3]
    appended = chain.append(event, ts)
    assert appended.line == _encoded_line(msgspec.json.encode(event, order="sorted"),
                                          appended.hash, session_genesis("s1"), seq + 1, ts)


@pytest.mark.parametrize("when", [
    dt.datetime(2025, 6, 1, 12, 0, 0, 0, tzinfo=dt.UTC),
    dt.datetime(2025, 6, 1, 12, 0, 0, 999_999, tzinfo=dt.UTC),
    dt.datetime(2024, 2, 29, 23, 59, 59, 123_456, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
    dt.datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
])
def test_timestamps_are_utc_microseconds(monkeypatch: pytest.MonkeyPatch,
                                         when: dt.datetime) -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ns = (when - epoch) // dt.timedelta(microseconds=1) * 1000 + 789  # below a microsecond
    monkeypatch.setattr(time, "time_ns", lambda: ns)
    expected = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert utc_timestamp() == expected
    clock = UtcClock()
    assert clock() == expected
    assert clock() == expected  # from the cached second
    assert re.fullmatch(TS_PATTERN, expected)


def test_the_cached_clock_moves_on_with_the_second(monkeypatch: pytest.MonkeyPatch) -> None:
    base = 1_780_000_000 * 10**9  # a whole second
    now = [base + 999_999_000]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    clock = UtcClock()
    first = clock()
    now[0] = base + 1_000_000_000
    second = clock()
    assert first.endswith(":40.999999Z") and second.endswith(":41.000000Z")
    assert first[:19] != second[:19]
    assert second == utc_timestamp()
