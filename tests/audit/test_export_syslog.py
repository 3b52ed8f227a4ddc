"""The exporter's syslog sink against a real rsyslogd: RFC 5424 over TCP, in order, once."""

from __future__ import annotations

import ssl
from pathlib import Path

import trio
import trustme

from nonod.audit import Network, SessionEnded, verify_session_file
from nonod.audit._writer import AuditWriter
from nonod.shipping import BacklogChanged, Exporter, LaneSettings, SyslogSink

from ._export_support import audit_lines, free_port, parse_syslog, rsyslogd, wait_until
from ._support import fixed_clock, write_session

FAST = LaneSettings(batch=4, retry_min=0.01, retry_max=0.05, poll_interval=0.05, linger=0)


def _sink(port: int) -> SyslogSink:
    return SyslogSink("siem", "127.0.0.1", port, hostname="host-a", timeout=5)


def _rebuild(tmp: Path, session: str, messages: list[bytes]) -> Path:
    """The session file a receiver can rebuild from the messages alone."""
    path = tmp / "rebuilt" / session / "audit.ndjson"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(m + b"\n" for m in messages))
    return path


async def test_every_record_arrives_once_in_order_as_rfc5424(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = await write_session(state, session="aaaa0001")
    second = await write_session(state, session="aaaa0002")
    live = await AuditWriter.create(state, "aaaa0003", clock=fixed_clock())
    live.append(Network(mode="connect", decision="deny", host="evil.com", port=443,
                        reason="not allowed"))
    await live.sync()
    with rsyslogd(tmp_path) as rs:
        exporter = Exporter(state, [(_sink(rs.port), FAST)])
        async with trio.open_nursery() as nursery:
            await nursery.start(exporter.run)
            expected = len(audit_lines(first)) + len(audit_lines(second)) + 1
            await wait_until(lambda: len(rs.lines()) == expected, what="the first records")
            # A record written later is shipped too (the exporter looks again).
            live.append(SessionEnded(reason="exited", exit_code=0, duration_ms=3.0))
            await live.seal()
            expected += 2
            await wait_until(lambda: len(rs.lines()) == expected, what="the live records")
            nursery.cancel_scope.cancel()
    received: dict[str, list[bytes]] = {}
    for line in rs.lines():
        fields = parse_syslog(line)
        assert fields["app"] == b"nonod" and fields["host"] == b"host-a"
        session, seq = fields["id"].decode().split(":")
        assert fields["session"].decode() == session and fields["seq"].decode() == seq
        received.setdefault(session, []).append(fields["msg"])
        # PRI: facility 13 (log audit); severity 4 for a refusal, 6 otherwise.
        kind = fields["msgid"].decode()
        notable = b'"decision":"deny"' in fields["msg"] or kind == "fs_denied"
        assert int(fields["pri"]) == 13 * 8 + (4 if notable else 6), (kind, fields["pri"])
    for session in ("aaaa0001", "aaaa0002", "aaaa0003"):
        stored = audit_lines(state / "sessions" / session / "audit.ndjson")
        # Byte for byte, each once, in order; the receiver's copy verifies on its own.
        assert received[session] == stored
        result = verify_session_file(_rebuild(tmp_path, session, received[session]))
        assert result.sealed


async def _deliver_all(state: Path, port: int, session: str) -> None:
    """One exporter, from the cursor file alone, until it has delivered ``session``."""
    exporter = Exporter(state, [(_sink(port), FAST)])
    async with trio.open_nursery() as nursery:
        await nursery.start(exporter.run)
        await wait_until(lambda: not exporter.undelivered([session]), what="delivery")
        nursery.cancel_scope.cancel()


async def test_restart_resumes_after_the_last_acknowledged_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    await write_session(state, session="bbbb0001")
    with rsyslogd(tmp_path) as rs:
        await _deliver_all(state, rs.port, "bbbb0001")
        await _deliver_all(state, rs.port, "bbbb0001")  # a restart sends nothing again
        await write_session(state, session="bbbb0002")
        await _deliver_all(state, rs.port, "bbbb0002")
        total = sum(len(audit_lines(state / "sessions" / s / "audit.ndjson"))
                    for s in ("bbbb0001", "bbbb0002"))
        await wait_until(lambda: len(rs.lines()) >= total, what="rsyslog's file")
    ids = [parse_syslog(line)["id"] for line in rs.lines()]
    assert len(ids) == len(set(ids)) == total


async def test_a_sink_that_is_down_builds_a_backlog_then_gets_everything(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = await write_session(state, session="cccc0001")
    port = free_port()  # nothing listens there yet
    changes: list[BacklogChanged] = []
    settings = LaneSettings(batch=4, retry_min=0.01, retry_max=0.05, poll_interval=0.05, linger=0,
                            max_backlog_bytes=100)
    exporter = Exporter(state, [(_sink(port), settings)], on_backlog=changes.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(exporter.run)
        await wait_until(lambda: bool(changes), what="the backlog event")
        stats = exporter.statistics()["siem"]
        assert changes == [BacklogChanged(sink="siem", full=True,
                                          pending_bytes=path.stat().st_size,
                                          pending_sessions=1, limit=100)]
        assert stats.failures >= 1 and stats.backlog_full and stats.delivered_records == 0
        assert "cccc0001" in exporter.undelivered(["cccc0001"])
        with rsyslogd(tmp_path, port=port) as rs:
            await wait_until(lambda: len(rs.lines()) == len(audit_lines(path)),
                             what="delivery after the sink came up")
            await wait_until(lambda: len(changes) == 2, what="the backlog clearing")
        nursery.cancel_scope.cancel()
    assert changes[1].full is False and changes[1].pending_bytes == 0
    assert [parse_syslog(line)["msg"] for line in rs.lines()] == audit_lines(path)


async def test_syslog_over_tls(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = await write_session(state, session="gggg0001")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with rsyslogd(tmp_path, tls=(ca_file, cert_file, key_file)) as rs:
        sink = SyslogSink("siem", "127.0.0.1", rs.port, ssl_context=client, timeout=5)
        exporter = Exporter(state, [(sink, FAST)])
        async with trio.open_nursery() as nursery:
            await nursery.start(exporter.run)
            await wait_until(lambda: not exporter.undelivered(["gggg0001"]), what="delivery")
            nursery.cancel_scope.cancel()
        await wait_until(lambda: len(rs.lines()) == len(audit_lines(path)), what="the file")
    assert [parse_syslog(line)["msg"] for line in rs.lines()] == audit_lines(path)
    assert exporter.statistics()["siem"].failures == 0


async def test_syslog_tls_refuses_an_untrusted_receiver(tmp_path: Path) -> None:
    state = tmp_path / "state"
    await write_session(state, session="gggg0002")
    ca, stranger = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = tuple(tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(files[0]))
    cert.cert_chain_pems[0].write_to_path(str(files[1]))
    cert.private_key_pem.write_to_path(str(files[2]))
    client = ssl.create_default_context()
    stranger.configure_trust(client)
    with rsyslogd(tmp_path, tls=files) as rs:  # type: ignore[arg-type]
        sink = SyslogSink("siem", "127.0.0.1", rs.port, ssl_context=client, timeout=5)
        exporter = Exporter(state, [(sink, FAST)])
        async with trio.open_nursery() as nursery:
            await nursery.start(exporter.run)
            await wait_until(lambda: exporter.statistics()["siem"].failures >= 2,
                             what="refused handshakes")
            nursery.cancel_scope.cancel()
    stats = exporter.statistics()["siem"]
    assert stats.delivered_records == 0 and "CERTIFICATE_VERIFY_FAILED" in str(stats.last_error)
    assert rs.lines() == []
