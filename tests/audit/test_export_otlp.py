"""The OTLP/HTTP sink, decoded by the official opentelemetry-proto messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from nonod.audit import verify_session_file
from nonod.shipping import Exporter, LaneSettings
from nonod.shipping._otlp import CONTENT_TYPE, OtlpSink, unix_nanos

from ._export_support import HttpReceiver, audit_lines, wait_until
from ._support import write_session

logs_service = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2")

FAST = LaneSettings(batch=3, retry_min=0.01, retry_max=0.05, poll_interval=0.05, linger=0)


def _attributes(kvs: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in kvs:  # type: ignore[attr-defined]
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which)
    return out


async def test_records_arrive_as_otlp_log_records_in_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = await write_session(state, session="ffff0001")
    collector = HttpReceiver(status=503)  # refuses at first: the exporter retries
    async with trio.open_nursery() as nursery:
        port = await nursery.start(collector.serve, None)
        sink = OtlpSink("otel", f"http://127.0.0.1:{port}/v1/logs", hostname="host-a")
        exporter = Exporter(state, [(sink, FAST)])
        await nursery.start(exporter.run)
        await wait_until(lambda: exporter.statistics()["otel"].failures >= 2,
                         what="refused batches")
        assert collector.requests == []
        collector.status = 200
        await wait_until(lambda: not exporter.undelivered(["ffff0001"]), what="delivery")
        nursery.cancel_scope.cancel()
    assert collector.requests is not None
    bodies = []
    for request in collector.requests:
        assert request.target == "/v1/logs"
        assert request.headers["content-type"] == CONTENT_TYPE
        message = logs_service.ExportLogsServiceRequest.FromString(request.body)
        (resource_logs,) = message.resource_logs
        assert _attributes(resource_logs.resource.attributes) == {
            "service.name": "nonod", "host.name": "host-a"}
        (scope_logs,) = resource_logs.scope_logs
        assert scope_logs.scope.name == "nono.audit"
        assert len(scope_logs.log_records) <= 3
        for log in scope_logs.log_records:
            attrs = _attributes(log.attributes)
            line = log.body.string_value.encode()
            bodies.append(line)
            assert attrs["nono.record.id"] == f"ffff0001:{attrs['nono.seq']}"
            assert attrs["nono.session"] == "ffff0001"
            kind = line.split(b'"type":"')[1].split(b'"')[0].decode()
            assert log.event_name == f"nono.audit.{kind}"
            notable = b'"decision":"deny"' in line or kind == "fs_denied"
            assert log.severity_number == (13 if notable else 9)
            ts = line.split(b'"ts":"')[1].split(b'"')[0].decode()
            assert log.time_unix_nano == unix_nanos(ts) > 0
    assert bodies == audit_lines(path)  # in order, each once, byte for byte
    rebuilt = tmp_path / "rebuilt" / "ffff0001" / "audit.ndjson"
    rebuilt.parent.mkdir(parents=True)
    rebuilt.write_bytes(b"".join(b + b"\n" for b in bodies))
    assert verify_session_file(rebuilt).sealed


def test_timestamps_convert_to_unix_nanoseconds() -> None:
    assert unix_nanos("1970-01-01T00:00:01.000002Z") == 1_000_002_000
    assert unix_nanos("2025-06-01T12:00:00.005000Z") == 1_748_779_200_005_000_000


async def test_records_whose_cursor_was_not_saved_are_sent_again(tmp_path: Path) -> None:
    """At least once: the receiver had the records but the cursor file was never replaced
    (here a directory is in its way), so the next exporter (a restarted daemon) sends them
    again; deduplicating by id gives the file, in order."""
    state = tmp_path / "state"
    path = await write_session(state, session="ffff0002")
    collector = HttpReceiver()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(collector.serve, None)
        sink = OtlpSink("otel", f"http://127.0.0.1:{port}/v1/logs")
        first_run = Exporter(state, [(sink, FAST)])  # reads its (absent) cursor
        blocker = state / "export" / "otel.json"
        (blocker / "in-the-way").mkdir(parents=True)  # os.replace onto it fails
        async with trio.open_nursery() as lane:
            await lane.start(first_run.run)
            await wait_until(lambda: first_run.statistics()["otel"].failures >= 2,
                             what="failed cursor writes")
            lane.cancel_scope.cancel()
        assert "cannot write the export cursor" in str(
            first_run.statistics()["otel"].last_error)
        assert collector.requests  # the receiver has some records already
        (blocker / "in-the-way").rmdir()
        blocker.rmdir()
        second_run = Exporter(state, [(sink, FAST)])
        await nursery.start(second_run.run)
        await wait_until(lambda: not second_run.undelivered(["ffff0002"]), what="delivery")
        nursery.cancel_scope.cancel()
    assert collector.requests is not None
    ids: list[str] = []
    first: dict[str, bytes] = {}
    for request in collector.requests:
        message = logs_service.ExportLogsServiceRequest.FromString(request.body)
        for log in message.resource_logs[0].scope_logs[0].log_records:
            record_id = _attributes(log.attributes)["nono.record.id"]
            assert isinstance(record_id, str)
            ids.append(record_id)
            first.setdefault(record_id, log.body.string_value.encode())
    assert len(ids) > len(first)  # copies arrived...
    assert list(first.values()) == audit_lines(path)  # ...and dedupe leaves the file, in order


async def test_a_file_that_does_not_verify_is_skipped_and_the_others_ship(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    bad = await write_session(state, session="ffff0003")
    good = await write_session(state, session="ffff0004")
    lines = audit_lines(bad)
    lines[2] = lines[2].replace(b"GEMINI", b"GEMINX")  # edited on the host after the fact
    bad.write_bytes(b"".join(line + b"\n" for line in lines))
    collector = HttpReceiver()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(collector.serve, None)
        exporter = Exporter(state, [(OtlpSink("otel", f"http://127.0.0.1:{port}/v1/logs"),
                                     FAST)])
        await nursery.start(exporter.run)
        await wait_until(lambda: "ffff0004" not in exporter.undelivered(), what="delivery")
        nursery.cancel_scope.cancel()
    assert exporter.undelivered() == {"ffff0003"}
    assert "does not verify" in str(exporter.statistics()["otel"].last_error)
    assert collector.requests is not None
    shipped = [log.body.string_value.encode()
               for request in collector.requests
               for log in logs_service.ExportLogsServiceRequest.FromString(
                   request.body).resource_logs[0].scope_logs[0].log_records]
    # The good file entirely; of the edited one, at most the verified lines before the edit.
    assert [line for line in shipped if line in audit_lines(good)] == audit_lines(good)
    from_bad = [line for line in shipped if line not in audit_lines(good)]
    assert from_bad == lines[:len(from_bad)] and len(from_bad) <= 2
