"""Verification: a good file passes; every kind of tampering fails and names the first bad line."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonod.audit import (
    AuditIncomplete,
    AuditLedgerError,
    AuditNotFound,
    AuditSignatureError,
    AuditVerifyError,
    EcdsaP256Checker,
    EcdsaP256Signer,
    Network,
    Record,
    Seal,
    read_records,
    verify_ledger_file,
    verify_session_file,
)
from nonod.audit._chain import Chain
from nonod.audit._writer import Ledger

from ._support import SESSION, fixed_clock, session_events, write_session

LINES = len(session_events()) + 1  # the events and the seal


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a sealed session file (written once, copied by each test)."""
    state = tmp_path_factory.mktemp("good") / "state"
    path = trio.run(write_session, state)
    return path.read_bytes()


def _place(tmp_path: Path, data: bytes, session: str = SESSION) -> Path:
    path = tmp_path / "sessions" / session / "audit.ndjson"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _flip(data: bytes, offset: int, mask: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1:]


def test_a_good_session_verifies(tmp_path: Path, good_file: bytes) -> None:
    path = _place(tmp_path, good_file)
    result = verify_session_file(path)
    assert result.sealed and result.count == LINES - 1
    assert result.session == SESSION
    assert result.signature == "absent" and result.ledger_line is None
    assert result.file_sha256 == hashlib.sha256(good_file).hexdigest()
    records = read_records(path)
    assert [r.seq for r in records] == list(range(1, LINES + 1))
    assert isinstance(records[-1].event, Seal)
    assert result.merkle_root == records[-1].event.merkle_root
    assert result.head == records[-2].hash


@pytest.mark.parametrize("line", range(1, LINES + 1))
@pytest.mark.parametrize("where", ["first", "second", "ts", "middle", "hash", "last", "newline"])
def test_editing_a_byte_names_the_line(tmp_path: Path, good_file: bytes, line: int,
                                       where: str) -> None:
    lines = _lines(good_file)
    start = sum(len(raw) + 1 for raw in lines[: line - 1])
    raw = lines[line - 1]
    offset = {
        "first": 0, "second": 1, "middle": len(raw) // 2, "last": len(raw) - 1,
        "newline": len(raw), "ts": raw.index(b'"ts":"') + 12,
        "hash": raw.index(b'"hash":"') + 20,
    }[where]
    path = _place(tmp_path, _flip(good_file, start + offset, 0x01))
    with pytest.raises(AuditVerifyError) as info:
        verify_session_file(path)
    assert info.value.line == line
    if where != "newline" or line != LINES:
        assert not isinstance(info.value, AuditIncomplete), "tampering is not 'incomplete'"


def test_every_byte_of_the_file_is_covered(tmp_path: Path, good_file: bytes) -> None:
    line_of = []
    for number, raw in enumerate(_lines(good_file), start=1):
        line_of.extend([number] * (len(raw) + 1))
    path = _place(tmp_path, good_file)
    for offset in range(len(good_file)):
        for mask in (0x01, 0x20, 0x80):
            path.write_bytes(_flip(good_file, offset, mask))
            with pytest.raises(AuditVerifyError) as info:
                verify_session_file(path)
            assert info.value.line == line_of[offset], (offset, mask, info.value.reason)


@pytest.mark.parametrize("line", range(1, LINES + 1))
def test_deleting_a_line_names_it(tmp_path: Path, good_file: bytes, line: int) -> None:
    lines = _lines(good_file)
    del lines[line - 1]
    path = _place(tmp_path, _join(lines))
    reason = "incomplete: no final record" if line == LINES else "deleted, reordered"
    with pytest.raises(AuditVerifyError, match=reason) as info:
        verify_session_file(path)
    assert info.value.line == line
    assert isinstance(info.value, AuditIncomplete) == (line == LINES)


@pytest.mark.parametrize("first", range(1, LINES))
def test_swapping_two_lines_names_the_first(tmp_path: Path, good_file: bytes,
                                            first: int) -> None:
    lines = _lines(good_file)
    lines[first - 1], lines[first] = lines[first], lines[first - 1]
    path = _place(tmp_path, _join(lines))
    with pytest.raises(AuditVerifyError, match="deleted, reordered") as info:
        verify_session_file(path)
    assert info.value.line == first


