"""Retention and the exporter: a session no sink has yet stays on disk; once every sink has
it, it may go, and the cursors forget it."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from nonod.audit import prune_sessions
from nonod.shipping import Exporter, LaneSettings
from nonod.shipping._otlp import OtlpSink

from ._export_support import HttpReceiver, free_port, wait_until
from ._support import write_session

FAST = LaneSettings(retry_min=0.01, retry_max=0.05, poll_interval=0.05, linger=0)


async def test_unshipped_sessions_are_kept_then_pruned_and_forgotten(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for session in ("hhhh0001", "hhhh0002"):
        await write_session(state, session=session)
    collector = HttpReceiver(port=free_port(), status=503)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(collector.serve, None)
        exporter = Exporter(state, [(OtlpSink("otel", f"http://127.0.0.1:{port}/v1/logs"),
                                     FAST)])
        await nursery.start(exporter.run)
        await wait_until(lambda: exporter.statistics()["otel"].failures >= 1, what="a refusal")
        # What daemon retention does: keep what some sink still needs.
        assert prune_sessions(state, max_count=0, keep=exporter.undelivered()) == []
        assert exporter.undelivered() == {"hhhh0001", "hhhh0002"}
        collector.status = 200
        await wait_until(lambda: not exporter.undelivered(), what="delivery")
        removed = prune_sessions(state, max_count=0, keep=exporter.undelivered())
        assert sorted(s.session for s in removed) == ["hhhh0001", "hhhh0002"]
        cursor = state / "export" / "otel.json"
        exporter.wake()
        await wait_until(lambda: json.loads(cursor.read_bytes())["sessions"] == {},
                         what="the cursor forgetting pruned sessions")
        nursery.cancel_scope.cancel()
