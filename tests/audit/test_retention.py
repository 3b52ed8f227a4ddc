"""Listing and pruning: by age and count, never an unsealed or kept session."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from nonod.audit import AuditError, list_sessions, prune_sessions
from nonod.audit._writer import AuditWriter

from ._support import fixed_clock, session_events


async def _session(state: Path, sid: str, minute: int, *, seal: bool = True) -> None:
    writer = await AuditWriter.create(state, sid, clock=fixed_clock(minute * 60))
    for event in session_events(sid)[:3]:
        writer.append(event)
    if seal:
        await writer.seal()
    else:
        await writer.aclose()


NOW = dt.datetime(2025, 6, 1, 13, 0, tzinfo=dt.UTC)


async def _state(state_dir: Path) -> Path:
    for i in range(5):
        await _session(state_dir, f"s{i}", minute=i * 10)  # sealed at 12:00 .. 12:40
    await _session(state_dir, "live", minute=1, seal=False)
    return state_dir


async def test_list_sessions(state_dir: Path) -> None:
    await _state(state_dir)
    sessions = list_sessions(state_dir)
    assert [s.session for s in sessions] == ["s0", "live", "s1", "s2", "s3", "s4"]
    live = sessions[1]
    assert not live.sealed and live.count is None and live.ended is None
    assert sessions[0].sealed and sessions[0].count == 3
    assert sessions[0].started == "2025-06-01T12:00:00.000000Z"
    assert list_sessions(state_dir / "nowhere") == []


async def test_prune_by_count_keeps_the_newest(state_dir: Path) -> None:
    await _state(state_dir)
    gone = prune_sessions(state_dir, max_count=2, now=NOW)
    assert sorted(s.session for s in gone) == ["s0", "s1", "s2"]
    assert sorted(s.session for s in list_sessions(state_dir)) == ["live", "s3", "s4"]
    assert not (state_dir / "sessions" / "s0").exists()


async def test_prune_by_age(state_dir: Path) -> None:
    await _state(state_dir)
    plan = prune_sessions(state_dir, max_age=dt.timedelta(minutes=35), now=NOW, dry_run=True)
    assert sorted(s.session for s in plan) == ["s0", "s1", "s2"]
    assert len(list_sessions(state_dir)) == 6  # dry run removed nothing
    gone = prune_sessions(state_dir, max_age=dt.timedelta(minutes=35), now=NOW,
                          keep={"s1"})
    assert sorted(s.session for s in gone) == ["s0", "s2"]


async def test_prune_never_touches_unsealed_sessions(state_dir: Path) -> None:
    await _state(state_dir)
    prune_sessions(state_dir, max_count=0, max_age=dt.timedelta(0), now=NOW)
    assert [s.session for s in list_sessions(state_dir)] == ["live"]
    assert prune_sessions(state_dir, now=NOW) == []
    with pytest.raises(AuditError, match="max_count"):
        prune_sessions(state_dir, max_count=-1)
