"""``nonoctl ps`` shows each tool session right under the session that ran it."""

from __future__ import annotations

import datetime as dt
import io

from nonoctl._output import Output
from nonod import protocol as p


def _info(session: str, parent: str | None = None) -> p.SessionInfo:
    return p.SessionInfo(id=session, name=session, state="running",
                         started_at=dt.datetime.now(dt.UTC), parent=parent)


def test_tool_sessions_are_indented_under_their_parent() -> None:
    out = io.StringIO()
    Output(stdout=out).sessions([_info("agent1"), _info("other"), _info("tool1", "agent1"),
                                 _info("orphan", "gone")])
    ids = [line.split("  ")[0] if not line.startswith(" ") else line.strip().split()[1]
           for line in out.getvalue().splitlines()[1:]]
    assert ids == ["agent1", "tool1", "other", "orphan"]
    assert "  └ tool1" in out.getvalue()


def test_inspect_names_the_parent() -> None:
    out = io.StringIO()
    detail = p.SessionDetail(id="tool1", name="gh-1", state="exited", uid=0, gid=0, cwd="/",
                             started_at=dt.datetime.now(dt.UTC), parent="agent1")
    Output(stdout=out).session(detail)
    assert "agent1 (runs a tool for it)" in out.getvalue()
