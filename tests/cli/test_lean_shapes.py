"""known2: the lean client (``nonoctl._lean``) read the fields of a reply it used and let the
others through, where the full client's decoder refuses the whole reply. Now each reply it
reads by hand is checked whole against the protocol's own type (``nonod._shapes``, the table
generated from ``nonod.protocol``), and one that does not fit goes to the full decoder."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import wsproto
import wsproto.events as ev

from nonoctl import _lean
from nonod import _shapes
from nonod import protocol as p

_TABLE = Path(_shapes.__file__).with_name("_reply_shapes.py")


def test_the_table_is_the_protocols_types() -> None:
    # After changing a reply's type: regenerate it (``nonod._shapes.generate``).
    assert _TABLE.read_text() == _shapes.generate()


def _detail() -> dict[str, object]:
    started = dt.datetime(2026, 12, 6, 9, tzinfo=dt.UTC)
    quiet = p.Enforcement(fully_enforced=True, summary="fully enforced",
                          layers=(p.Layer(name="landlock", state="applied"),))
    detail = p.SessionDetail(id="abcd", name="bot", state="running", pid=5, started_at=started,
                             uid=0, gid=0, cwd="/", enforcement=quiet, usage=p.Usage(pids=1))
    value: dict[str, object] = json.loads(p.encode(detail))
    return value


_VALUES = (None, "x", "", 1, -1, 1.5, True, [], ["x"], [1], {}, {"a": 1},
           "2026-12-06T09:00:00Z", "2026-12-06T09:00:00", "2026-12-06 09:00:00Z",
           "2026-13-06T09:00:00Z", "2026-12-06T09:00:00.1234567Z", "\ud800", "running",
           "2024-02-29T09:00:00+01:00", "2023-02-29T09:00:00Z", "2026-12-06T24:00:00Z",
           "2026-12-06T23:59:60Z", "0000-01-01T00:00:00Z", "2026-12-06T09:00:00+24:00")


def _mutants() -> Iterator[tuple[str, dict[str, object]]]:
    detail = _detail()
    for field in [*detail, "argv_shortened", "ended_at", "limits", "unknown"]:
        for value in _VALUES:
            yield field, {**detail, field: value}
        yield field, {k: v for k, v in detail.items() if k != field}
    for field in ("fully_enforced", "layers", "landlock_abi"):
        for value in _VALUES:
            enforcement = {**detail["enforcement"], field: value}  # type: ignore[dict-item]
            yield f"enforcement.{field}", {**detail, "enforcement": enforcement}


def test_what_fits_is_what_the_full_decoder_reads() -> None:
    """Never more lenient than msgspec: a reply that fits decodes. (Stricter is allowed:
    the full decoder then reads it.)"""
    fitted = refused = 0
    for _, session in _mutants():
        reply = {"type": "launched", "session": session}
        text = json.dumps(reply)
        if _shapes.fits(json.loads(text), "Launched"):
            fitted += 1
            p.decode_reply(text)  # raises if the lean client accepted what it refuses
        else:
            refused += 1
    assert fitted > 20 and refused > 200, (fitted, refused)
    assert _shapes.fits(json.loads(p.encode(p.Launched(session=msgspec.convert(
        _detail(), p.SessionDetail)))), "Launched")
    for exited in (p.Exited(session="s"), p.Exited(session="s", exit_code=3, reason="oom")):
        assert _shapes.fits(json.loads(p.encode(exited)), "Exited")
    assert not _shapes.fits({"type": "exited", "session": "s", "reason": "bogus"}, "Exited")
    assert not _shapes.fits({"type": "welcome", "protocol": 1, "daemon": "d", "pid": 1,
                             "uid": 0, "system": 1}, "Welcome")


class _Hostile:
    """A daemon on a real Unix socket that answers one attached launch with ``replies``
    (after its ``welcome``), whatever it was asked."""

    def __init__(self, path: Path, replies: list[dict[str, object] | str]) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.replies = replies
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
            texts: list[str] = []
            upgraded = False
            while len(texts) < 2:
                data = conn.recv(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, ev.Request) and not upgraded:
                        conn.sendall(ws.send(ev.AcceptConnection(subprotocol="nono.v1")))
                        upgraded = True
                    elif isinstance(event, ev.TextMessage):
                        texts.append(event.data)
            welcome = {"type": "welcome", "protocol": 1, "daemon": "0.1.0", "pid": 1, "uid": 0}
            for reply in [welcome, *self.replies]:
                try:
                    text = reply if isinstance(reply, str) else json.dumps(reply)
                    conn.sendall(ws.send(ev.TextMessage(data=text)))
                except OSError:  # the client hung up: it refused what came before
                    return
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NONO_SOCKET", str(tmp_path / "nonod.sock"))
    return tmp_path


@pytest.mark.parametrize(("field", "value"), [
    ("started_at", "yesterday"),
    ("usage", {"cpu_ns": "a lot"}),
    ("uid", "0"),
    ("limits", {"cpus": "all"}),
    ("argv", ["ok", 3]),
    ("reason", "bogus"),
])
def test_a_hostile_daemons_launched_reply_is_refused_whole(
        field: str, value: object, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = {**_detail(), field: value}
    server = _Hostile(in_tmp / "nonod.sock", [
        {"type": "launched", "session": session},
        {"type": "exited", "session": "abcd", "exit_code": 0}])
    try:
        status = _lean.run(["launch", "--", "true"])
    finally:
        server.close()
    # before: 0, the session "ran" on a reply the full client refuses
    assert status != 0
    assert "cannot decode a message from nonod" in capsys.readouterr().err


def test_a_hostile_daemons_exited_reply_is_refused_whole(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = _Hostile(in_tmp / "nonod.sock", [
        {"type": "launched", "session": _detail()},
        {"type": "exited", "session": "abcd", "exit_code": 0, "reason": ["not", "one"]}])
    try:
        status = _lean.run(["launch", "--", "true"])
    finally:
        server.close()
    assert status != 0  # before: 0
    assert "cannot decode a message from nonod" in capsys.readouterr().err


def test_a_hostile_daemons_session_list_is_left_to_the_full_path(in_tmp: Path) -> None:
    row = {"id": "abcd", "name": "bot", "state": "running", "pid": 5,
           "started_at": "2026-12-06T09:00:00Z", "usage": {"pids": "many"}}
    server = _Hostile(in_tmp / "nonod.sock", [{"type": "sessions", "sessions": [row]}])
    try:
        # before: 0 and a table; now declined: the full client asks again, and refuses it
        assert _lean.run(["ps"]) is None
    finally:
        server.close()


def test_a_hostile_daemons_key_given_twice_is_refused_whole(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """review28: the C scanner keeps a key's last value, msgspec checks each: an ``exited``
    whose ``exit_code`` came first as a string, then as 0, fitted (the lean client's dict held
    the 0) where the full decoder refuses it."""
    twice = '{"type": "exited", "session": "abcd", "exit_code": "x", "exit_code": 0}'
    with pytest.raises(msgspec.ValidationError):
        p.decode_reply(twice)
    server = _Hostile(in_tmp / "nonod.sock", [{"type": "launched", "session": _detail()}, twice])
    try:
        status = _lean.run(["launch", "--", "true"])
    finally:
        server.close()
    assert status != 0  # before: 0
    assert "cannot decode a message from nonod" in capsys.readouterr().err


@pytest.mark.parametrize("number", ["1e400", "-1.8e308", "1" + "0" * 309])
def test_a_float_out_of_a_doubles_range_does_not_fit(number: str) -> None:
    """review28: the scanner reads ``1e400`` as infinity and ``1`` followed by 309 zeros as
    an int, and both fitted a float field; msgspec refuses them (out of range)."""
    text = json.dumps({"type": "launched", "session": {**_detail(), "limits": {"cpus": 0}}})
    text = text.replace('"cpus": 0', f'"cpus": {number}')
    with pytest.raises(msgspec.ValidationError):
        p.decode_reply(text)
    reply = _lean._plain(text)
    assert reply is not None
    assert not _shapes.fits(reply, "Launched")
    for fine in ("1.7976931348623157e308", "123456789012345678901234567890", "0.5", "2"):
        text = text.replace(f'"cpus": {number}', f'"cpus": {fine}')
        p.decode_reply(text)
        assert _shapes.fits(_lean._plain(text), "Launched")
        number = fine
