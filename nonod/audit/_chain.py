"""The hash chain and Merkle tree behind every audit file, without any I/O.

A file is a sequence of lines ``{"event", "hash", "prev", "seq", "ts"}`` (keys sorted, no
whitespace: as one ``msgspec.json.Encoder(order="sorted")`` writes them). For line ``n``::

    body_n = the event's canonical bytes, exactly as they appear in the line
    hash_n = SHA-256( TAG || prev_n || u64be(seq_n) || u16be(len(ts_n)) || ts_n || body_n )
    prev_1 = SHA-256( "nono/audit/genesis/v1" 0x00 || scope || 0x00 || name )
    prev_n = hash_(n-1)

``TAG`` is ``"nono/audit/entry/v1" 0x00`` for session files and ``"nono/audit/ledger/v1"
0x00`` for the ledger, so a line of one can never pass for a line of the other; the genesis
binds a session file to its session id (scope ``session``) and the ledger to itself (scope
``ledger``). ``seq`` and ``ts`` are hashed too, so no byte of a line is outside the hash: the
event through its body, ``prev`` and ``hash`` through the chain, the rest through the
preimage. Verification also re-encodes each line and requires the same bytes, which rules
out equivalent spellings (whitespace, escapes, key order).

Merkle tree (RFC 6962, section 2.1), over the event hashes ``hash_1..hash_n`` of a session::

    MTH({})      = SHA-256("")
    MTH({h})     = SHA-256(0x00 || h)                      leaf
    MTH(D[0:n])  = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))  node, k = largest power of
                                                                 two smaller than n

:class:`MerkleAccumulator` computes it incrementally with O(log n) memory: a stack of the
roots of perfect subtrees, merged as they fill, folded from the right for the root.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Annotated, Final, NamedTuple, final

import msgspec

ENTRY_TAG: Final = b"nono/audit/entry/v1\x00"
LEDGER_TAG: Final = b"nono/audit/ledger/v1\x00"
GENESIS_TAG: Final = b"nono/audit/genesis/v1\x00"
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
HASH_SIZE: Final = 32  # SHA-256
_sha256: Final = hashlib.sha256

#: ``2025-06-01T12:00:00.123456Z``
TS_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$"
MAX_SEQ: Final = 2**63 - 1

_Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class WireLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One stored line as bytes on disk see it: the event kept as the exact bytes written."""

    event: msgspec.Raw
    hash: _Hex64
    prev: _Hex64
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
    ts: Annotated[str, msgspec.Meta(pattern=TS_PATTERN)]


def _utc_second(second: int) -> str:
    t = time.gmtime(second)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")


def utc_timestamp() -> str:
    """Now, as audit lines write it (UTC, microseconds, ``Z``)."""
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    return f"{_utc_second(second)}.{micros:06d}Z"


@final
class UtcClock:
    """:func:`utc_timestamp` for one writer, cheaper: the part down to the second is formatted
    once per second and reused, so a timestamp costs one clock read and one small format."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._prefix = _utc_second(second) + "."
            self._second = second
        return f"{self._prefix}{micros:06d}Z"


def genesis(scope: str, name: str) -> bytes:
    """The ``prev`` of a chain's first line: binds the chain to what it records."""
    return hashlib.sha256(GENESIS_TAG + scope.encode() + b"\x00" + name.encode()).digest()


def session_genesis(session: str) -> bytes:
    return genesis("session", session)


def ledger_genesis() -> bytes:
    return genesis("ledger", "ledger")


def entry_hash(tag: bytes, prev: bytes, seq: int, ts: str, body: bytes) -> bytes:
    """The hash of one line (see the module docstring)."""
    stamp = ts.encode("ascii")
    return _sha256(b"".join((tag, prev, seq.to_bytes(8, "big"), len(stamp).to_bytes(2, "big"),
                             stamp, body))).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


#: Entries :class:`MerkleAccumulator` queues before it folds them in without being asked.
FOLD_AT: Final = 1024


