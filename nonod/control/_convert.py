"""Sessions as the protocol shows them: the one place where domain values become wire
messages (``nonod.sessions`` knows nothing of replies)."""

from __future__ import annotations

from .. import protocol as p
from ..sessions import LifecycleEvent, Session, SessionRecord


def session_info(record: SessionRecord, usage: p.Usage | None = None, *,
                 brief: bool = False) -> p.SessionInfo:
    """One line of ``ps`` (``usage``: the session's live figures, else the record's;
    ``brief``: neither usage nor enforcement, see ``protocol.ListSessions``, and written
    without its null fields, ``protocol.SessionRow``)."""
    r = record
    kind = p.SessionRow if brief else p.SessionInfo
    return kind(
        id=r.id, name=r.name, state=r.state, pid=r.pid, profile=r.profile, argv=r.argv,
        argv_shortened=r.argv_shortened, started_at=r.started_at, ended_at=r.ended_at,
        exit_code=r.exit_code, signal=r.signal, enforcement=None if brief else r.enforcement,
        usage=None if brief else usage or r.usage, parent=r.parent,
    )


def session_detail(session: Session, *, live_usage: bool = True) -> p.SessionDetail:
    """Everything ``inspect`` shows. ``live_usage=False``: the record's usage (None while
    the session runs) instead of its cgroup's figures, which take a dozen control file
    reads: the ``launched`` reply, whose session has only just started."""
    r = session.record
    return p.SessionDetail(
        id=r.id, name=r.name, state=r.state, pid=r.pid, profile=r.profile, argv=r.argv,
        argv_shortened=r.argv_shortened, started_at=r.started_at, ended_at=r.ended_at,
        exit_code=r.exit_code, signal=r.signal, enforcement=r.enforcement, uid=r.uid,
        gid=r.gid, cwd=r.cwd,
        detached=r.detached, tty=r.tty, attached=session.attached,
        reason=r.reason,
        policy_digest=r.policy_digest,
        log_path=str(session.log_path) if r.tty else None,
        output_bytes=session.output.total if session.output is not None else 0,
        usage=session.usage() if live_usage else r.usage, limits=r.limits, parent=r.parent,
        intercepts=r.intercepts, secret_env=r.secret_env, weakened=r.weakened,
        secrets_bound=r.secrets_bound,
    )


def exited(record: SessionRecord) -> p.Exited:
    return p.Exited(session=record.id, exit_code=record.exit_code, signal=record.signal,
                    reason=record.reason or "exited")


async def exited_after(session: Session) -> p.Exited:
    """Wait until the session has ended (its record final), then say how."""
    await session.wait_exited()
    return exited(session.record)


def lifecycle(event: LifecycleEvent) -> p.SessionEvent:
    return p.SessionEvent(kind=event.kind, session=session_info(event.record))