def test_swapping_distant_lines(tmp_path: Path, good_file: bytes) -> None:
    lines = _lines(good_file)
    lines[2], lines[6] = lines[6], lines[2]
    with pytest.raises(AuditVerifyError) as info:
        verify_session_file(_place(tmp_path, _join(lines)))
    assert info.value.line == 3


@pytest.mark.parametrize("keep", range(0, LINES))
def test_truncation_at_a_line_boundary_is_incomplete(tmp_path: Path, good_file: bytes,
                                                     keep: int) -> None:
    path = _place(tmp_path, _join(_lines(good_file)[:keep]))
    with pytest.raises(AuditIncomplete, match="incomplete: no final record") as info:
        verify_session_file(path)
    assert info.value.line == keep + 1
    assert info.value.code == "audit.incomplete"
    result = verify_session_file(path, allow_incomplete=True)
    assert not result.sealed and result.count == keep and result.merkle_root is None


@pytest.mark.parametrize("cut", [1, 37, 200])
def test_truncation_inside_a_line_is_incomplete(tmp_path: Path, good_file: bytes,
                                                cut: int) -> None:
    lines = _lines(good_file)
    data = _join(lines[:4]) + lines[4][:cut]
    path = _place(tmp_path, data)
    with pytest.raises(AuditIncomplete, match="cut short") as info:
        verify_session_file(path)
    assert info.value.line == 5
    result = verify_session_file(path, allow_incomplete=True)
    assert result.count == 4 and result.torn_bytes == cut


def test_lines_after_the_seal_are_tampering(tmp_path: Path, good_file: bytes) -> None:
    lines = _lines(good_file)
    path = _place(tmp_path, _join([*lines, lines[3]]))
    with pytest.raises(AuditVerifyError, match="after the final record") as info:
        verify_session_file(path, allow_incomplete=True)
    assert info.value.line == LINES + 1


def test_a_file_moved_to_another_session_fails_on_line_one(tmp_path: Path,
                                                           good_file: bytes) -> None:
    path = _place(tmp_path, good_file, session="00000000")
    with pytest.raises(AuditVerifyError, match="another session") as info:
        verify_session_file(path)
    assert info.value.line == 1
    assert verify_session_file(path, session=SESSION).sealed


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AuditNotFound):
        verify_session_file(tmp_path / "sessions" / SESSION / "audit.ndjson")


def _rewrite_whole_chain(good_file: bytes) -> bytes:
    """What an attacker with write access can do: change an event and rehash everything."""
    decoder = msgspec.json.Decoder(Record)
    chain = Chain.for_session(SESSION)
    clock = fixed_clock()
    out = b""
    for raw in _lines(good_file)[:-1]:
        event = decoder.decode(raw).event
        assert not isinstance(event, Seal)
        if isinstance(event, Network) and event.decision == "deny":
            event = Network(mode="connect", decision="allow", host="evil.com", port=443)
        out += chain.append(event, clock()).line
    seal = Seal(session=SESSION, count=chain.seq, head=chain.head.hex(),
                merkle_root=chain.merkle.root().hex())
    return out + chain.append(seal, clock()).line


async def test_ledger_and_signature_catch_a_rehashed_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    signer = EcdsaP256Signer(key)
    checker = EcdsaP256Checker(key.public_key())
    state = tmp_path / "state"
    ledger = await Ledger.open(state)
    path = await write_session(state, ledger=ledger, signer=signer)
    await ledger.aclose()
    ledger_path = state / "ledger.ndjson"

    result = verify_session_file(path, ledger=ledger_path, checker=checker)
    assert result.signature == "verified" and result.ledger_line == 1
    assert result.signer == signer.key_id
    assert verify_session_file(path).signature == "unchecked"

    forged = _rewrite_whole_chain(path.read_bytes())
    path.write_bytes(forged)
    assert verify_session_file(path).sealed  # the chain alone cannot tell
    with pytest.raises(AuditLedgerError, match="does not match its file"):
        verify_session_file(path, ledger=ledger_path)
    with pytest.raises(AuditSignatureError, match="for other content"):
        verify_session_file(path, checker=checker)