@final
class MerkleAccumulator:
    """The RFC 6962 tree hash of a growing list of entry hashes, in O(log n) memory.

    :meth:`add` only queues the entry; :meth:`fold` hashes the queue into the stack. The
    writer folds when it syncs, off the path of an append; :meth:`root` and :meth:`copy`
    fold first, and so does :meth:`add` once :data:`FOLD_AT` entries are queued.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (leaves under it, subtree root)
        # The queued entry hashes side by side in one buffer, not an object each: the
        # daemon's ledger queues one per sealed session, and a burst's worth of small
        # objects kept for hours holds the allocator's arenas (docs/daemon.md).
        self._queued = bytearray()
        self.size = 0

    def add(self, entry: bytes) -> None:
        if len(entry) != HASH_SIZE:
            raise ValueError(f"a Merkle entry is a {HASH_SIZE}-byte hash, not {len(entry)} bytes")
        queued = self._queued
        queued += entry
        self.size += 1
        if len(queued) >= FOLD_AT * HASH_SIZE:
            self.fold()

    def fold(self) -> None:
        stack = self._stack
        queued = memoryview(self._queued)
        for at in range(0, len(queued), HASH_SIZE):
            width, node = 1, _sha256(LEAF_PREFIX + queued[at:at + HASH_SIZE]).digest()
            while stack and stack[-1][0] == width:
                left = stack.pop()[1]
                width, node = width * 2, _sha256(NODE_PREFIX + left + node).digest()
            stack.append((width, node))
        queued.release()
        self._queued = bytearray()

    def root(self) -> bytes:
        self.fold()
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            acc = _node(left, acc)
        return acc

    def copy(self) -> MerkleAccumulator:
        self.fold()
        other = MerkleAccumulator()
        other._stack = list(self._stack)
        other.size = self.size
        return other


def merkle_root(entries: Iterable[bytes]) -> bytes:
    """The RFC 6962 tree hash over ``entries`` (32-byte entry hashes, in order)."""
    acc = MerkleAccumulator()
    for entry in entries:
        acc.add(entry)
    return acc.root()


class Appended(NamedTuple):
    """What :meth:`Chain.append` produced: the line to write (with its newline) and its parts
    (``prev_hex`` and ``hash_hex`` as the line spells them)."""

    seq: int
    ts: str
    prev: bytes
    hash: bytes
    line: bytes
    prev_hex: str
    hash_hex: str


# A line as ``Encoder(order="sorted").encode(WireLine(...))`` spells it, keys in sorted order
# and no whitespace: the event's bytes, the two hex digests, ``seq``, then ``ts`` (a JSON
# string encoded by the same encoder). Filling it in skips building a WireLine and encoding it
# again; tests check it against the encoder byte for byte.
_LINE: Final = b'{"event":%b,"hash":"%b","prev":"%b","seq":%d,"ts":%b}\n'


@final
class Chain:
    """The state of one chain: the next ``seq``, the head, the Merkle accumulator.

    Sans-IO: :meth:`append` turns an event into the exact bytes of its line and advances the
    state; writing them is the caller's business. One encoder is built per chain and reused;
    the event is encoded once, and those bytes are both hashed and written.
    """

    def __init__(self, tag: bytes, start: bytes, *, seq: int = 0, head: bytes | None = None,
                 merkle: MerkleAccumulator | None = None) -> None:
        self.tag = tag
        self.seq = seq
        self.head = start if head is None else head
        self.merkle = merkle if merkle is not None else MerkleAccumulator()
        self._encoder = msgspec.json.Encoder(order="sorted")

    @classmethod
    def for_session(cls, session: str) -> Chain:
        return cls(ENTRY_TAG, session_genesis(session))

    @classmethod
    def for_ledger(cls) -> Chain:
        return cls(LEDGER_TAG, ledger_genesis())

    def append(self, event: msgspec.Struct, ts: str) -> Appended:
        if self.seq >= MAX_SEQ:
            raise OverflowError("audit chain sequence exhausted")
        encode = self._encoder.encode
        try:
            body = encode(event)
        except UnicodeEncodeError:  # a text field holds a lone surrogate: see _printable
            body = encode(_printable(msgspec.to_builtins(event)))
        seq = self.seq + 1
        prev = self.head
        digest = entry_hash(self.tag, prev, seq, ts, body)
        prev_hex, hash_hex = prev.hex(), digest.hex()
        line = _LINE % (body, hash_hex.encode("ascii"), prev_hex.encode("ascii"), seq, encode(ts))
        self.seq = seq
        self.head = digest
        self.merkle.add(digest)
        return Appended(seq, ts, prev, digest, line, prev_hex, hash_hex)


def _printable(value: object) -> object:
    """``value`` (an event as builtins) with each character JSON cannot hold (a lone
    surrogate: bytes that were not UTF-8, kept by ``surrogateescape``) written as
    ``\\udcXX`` text: such an event is recorded, never refused (before, its write raised,
    and where that was the kernel's denial reader, the daemon ended)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {key: _printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value