async def test_signature_failures(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    state = tmp_path / "state"
    path = await write_session(state, signer=EcdsaP256Signer(key))
    sidecar = path.with_name("audit.ndjson.bundle")
    assert sidecar.stat().st_mode & 0o777 == 0o600

    with pytest.raises(AuditSignatureError, match="another key"):
        verify_session_file(path, checker=EcdsaP256Checker(other.public_key()))

    bundle = msgspec.json.decode(sidecar.read_bytes())
    sig = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    sidecar.write_bytes(msgspec.json.encode(bundle))
    with pytest.raises(AuditSignatureError, match="does not verify"):
        verify_session_file(path, checker=EcdsaP256Checker(key.public_key()))

    sidecar.unlink()
    with pytest.raises(AuditSignatureError, match="no signature"):
        verify_session_file(path, checker=EcdsaP256Checker(key.public_key()))


async def test_ledger_inclusion_and_ledger_tampering(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ledger = await Ledger.open(state)
    paths = [await write_session(state, session=f"s{i}", ledger=ledger) for i in range(3)]
    unlisted = await write_session(state, session="s9")
    await ledger.aclose()
    ledger_path = state / "ledger.ndjson"
    assert [verify_session_file(p, ledger=ledger_path).ledger_line for p in paths] == [1, 2, 3]
    with pytest.raises(AuditLedgerError, match="not in the ledger"):
        verify_session_file(unlisted, ledger=ledger_path)
    view = verify_ledger_file(ledger_path)
    assert view.count == 3 and set(view.entries) == {"s0", "s1", "s2"}

    good = ledger_path.read_bytes()
    lines = _lines(good)
    ledger_path.write_bytes(_join([lines[0], lines[2], lines[1]]))
    with pytest.raises(AuditLedgerError) as info:
        verify_session_file(paths[0], ledger=ledger_path)
    assert info.value.line == 2 and info.value.path == str(ledger_path)
    ledger_path.write_bytes(_flip(good, len(lines[0]) + 40, 0x01))
    with pytest.raises(AuditLedgerError) as info:
        verify_ledger_file(ledger_path)
    assert info.value.line == 2


# ------------------------------------------------------------------------------ hypothesis


@st.composite
def _garbage(draw: st.DrawFn) -> bytes:
    return draw(st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(["event", "hash", "prev", "seq", "ts", "type"])
                              | st.text(max_size=8), inner, max_size=5),
            max_leaves=12,
        ).map(msgspec.json.encode),
    ))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=_garbage(), index=st.integers(min_value=0, max_value=LINES),
       replace=st.booleans(), allow_incomplete=st.booleans())
def test_random_garbage_only_raises_audit_verify_error(
    tmp_path: Path, good_file: bytes, garbage: bytes, index: int, replace: bool,
    allow_incomplete: bool,
) -> None:
    lines = _lines(good_file)
    if replace and index < len(lines):
        if garbage == lines[index]:
            return
        lines[index] = garbage
    else:
        lines.insert(index, garbage)
    path = _place(tmp_path, _join(lines))
    with pytest.raises(AuditVerifyError):
        verify_session_file(path, allow_incomplete=allow_incomplete)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000))
def test_random_files_only_raise_audit_verify_error(tmp_path: Path, data: bytes) -> None:
    path = _place(tmp_path, data)
    with contextlib.suppress(AuditVerifyError):
        verify_session_file(path, allow_incomplete=True)
    with pytest.raises(AuditVerifyError):
        verify_session_file(path)


def test_copies_of_a_good_file_stay_good(tmp_path: Path, good_file: bytes) -> None:
    path = _place(tmp_path, good_file)
    copy = tmp_path / "elsewhere" / "audit.ndjson"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert verify_session_file(copy, session=SESSION).sealed
